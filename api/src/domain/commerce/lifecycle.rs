//! The lifecycle worker: renews auto-renewing subscriptions at term end (same price
//! snapshot), expires the rest and stale approval requests, and moves billing periods on.
//! Several instances may run it at once: each claims its rows (see `schema::claim`).

use billing::periods::{self, Interval};
use chrono::NaiveDateTime;
use diesel::prelude::*;
use schema::models::{Listing, Subscription};
use schema::schema::{grants, listings, offers, subscriptions};
use schema::DbConnection;

use super::subscriptions::PriceSnapshot;
use crate::domain::audit::{self, Entry};
use crate::domain::catalog::can_see;
use crate::domain::clock::{db_time, Clock};
use crate::domain::db::transaction;
use crate::domain::error::{Error, Result};

/// Rows claimed per transaction: short transactions, so workers share the load.
const CLAIM: i64 = 100;

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    pub renewed: usize,
    pub expired: usize,
    pub requests_expired: usize,
    pub periods_advanced: usize,
    pub reminders: usize,
}

/// What happens to an active subscription at `now`, decided from its dates alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing is due.
    Nothing,
    /// A new billing period within the same term.
    NextPeriod {
        start: NaiveDateTime,
        end: NaiveDateTime,
    },
    /// A new term from the old term's end.
    Renew {
        term_start: NaiveDateTime,
        term_end: NaiveDateTime,
        period_end: NaiveDateTime,
    },
    /// The term ended without renewal: `cancelled` if the subscriber cancelled, else `expired`.
    End {
        status: &'static str,
        at: NaiveDateTime,
    },
}

/// The next step for an active subscription (pure: dates in, decision out). `renewable`:
/// its offer is active and its listing not archived (both promise only that existing
/// subscriptions run their course).
pub fn next_step(
    s: &Subscription,
    snapshot: &PriceSnapshot,
    renewable: bool,
    now: NaiveDateTime,
) -> Step {
    let (Some(term_start), Some(term_end)) = (s.term_start, s.term_end) else {
        return Step::Nothing;
    };
    // Cancelled during a trial: it ends with the trial, before its term would.
    if let Some(cancel_at) = s.cancel_at.filter(|&at| at < term_end && at <= now) {
        return Step::End {
            status: "cancelled",
            at: cancel_at,
        };
    }
    let anchor = s.billing_anchor.unwrap_or(term_start);
    let interval = Interval::parse(&snapshot.billing_interval).unwrap_or(Interval::OneTime);
    let term_months = snapshot.term_months.max(1) as u32;
    if now >= term_end {
        if s.auto_renew && renewable && s.cancel_at.is_none() {
            let (start, end) = periods::next_term(anchor, term_months, term_end);
            let (_, period_end) = periods::period_containing(anchor, interval, term_months, start)
                .unwrap_or((start, end));
            return Step::Renew {
                term_start: start,
                term_end: end,
                period_end,
            };
        }
        let status = if s.cancel_at.is_some() {
            "cancelled"
        } else {
            "expired"
        };
        return Step::End {
            status,
            at: term_end,
        };
    }
    match (
        s.current_period_end,
        periods::period_containing(anchor, interval, term_months, now),
    ) {
        (Some(current_end), Some((start, end))) if current_end <= now => {
            Step::NextPeriod { start, end }
        }
        _ => Step::Nothing,
    }
}

/// One pass over everything due now; returns what it did.
pub fn run_once(conn: &mut DbConnection, clock: &dyn Clock) -> Result<Report> {
    let mut report = Report::default();
    loop {
        let (pass, claimed) = transaction(conn, |conn| process_batch(conn, clock))?;
        report.renewed += pass.renewed;
        report.expired += pass.expired;
        report.requests_expired += pass.requests_expired;
        report.periods_advanced += pass.periods_advanced;
        if claimed < CLAIM as usize {
            report.reminders = transaction(conn, |conn| remind_term_ending(conn, clock))?;
            return Ok(report);
        }
    }
}

/// Days before a term ends that subscribers hear about it.
const REMINDER_DAYS: i64 = 7;

/// Whether a subscription may renew at all: its offer is active and its listing still
/// shown to the subscriber (published, and a private one still naming it). Archiving either,
/// or no longer sharing a private listing, lets existing subscriptions run their course, no
/// further.
pub(crate) fn renewable(conn: &mut DbConnection, s: &Subscription) -> Result<bool> {
    let (offer_state, listing) = offers::table
        .inner_join(listings::table)
        .filter(offers::id.eq(&s.offer_id))
        .select((offers::state, Listing::as_select()))
        .first::<(String, Listing)>(conn)?;
    Ok(offer_state == "active" && can_see(conn, Some(&s.organization_id), &listing)?)
}

/// Tells subscribers whose term ends within 7 days, once per term (the outbox dedupes too,
/// by an event id made of the subscription and its term end).
fn remind_term_ending(conn: &mut DbConnection, clock: &dyn Clock) -> Result<usize> {
    let now = db_time(clock.now());
    let due: Vec<Subscription> = subscriptions::table
        .filter(subscriptions::status.eq("active"))
        .filter(subscriptions::term_end.gt(now))
        .filter(subscriptions::term_end.le(now + chrono::Duration::days(REMINDER_DAYS)))
        .filter(
            subscriptions::term_end_reminded_at
                .is_null()
                .or(subscriptions::term_end_reminded_at
                    .nullable()
                    .lt(subscriptions::term_start)),
        )
        .select(Subscription::as_select())
        .limit(CLAIM)
        .load(conn)?;
    let mut sent = 0;
    for s in &due {
        let renews = s.auto_renew && s.cancel_at.is_none() && renewable(conn, s)?;
        if crate::domain::outbox::notify_term_ending(conn, clock, s, renews)? {
            sent += 1;
        }
        diesel::update(subscriptions::table.find(&s.id))
            .set(subscriptions::term_end_reminded_at.eq(now))
            .execute(conn)?;
    }
    Ok(sent)
}

fn process_batch(conn: &mut DbConnection, clock: &dyn Clock) -> Result<(Report, usize)> {
    let now = db_time(clock.now());
    let mut report = Report::default();
    let pending = schema::claim::due_subscriptions(conn, "pending_approval", now, CLAIM)?;
    for id in &pending {
        let expired = diesel::update(
            subscriptions::table
                .find(id)
                .filter(subscriptions::status.eq("pending_approval"))
                .filter(subscriptions::request_expires_at.le(now)),
        )
        .set((
            subscriptions::status.eq("expired"),
            subscriptions::ended_at.eq(now),
            subscriptions::updated_at.eq(now),
        ))
        .execute(conn)?;
        if expired == 1 {
            report.requests_expired += 1;
            audit_change(conn, clock, id, "subscription.request_expired")?;
        }
    }
    let active = schema::claim::due_subscriptions(conn, "active", now, CLAIM)?;
    for id in &active {
        advance(conn, clock, id, now, &mut report)?;
    }
    Ok((report, pending.len().max(active.len())))
}

/// Applies every step due for one active subscription (a long-idle one may be several
/// periods or terms behind).
fn advance(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    id: &str,
    now: NaiveDateTime,
    report: &mut Report,
) -> Result<()> {
    for _ in 0..1_000 {
        let s: Subscription = subscriptions::table
            .find(id)
            .select(Subscription::as_select())
            .first(conn)?;
        if s.status != "active" {
            return Ok(());
        }
        let snapshot = PriceSnapshot::parse(s.prices.as_deref())
            .ok_or(Error::internal("active subscription without prices"))?;
        // Only the term's end asks whether it may renew (a listing read and an access
        // count): the steps before it do not depend on that.
        let renewable = s.term_end.is_some_and(|end| now >= end) && renewable(conn, &s)?;
        match next_step(&s, &snapshot, renewable, now) {
            Step::Nothing => return Ok(()),
            Step::NextPeriod { start, end } => {
                diesel::update(subscriptions::table.find(id))
                    .set((
                        subscriptions::current_period_start.eq(start),
                        subscriptions::current_period_end.eq(end),
                        subscriptions::updated_at.eq(now),
                    ))
                    .execute(conn)?;
                report.periods_advanced += 1;
            }
            Step::Renew {
                term_start,
                term_end,
                period_end,
            } => {
                diesel::update(subscriptions::table.find(id))
                    .set((
                        subscriptions::term_start.eq(term_start),
                        subscriptions::term_end.eq(term_end),
                        subscriptions::current_period_start.eq(term_start),
                        subscriptions::current_period_end.eq(period_end),
                        subscriptions::updated_at.eq(now),
                    ))
                    .execute(conn)?;
                diesel::update(
                    grants::table
                        .filter(grants::subscription_id.eq(id))
                        .filter(grants::revoked_at.is_null()),
                )
                .set(grants::valid_until.eq(term_end))
                .execute(conn)?;
                report.renewed += 1;
                audit_change(conn, clock, id, "subscription.renewed")?;
            }
            Step::End { status, at } => {
                diesel::update(subscriptions::table.find(id))
                    .set((
                        subscriptions::status.eq(status),
                        subscriptions::auto_renew.eq(false),
                        subscriptions::ended_at.eq(at),
                        subscriptions::updated_at.eq(now),
                    ))
                    .execute(conn)?;
                report.expired += 1;
                audit_change(
                    conn,
                    clock,
                    id,
                    if status == "expired" {
                        "subscription.expired"
                    } else {
                        "subscription.ended"
                    },
                )?;
                return Ok(());
            }
        }
    }
    Err(Error::internal(format!(
        "subscription {id} is over 1000 steps behind"
    )))
}

fn audit_change(conn: &mut DbConnection, clock: &dyn Clock, id: &str, action: &str) -> Result<()> {
    let org: String = subscriptions::table
        .find(id)
        .select(subscriptions::organization_id)
        .first(conn)?;
    audit::record(conn, clock, Entry::new(&org, "lifecycle", action, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap()
    }

    fn active(term_start: &str, term_end: &str, period_end: &str) -> Subscription {
        Subscription {
            id: "sub_1".into(),
            organization_id: "org_b".into(),
            provider_organization_id: "org_p".into(),
            listing_id: "lst_1".into(),
            offer_id: "ofr_1".into(),
            status: "active".into(),
            message: String::new(),
            decision_reason: None,
            prices: None,
            trial_end: None,
            term_start: Some(t(term_start)),
            term_end: Some(t(term_end)),
            current_period_start: Some(t(term_start)),
            current_period_end: Some(t(period_end)),
            auto_renew: true,
            cancel_at: None,
            request_expires_at: None,
            created_at: t(term_start),
            updated_at: t(term_start),
            ended_at: None,
            billing_anchor: Some(t(term_start)),
            term_end_reminded_at: None,
        }
    }

    fn monthly(term_months: i32) -> PriceSnapshot {
        PriceSnapshot {
            currency: "USD".into(),
            billing_interval: "monthly".into(),
            recurring_amount: 100,
            term_months,
            trial_days: 0,
            usage_prices: serde_json::json!([]),
            free_metrics: vec![],
        }
    }

    #[test]
    fn periods_step_then_terms_renew_or_end() {
        let s = active("2026-01-31 00:00", "2026-03-31 00:00", "2026-02-28 00:00");
        assert_eq!(
            next_step(&s, &monthly(2), true, t("2026-02-01 00:00")),
            Step::Nothing
        );
        assert_eq!(
            next_step(&s, &monthly(2), true, t("2026-03-01 00:00")),
            Step::NextPeriod {
                start: t("2026-02-28 00:00"),
                end: t("2026-03-31 00:00")
            }
        );
        assert_eq!(
            next_step(&s, &monthly(2), true, t("2026-03-31 00:00")),
            Step::Renew {
                term_start: t("2026-03-31 00:00"),
                term_end: t("2026-05-31 00:00"),
                period_end: t("2026-04-30 00:00")
            }
        );
        assert_eq!(
            next_step(&s, &monthly(2), false, t("2026-04-01 00:00")),
            Step::End {
                status: "expired",
                at: t("2026-03-31 00:00")
            }
        );
        let cancelled = Subscription {
            auto_renew: false,
            cancel_at: Some(t("2026-03-31 00:00")),
            ..s
        };
        assert_eq!(
            next_step(&cancelled, &monthly(2), true, t("2026-04-01 00:00")),
            Step::End {
                status: "cancelled",
                at: t("2026-03-31 00:00")
            }
        );
    }
}
