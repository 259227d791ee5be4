//! Usage: events providers report for their subscriptions, counted once per id forever, and
//! the daily totals subscribers and providers read.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use schema::models::{Subscription, UsageEvent};
use schema::schema::{grants, subscriptions, usage_events};
use schema::DbConnection;
use serde::{Deserialize, Serialize};

use super::subscriptions::{visible, PriceSnapshot};
use crate::domain::auth::{Caller, Capability};
use crate::domain::clock::{db_time, Clock};
use crate::domain::db::transaction;
use crate::domain::error::{Error, Problems, Result};

pub const MAX_BATCH: usize = 1000;
pub const MAX_QUANTITY: i64 = 1_000_000_000_000;
const MAX_AGE_DAYS: i64 = 35;
const MAX_AHEAD_MINUTES: i64 = 5;

#[derive(Debug, Deserialize)]
pub struct UsageBatch {
    pub events: Vec<EventInput>,
}

#[derive(Debug, Deserialize)]
pub struct EventInput {
    pub id: String,
    pub subscription_id: String,
    pub metric: String,
    pub quantity: i64,
    pub timestamp: DateTime<Utc>,
}

#[derive(Debug, Serialize)]
pub struct BatchResult {
    pub accepted: usize,
    pub duplicates: usize,
}

fn same_content(a: &UsageEvent, b: &UsageEvent) -> bool {
    a.subscription_id == b.subscription_id
        && a.metric == b.metric
        && a.quantity == b.quantity
        && a.occurred_at == b.occurred_at
}

/// What a provider may report for one of its subscriptions.
struct Reportable {
    metrics: Vec<String>,
    /// From the grant's start to its end (the term, or an earlier end); none before activation.
    window: Option<(chrono::NaiveDateTime, chrono::NaiveDateTime)>,
}

fn reportable(
    conn: &mut DbConnection,
    provider: &str,
    subscription_id: &str,
) -> Result<Option<Reportable>> {
    let found: Option<Subscription> = subscriptions::table
        .find(subscription_id)
        .filter(subscriptions::provider_organization_id.eq(provider))
        .select(Subscription::as_select())
        .first(conn)
        .optional()?;
    let Some(s) = found else { return Ok(None) };
    let window = grants::table
        .filter(grants::subscription_id.eq(&s.id))
        .select((grants::valid_from, grants::valid_until))
        .first(conn)
        .optional()?;
    let metrics = PriceSnapshot::parse(s.prices.as_deref())
        .map(|p| p.reportable_metrics())
        .unwrap_or_default();
    Ok(Some(Reportable { metrics, window }))
}

/// Checks every event against its subscription; any broken one rejects the whole batch.
fn check_batch(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    caller: &Caller,
    batch: &UsageBatch,
) -> Result<Vec<UsageEvent>> {
    if batch.events.is_empty() || batch.events.len() > MAX_BATCH {
        return Err(Error::validation(
            "events",
            format!("must hold 1 to {MAX_BATCH} events"),
        ));
    }
    let mut problems = Problems::new();
    let now = clock.now();
    // Each subscription is looked up once per batch, with its window and reportable metrics.
    let mut known: HashMap<String, Option<Reportable>> = HashMap::new();
    let mut events = Vec::with_capacity(batch.events.len());
    for (i, e) in batch.events.iter().enumerate() {
        let at = |field: &str| format!("events[{i}].{field}");
        if e.id.is_empty() || e.id.len() > 255 || !e.id.bytes().all(|b| b.is_ascii_graphic()) {
            problems.push(at("id"), "must be 1 to 255 visible ASCII characters");
        }
        if !(0..=MAX_QUANTITY).contains(&e.quantity) {
            problems.push(
                at("quantity"),
                format!("must be an integer from 0 to {MAX_QUANTITY}"),
            );
        }
        let ts = crate::domain::clock::truncate(e.timestamp);
        if ts > now + Duration::minutes(MAX_AHEAD_MINUTES) {
            problems.push(
                at("timestamp"),
                format!("is more than {MAX_AHEAD_MINUTES} minutes in the future"),
            );
        } else if ts < now - Duration::days(MAX_AGE_DAYS) {
            problems.push(
                at("timestamp"),
                format!("is more than {MAX_AGE_DAYS} days old"),
            );
        }
        if !known.contains_key(&e.subscription_id) {
            let found = reportable(conn, &caller.organization_id, &e.subscription_id)?;
            known.insert(e.subscription_id.clone(), found);
        }
        let Some(sub) = known[&e.subscription_id].as_ref() else {
            problems.push(
                at("subscription_id"),
                "is not a subscription to one of your listings",
            );
            continue;
        };
        if !sub.metrics.contains(&e.metric) {
            problems.push(
                at("metric"),
                "is neither priced nor listed as free by this subscription's offer",
            );
        }
        match sub.window {
            Some((from, until)) if db_time(ts) >= from && db_time(ts) < until => {}
            _ => problems.push(
                at("timestamp"),
                "is outside the subscription's active window",
            ),
        }
        events.push(UsageEvent {
            organization_id: caller.organization_id.clone(),
            id: e.id.clone(),
            subscription_id: e.subscription_id.clone(),
            metric: e.metric.clone(),
            quantity: e.quantity,
            occurred_at: db_time(ts),
            day: ts.date_naive().to_string(), // YYYY-MM-DD
            received_at: db_time(now),
        });
    }
    problems.finish()?;
    Ok(events)
}

/// Records a batch, all or nothing, durable before it returns. An id seen before with the
/// same content is a duplicate; with other content the batch is refused (409) naming it.
pub fn record(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    caller: &Caller,
    batch: UsageBatch,
) -> Result<BatchResult> {
    caller.require(Capability::Write)?;
    let events = check_batch(conn, clock, caller, &batch)?;
    // An id repeated inside the batch counts once, like a resend; with other content it is
    // a conflict (reported below with any against stored events, whichever comes first).
    let mut first_of: HashMap<&str, (usize, &UsageEvent)> = HashMap::new();
    let mut unique: Vec<UsageEvent> = Vec::with_capacity(events.len());
    let mut repeated_conflict: Option<usize> = None;
    for (i, e) in events.iter().enumerate() {
        match first_of.get(e.id.as_str()) {
            Some((_, earlier)) if same_content(earlier, e) => {}
            Some(_) => {
                repeated_conflict.get_or_insert(i);
            }
            None => {
                first_of.insert(e.id.as_str(), (i, e));
                unique.push(e.clone());
            }
        }
    }
    // Concurrent batches with shared ids insert them in the same order (no deadlock).
    unique.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    transaction(conn, |conn| {
        // Insert first and judge only what the database skipped: those ids were stored
        // before (or by a batch that committed a moment ago).
        let inserted: HashSet<String> = schema::usage::insert_new(conn, &unique)?
            .into_iter()
            .collect();
        let skipped: Vec<&str> = unique
            .iter()
            .map(|e| e.id.as_str())
            .filter(|id| !inserted.contains(*id))
            .collect();
        let mut stored: HashMap<String, UsageEvent> = HashMap::new();
        for chunk in skipped.chunks(500) {
            stored.extend(
                usage_events::table
                    .filter(usage_events::organization_id.eq(&caller.organization_id))
                    .filter(usage_events::id.eq_any(chunk))
                    .select(UsageEvent::as_select())
                    .load(conn)?
                    .into_iter()
                    .map(|e| (e.id.clone(), e)),
            );
        }
        let mut first_conflict = repeated_conflict;
        for id in &skipped {
            let Some(earlier) = stored.get(*id) else {
                // Skipped, yet not visible: a concurrent batch's row. Judge it afresh.
                return Err(Error::Unavailable(
                    "concurrent usage batch; retrying".into(),
                ));
            };
            let (i, event) = first_of[id];
            if !same_content(earlier, event) && first_conflict.is_none_or(|c| i < c) {
                first_conflict = Some(i);
            }
        }
        if let Some(i) = first_conflict {
            // The transaction rolls back: nothing of the batch is kept.
            return Err(conflict(i, &events[i].id));
        }
        Ok(BatchResult {
            accepted: inserted.len(),
            duplicates: events.len() - inserted.len(),
        })
    })
}

fn conflict(index: usize, id: &str) -> Error {
    Error::Conflict {
        code: "usage_event_conflict",
        detail: format!("events[{index}]: id `{id}` was already recorded with other content"),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct UsageWindow {
    pub from: Option<String>,
    pub to: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct UsageRow {
    pub metric: String,
    pub day: String,
    pub quantity: i64,
}

#[derive(Debug, Serialize)]
pub struct UsageReport {
    pub subscription_id: String,
    pub from: String,
    pub to: String,
    pub data: Vec<UsageRow>,
}

/// Totals by metric and UTC day, for the subscription's subscriber and provider only.
pub fn report(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    caller: &Caller,
    id: &str,
    window: &UsageWindow,
) -> Result<UsageReport> {
    caller.require(Capability::Read)?;
    let s = visible(conn, caller, id)?;
    let today = clock.now().date_naive();
    let month_start = today.with_day0(0).unwrap_or(today);
    let parse = |field: &str, raw: Option<&str>, default: NaiveDate| -> Result<NaiveDate> {
        match raw {
            None | Some("") => Ok(default),
            Some(r) => NaiveDate::parse_from_str(r, "%Y-%m-%d")
                .map_err(|_| Error::validation(field, "must be a date, YYYY-MM-DD")),
        }
    };
    use chrono::Datelike;
    let month_end = month_start
        .checked_add_months(chrono::Months::new(1))
        .map(|d| d.pred_opt().unwrap_or(d))
        .unwrap_or(today);
    let from = parse("from", window.from.as_deref(), month_start)?;
    let to = parse("to", window.to.as_deref(), month_end)?;
    if to < from {
        return Err(Error::validation("to", "must not be before from"));
    }
    if (to - from).num_days() >= 366 {
        return Err(Error::validation("to", "the window spans at most 366 days"));
    }
    let rows: Vec<(String, String, i64)> = usage_events::table
        .filter(usage_events::subscription_id.eq(&s.id))
        .filter(usage_events::day.ge(from.to_string()))
        .filter(usage_events::day.le(to.to_string()))
        .group_by((usage_events::metric, usage_events::day))
        .select((
            usage_events::metric,
            usage_events::day,
            sql::<BigInt>("CAST(SUM(quantity) AS BIGINT)"),
        ))
        .order((usage_events::metric.asc(), usage_events::day.asc()))
        .load(conn)?;
    Ok(UsageReport {
        subscription_id: s.id,
        from: from.to_string(),
        to: to.to_string(),
        data: rows
            .into_iter()
            .map(|(metric, day, quantity)| UsageRow {
                metric,
                day,
                quantity,
            })
            .collect(),
    })
}

/// One metric's usage in one calendar month (UTC).
#[derive(Debug, Clone, Serialize)]
pub struct MonthlyUsage {
    pub month: String,
    pub metric: String,
    pub quantity: i64,
}

/// A provider's usage by metric and calendar month, over all its subscriptions, for the
/// months `first..=last` (the provider's dashboard).
pub fn provider_monthly(
    conn: &mut DbConnection,
    caller: &Caller,
    first: billing::charges::Month,
    last: billing::charges::Month,
) -> Result<Vec<MonthlyUsage>> {
    caller.require(Capability::Read)?;
    let from = first.start().date().to_string();
    let until = last.end().date().to_string();
    let rows: Vec<(String, String, i64)> = usage_events::table
        .inner_join(subscriptions::table)
        .filter(subscriptions::provider_organization_id.eq(&caller.organization_id))
        .filter(usage_events::day.ge(from))
        .filter(usage_events::day.lt(until))
        .group_by((usage_events::metric, usage_events::day))
        .select((
            usage_events::metric,
            usage_events::day,
            sql::<BigInt>("CAST(SUM(usage_events.quantity) AS BIGINT)"),
        ))
        .load(conn)?;
    let mut by_month: std::collections::BTreeMap<(String, String), i64> = Default::default();
    for (metric, day, quantity) in rows {
        let month = day.get(..7).unwrap_or(&day).to_string();
        *by_month.entry((month, metric)).or_default() += quantity;
    }
    Ok(by_month
        .into_iter()
        .map(|((month, metric), quantity)| MonthlyUsage {
            month,
            metric,
            quantity,
        })
        .collect())
}
