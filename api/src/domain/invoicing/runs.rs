//! Billing runs: create or rebuild the drafts of a period, one per customer and currency.
//! Finalized invoices are never touched; what belongs to a finalized period lands on the
//! customer's next draft as a late charge. Safe to run twice, or from two instances at once.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet};

use billing::charges::{self, Charge, Month, Terms};
use billing::periods::Interval;
use billing::pricing::UsagePrice;
use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use schema::models::{BillingRun, Invoice, InvoiceLine, Subscription};
use schema::schema::{
    billing_runs, credit_note_lines, credit_notes, invoice_lines, invoices, offers, organizations,
    subscriptions, usage_events, usage_monthly,
};
use schema::DbConnection;
use serde::{Deserialize, Serialize};

use super::{invoices as invoicing, BillingDefaults};
use crate::domain::audit::{self, Entry};
use crate::domain::auth::{Caller, Capability};
use crate::domain::clock::{db_time, utc, Clock};
use crate::domain::commerce::subscriptions::PriceSnapshot;
use crate::domain::db::{transaction, transaction_once};
use crate::domain::error::{Error, Result};
use crate::domain::ids::new_id;

/// How many months back a run looks for late charges of finalized periods.
const LATE_LOOKBACK_MONTHS: usize = 12;

/// Customers billed in one transaction: one commit for many drafts. On SQLite other
/// writers wait for a chunk, so it is kept to a fraction of a second.
const CUSTOMERS_PER_TRANSACTION: usize = 100;

#[derive(Debug, Deserialize)]
pub struct RunRequest {
    pub period: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Failure {
    pub customer_id: String,
    pub error: String,
}

#[derive(Debug, Serialize)]
pub struct RunView {
    pub id: String,
    pub period: String,
    pub invoices_created: i32,
    pub invoices_updated: i32,
    pub invoices_removed: i32,
    pub failures: Vec<Failure>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

fn run_view(r: BillingRun) -> RunView {
    RunView {
        failures: serde_json::from_str(&r.failures).unwrap_or_default(),
        id: r.id,
        period: r.period,
        invoices_created: r.invoices_created,
        invoices_updated: r.invoices_updated,
        invoices_removed: r.invoices_removed,
        created_at: utc(r.created_at),
        finished_at: r.finished_at.map(utc),
    }
}

#[derive(Debug, Default)]
struct Tally {
    created: i32,
    updated: i32,
    removed: i32,
    /// Usage left off a draft because it cannot be billed (reported with the failures).
    unbillable: Vec<Failure>,
}

/// Starts a run for `period`; `progress` hears (customers done, customers in all).
pub fn run(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    defaults: BillingDefaults,
    caller: &Caller,
    request: RunRequest,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<RunView> {
    caller.require(Capability::PlatformBilling)?;
    let month = Month::parse(request.period.trim()).map_err(|m| Error::validation("period", m))?;
    bill_period(conn, clock, defaults, &caller.principal(), month, progress)
}

/// The run itself, for the API and the command line.
pub fn bill_period(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    defaults: BillingDefaults,
    started_by: &str,
    month: Month,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<RunView> {
    let started = db_time(clock.now());
    // Every subscription that was active before the month ended may owe something.
    let subs: Vec<Subscription> = subscriptions::table
        .filter(subscriptions::billing_anchor.lt(month.end()))
        .select(Subscription::as_select())
        .load(conn)?;
    let usage = usage_totals(conn, month, &subs.iter().collect::<Vec<_>>())?;
    let mut by_customer: BTreeMap<String, Vec<Subscription>> = BTreeMap::new();
    for s in subs {
        by_customer
            .entry(s.organization_id.clone())
            .or_default()
            .push(s);
    }
    let inputs = RunInputs {
        month,
        usage,
        offer_names: offer_names(conn)?,
        invoices: live_invoices(conn, month)?,
        rates: organization_rates(conn)?,
        defaults,
        started_by: started_by.to_string(),
        billed_later: billed_later(conn, month)?,
    };
    let (mut tally, mut failures) = (Tally::default(), Vec::new());
    let customers: Vec<(&String, &Vec<Subscription>)> = by_customer.iter().collect();
    let (total, mut done) = (customers.len(), 0);
    for chunk in customers.chunks(CUSTOMERS_PER_TRANSACTION) {
        // Customers are billed many to a transaction, trusting what the run read at its
        // start; if that fails (one customer's rating, or another run or a finalization
        // got there first), each of them is billed on its own.
        let together = transaction_once(conn, |conn| {
            // Drafts are derived data: the run's own record, committed normally at the end,
            // flushes them to disk with it; a crash before that loses only drafts that the
            // next run rebuilds; a credit note for late usage makes its commit durable again
            // (`credit_overbilled`). (And their foreign-key checks use indexes: see there.)
            schema::bulk_derived_writes(conn)?;
            let mut chunk_tally = Tally::default();
            let mut new_drafts = NewDrafts::default();
            for (customer, subs) in chunk {
                let t =
                    build_customer(conn, clock, customer, subs, &inputs, false, &mut new_drafts)?;
                tally_merge(&mut chunk_tally, t);
            }
            new_drafts.insert(conn)?;
            Ok(chunk_tally)
        });
        match together {
            Ok(t) => tally_merge(&mut tally, t),
            Err(e) => {
                tracing::debug!(error = %e, "billing customers together failed; one by one");
                for (customer, subs) in chunk {
                    match bill_customer(conn, clock, customer, subs, &inputs) {
                        Ok(t) => tally_merge(&mut tally, t),
                        Err(e) => {
                            tracing::warn!(customer = %customer, error = %e, "billing a customer failed");
                            failures.push(Failure {
                                customer_id: customer.to_string(),
                                error: e.to_string(),
                            });
                        }
                    }
                }
            }
        }
        done += chunk.len();
        progress(done, total);
    }
    failures.append(&mut tally.unbillable);
    let row = BillingRun {
        id: new_id("brun"),
        period: month.to_string(),
        started_by: started_by.to_string(),
        invoices_created: tally.created,
        invoices_updated: tally.updated,
        invoices_removed: tally.removed,
        failures: serde_json::to_string(&failures).map_err(Error::internal)?,
        created_at: started,
        finished_at: Some(db_time(clock.now())),
    };
    diesel::insert_into(billing_runs::table)
        .values(&row)
        .execute(conn)?;
    audit::record(
        conn,
        clock,
        Entry::new("platform", started_by, "billing_run.finished", &row.id),
    )?;
    Ok(run_view(row))
}

/// Bills one customer in its own transaction; a retry (another run or a finalization got
/// there first) reads the customer's invoices afresh.
fn bill_customer(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    customer: &str,
    subs: &[Subscription],
    inputs: &RunInputs,
) -> Result<Tally> {
    let attempts = Cell::new(0u32);
    transaction(conn, |conn| {
        let fresh = attempts.replace(attempts.get() + 1) > 0;
        schema::bulk_derived_writes(conn)?;
        let mut new_drafts = NewDrafts::default();
        let tally = build_customer(conn, clock, customer, subs, inputs, fresh, &mut new_drafts)?;
        new_drafts.insert(conn)?;
        Ok(tally)
    })
}

pub fn list_runs(
    conn: &mut DbConnection,
    caller: &Caller,
    period: Option<&str>,
) -> Result<Vec<RunView>> {
    caller.require(Capability::PlatformBilling)?;
    let mut q = billing_runs::table
        .order(billing_runs::created_at.desc())
        .limit(200)
        .into_boxed();
    if let Some(p) = period {
        q = q.filter(billing_runs::period.eq(p.to_string()));
    }
    Ok(q.select(BillingRun::as_select())
        .load(conn)?
        .into_iter()
        .map(run_view)
        .collect())
}

/// Usage per (subscription, metric) of `subs` in the month, counting only events from each
/// subscription's billing anchor on (usage during a trial is free). A subscription billed
/// since before the month counts all of its usage in the month: its monthly sums, kept as
/// events are stored (`usage_monthly`), so this read does not grow with the events. Those
/// whose billing starts inside the month sum their events from the anchor on.
fn usage_totals(
    conn: &mut DbConnection,
    month: Month,
    subs: &[&Subscription],
) -> Result<HashMap<(String, String), i64>> {
    let mut whole_month: HashSet<&str> = HashSet::new();
    let mut from_anchor: Vec<&str> = Vec::new();
    for s in subs {
        match s.billing_anchor {
            Some(anchor) if anchor <= month.start() => {
                whole_month.insert(s.id.as_str());
            }
            Some(anchor) if anchor < month.end() => from_anchor.push(s.id.as_str()),
            _ => {} // not billable in this month
        }
    }
    macro_rules! sums_of_month {
        ($q:expr) => {
            $q.filter(usage_monthly::month.eq(month.to_string()))
                .select((
                    usage_monthly::subscription_id,
                    usage_monthly::metric,
                    usage_monthly::quantity,
                ))
        };
    }
    // A run over many subscriptions reads the whole month's sums once; a few (late charges
    // of one customer) are picked out by id. 500 ids a statement stay below bind-parameter
    // limits.
    let mut rows: Vec<(String, String, i64)> = Vec::new();
    if whole_month.len() > 500 {
        rows = sums_of_month!(usage_monthly::table).load(conn)?;
        // The whole month holds every subscription's sums: keep the ones asked for.
        rows.retain(|(subscription, _, _)| whole_month.contains(subscription.as_str()));
    } else {
        let ids: Vec<&str> = whole_month.iter().copied().collect();
        for chunk in ids.chunks(500) {
            rows.extend(
                sums_of_month!(
                    usage_monthly::table.filter(usage_monthly::subscription_id.eq_any(chunk))
                )
                .load::<(String, String, i64)>(conn)?,
            );
        }
    }
    let day = |t: NaiveDateTime| t.format("%Y-%m-%d").to_string();
    for chunk in from_anchor.chunks(500) {
        // `occurred_at` is the rule; `day`, the third column of the usage index after
        // (subscription, metric), bounds the index range read.
        let anchored: Vec<(String, String, i64)> = usage_events::table
            .inner_join(subscriptions::table)
            .filter(usage_events::subscription_id.eq_any(chunk))
            .filter(usage_events::day.ge(day(month.start())))
            .filter(usage_events::day.lt(day(month.end())))
            .filter(usage_events::occurred_at.ge(month.start()))
            .filter(usage_events::occurred_at.lt(month.end()))
            .filter(
                usage_events::occurred_at
                    .nullable()
                    .ge(subscriptions::billing_anchor),
            )
            .group_by((usage_events::subscription_id, usage_events::metric))
            .select((
                usage_events::subscription_id,
                usage_events::metric,
                sql::<BigInt>("CAST(SUM(usage_events.quantity) AS BIGINT)"),
            ))
            .load(conn)?;
        rows.extend(anchored);
    }
    Ok(rows
        .into_iter()
        .map(|(subscription, metric, quantity)| ((subscription, metric), quantity))
        .collect())
}

fn offer_names(conn: &mut DbConnection) -> Result<HashMap<String, String>> {
    Ok(offers::table
        .select((offers::id, offers::name))
        .load::<(String, String)>(conn)?
        .into_iter()
        .collect())
}

/// An organization's own (tax rate, marketplace fee) in basis points, where set.
type Rates = (Option<i32>, Option<i32>);

/// What a run reads once, before it bills its customers one by one.
struct RunInputs {
    month: Month,
    /// Usage per (subscription, metric) in the month.
    usage: HashMap<(String, String), i64>,
    offer_names: HashMap<String, String>,
    /// Live invoices of the month and of the look-back months, by (customer, period,
    /// currency), as they were when the run started.
    invoices: HashMap<(String, String, String), Invoice>,
    /// Each organization's own tax rate and marketplace fee, where set.
    rates: HashMap<String, Rates>,
    /// The rates of organizations without their own.
    defaults: BillingDefaults,
    /// Who started the run, for the credit notes it issues.
    started_by: String,
    /// Subscriptions with late lines on live invoices of the months after this one: the
    /// month's invoice was finalized, then voided, so those lines bill part of its charges.
    billed_later: HashSet<String>,
}

impl RunInputs {
    /// The tax rate on `customer`'s invoices, basis points.
    fn tax_rate_bps(&self, customer: &str) -> i32 {
        self.rates
            .get(customer)
            .and_then(|(tax, _)| *tax)
            .unwrap_or(self.defaults.tax_rate_bps)
    }

    /// The marketplace's fee on `provider`'s revenue, basis points.
    fn fee_bps(&self, provider: &str) -> i32 {
        self.rates
            .get(provider)
            .and_then(|(_, fee)| *fee)
            .unwrap_or(self.defaults.fee_bps)
    }

    /// The customer's live invoice for a period and currency: from the run's start, or
    /// (`fresh`) from the database now.
    fn invoice(
        &self,
        conn: &mut DbConnection,
        fresh: bool,
        customer: &str,
        period: Month,
        currency: &str,
    ) -> Result<Option<Invoice>> {
        if fresh {
            return live_invoice(conn, customer, &period.to_string(), currency);
        }
        Ok(self
            .invoices
            .get(&(
                customer.to_string(),
                period.to_string(),
                currency.to_string(),
            ))
            .cloned())
    }
}

/// The `LATE_LOOKBACK_MONTHS` periods from `month` on, one `step` at a time (`month`
/// itself not included).
fn lookback(month: Month, step: fn(Month) -> Month) -> Vec<String> {
    std::iter::successors(Some(step(month)), |m| Some(step(*m)))
        .take(LATE_LOOKBACK_MONTHS)
        .map(|m| m.to_string())
        .collect()
}

/// The live invoices of `month` and the months a run looks back to, in one query.
fn live_invoices(
    conn: &mut DbConnection,
    month: Month,
) -> Result<HashMap<(String, String, String), Invoice>> {
    let mut periods = vec![month.to_string()];
    periods.extend(lookback(month, Month::previous));
    let rows: Vec<Invoice> = invoices::table
        .filter(invoices::period.eq_any(&periods))
        .filter(invoices::status.ne("void"))
        .select(Invoice::as_select())
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|i| {
            (
                (
                    i.organization_id.clone(),
                    i.period.clone(),
                    i.currency.clone(),
                ),
                i,
            )
        })
        .collect())
}

/// The subscriptions with late lines on live invoices of the months a run of `month` could
/// have put them on (see `RunInputs::billed_later`).
fn billed_later(conn: &mut DbConnection, month: Month) -> Result<HashSet<String>> {
    let periods = lookback(month, Month::next);
    Ok(invoice_lines::table
        .inner_join(invoices::table)
        .filter(invoices::period.eq_any(&periods))
        .filter(invoices::status.ne("void"))
        .filter(invoice_lines::charge_key.like("late:%"))
        .select(invoice_lines::subscription_id)
        .distinct()
        .load::<String>(conn)?
        .into_iter()
        .collect())
}

fn organization_rates(conn: &mut DbConnection) -> Result<HashMap<String, Rates>> {
    Ok(organizations::table
        .select((
            organizations::id,
            organizations::tax_rate_bps,
            organizations::fee_bps,
        ))
        .load::<(String, Option<i32>, Option<i32>)>(conn)?
        .into_iter()
        .map(|(id, tax, fee)| (id, (tax, fee)))
        .collect())
}

/// A subscription's terms and prices, from its snapshot.
struct Billable<'a> {
    sub: &'a Subscription,
    snapshot: PriceSnapshot,
    terms: Terms,
    prices: Vec<UsagePrice>,
}

fn billable<'a>(
    s: &'a Subscription,
    offer_names: &HashMap<String, String>,
) -> Option<Billable<'a>> {
    let snapshot = PriceSnapshot::parse(s.prices.as_deref())?;
    let anchor = s.billing_anchor?;
    let prices: Vec<UsagePrice> = serde_json::from_value(snapshot.usage_prices.clone()).ok()?;
    // Periods starting at or after the end (or the cancellation's end) are not billed, nor
    // those after the current term: a renewal that has not happened (it may never, with
    // auto-renew off or the offer archived) is billed once the term is renewed.
    let cut: Option<NaiveDateTime> = match (s.status.as_str(), s.ended_at, s.cancel_at) {
        ("active", _, cancel_at) => cancel_at.into_iter().chain(s.term_end).min(),
        (_, ended_at, cancel_at) => ended_at.into_iter().chain(cancel_at).min(),
    };
    let terms = Terms {
        anchor,
        interval: Interval::parse(&snapshot.billing_interval)?,
        term_months: snapshot.term_months.max(1) as u32,
        recurring_amount: snapshot.recurring_amount,
        billable_until: cut,
        offer_name: offer_names
            .get(&s.offer_id)
            .cloned()
            .unwrap_or_else(|| "Subscription".into()),
    };
    Some(Billable {
        sub: s,
        snapshot,
        terms,
        prices,
    })
}

/// What a subscription owes for a month.
struct Rated {
    charges: Vec<Charge>,
    /// Usage that cannot be billed (beyond the largest line): its charge key and why. It is
    /// left off the draft and reported, and the rest of the customer's charges are billed.
    unbillable: Vec<(String, String)>,
}

impl Rated {
    /// Whether the month rates (or would rate, but cannot bill) a charge with this key.
    fn covers(&self, key: &str) -> bool {
        self.charges.iter().any(|c| c.key == key) || self.unbillable.iter().any(|(k, _)| k == key)
    }
}

/// Everything `b` owes for `month`: fees of periods starting in it, and rated usage.
fn charges_for(b: &Billable<'_>, month: Month, usage: &HashMap<(String, String), i64>) -> Rated {
    let mut rated = Rated {
        charges: charges::recurring(&b.terms, month),
        unbillable: Vec::new(),
    };
    for price in &b.prices {
        let quantity = usage
            .get(&(b.sub.id.clone(), price.metric.clone()))
            .copied()
            .unwrap_or(0);
        if quantity <= 0 {
            continue;
        }
        match charges::usage(price, month, quantity) {
            Ok(charge) => rated.charges.push(charge),
            Err(e) => rated.unbillable.push((
                charges::usage_key(&price.metric, month),
                format!(
                    "subscription {}: {quantity} units of {} in {month} were not billed: {e}",
                    b.sub.id, price.metric
                ),
            )),
        }
    }
    rated
}

/// Builds the customer's drafts of the month: existing drafts are rewritten at once, new
/// ones are added to `new_drafts`, which the caller inserts before its transaction ends.
fn build_customer(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    customer: &str,
    subs: &[Subscription],
    inputs: &RunInputs,
    fresh: bool,
    new_drafts: &mut NewDrafts,
) -> Result<Tally> {
    let now = db_time(clock.now());
    let month = inputs.month;
    let billables: Vec<Billable<'_>> = subs
        .iter()
        .filter_map(|s| billable(s, &inputs.offer_names))
        .collect();
    let mut by_currency: BTreeMap<String, Vec<&Billable<'_>>> = BTreeMap::new();
    for b in &billables {
        by_currency
            .entry(b.snapshot.currency.clone())
            .or_default()
            .push(b);
    }
    let tax_rate_bps = inputs.tax_rate_bps(customer);
    let mut tally = Tally::default();
    for (currency, group) in by_currency {
        let existing = inputs.invoice(conn, fresh, customer, month, &currency)?;
        if existing.as_ref().is_some_and(|i| i.status != "draft") {
            continue; // final: this period's charges go on a later draft, as late charges
        }
        let draft_id = existing.as_ref().map(|d| d.id.as_str());
        let mut lines: Vec<(String, Charge)> = Vec::new();
        let mut unbillable: Vec<String> = Vec::new();
        for b in &group {
            let rated = charges_for(b, month, &inputs.usage);
            unbillable.extend(rated.unbillable.into_iter().map(|(_, why)| why));
            for c in rated.charges {
                if !inputs.billed_later.contains(&b.sub.id) {
                    lines.push((b.sub.id.clone(), c));
                    continue;
                }
                // Billed again after a void: what later invoices billed for it late stays
                // billed there, and this line bills the rest. A later draft counts too: if
                // its run drops that late line (this month is a draft again), this month's
                // next run bills it, or a later run as a late charge; never twice.
                let billed = billed_lines(conn, &b.sub.id, &c.key, draft_id)?;
                let net: i64 = billed.iter().map(Billed::net).sum();
                if let Some(rest) = charges::unbilled_part(&c, net) {
                    lines.push((b.sub.id.clone(), rest));
                }
            }
        }
        lines.extend(late_charges(
            conn,
            clock,
            inputs,
            fresh,
            customer,
            &currency,
            &group,
            existing.as_ref(),
            &mut unbillable,
        )?);
        tally
            .unbillable
            .extend(unbillable.into_iter().map(|error| Failure {
                customer_id: customer.to_string(),
                error,
            }));
        let draft = Draft {
            customer,
            month,
            currency: &currency,
            tax_rate_bps,
            now,
        };
        tally_merge(
            &mut tally,
            write_draft(conn, inputs, &draft, existing, lines, subs, new_drafts)?,
        );
    }
    Ok(tally)
}

fn tally_merge(into: &mut Tally, t: Tally) {
    into.created += t.created;
    into.updated += t.updated;
    into.removed += t.removed;
    into.unbillable.extend(t.unbillable);
}

/// The customer's invoice for the period and currency that is not void, if any.
pub fn live_invoice(
    conn: &mut DbConnection,
    customer: &str,
    period: &str,
    currency: &str,
) -> Result<Option<Invoice>> {
    Ok(invoices::table
        .filter(invoices::organization_id.eq(customer))
        .filter(invoices::period.eq(period))
        .filter(invoices::currency.eq(currency))
        .filter(invoices::status.ne("void"))
        .select(Invoice::as_select())
        .first(conn)
        .optional()?)
}

/// For each earlier month whose invoice is final: rate that month in full again and charge
/// the difference to what was billed for it (on any live invoice but this draft). Where
/// the month now rates lower (late usage moving a volume price to a cheaper tier), the
/// difference is credited back at once (`credit_overbilled`) instead.
#[allow(clippy::too_many_arguments)]
fn late_charges(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    inputs: &RunInputs,
    fresh: bool,
    customer: &str,
    currency: &str,
    group: &[&Billable<'_>],
    draft: Option<&Invoice>,
    unbillable: &mut Vec<String>,
) -> Result<Vec<(String, Charge)>> {
    let mut out = Vec::new();
    let mut earlier = inputs.month;
    for _ in 0..LATE_LOOKBACK_MONTHS {
        earlier = earlier.previous();
        let Some(invoice) = inputs.invoice(conn, fresh, customer, earlier, currency)? else {
            continue;
        };
        if invoice.status == "draft" {
            continue; // its own run rebuilds it
        }
        let subs: Vec<&Subscription> = group.iter().map(|b| b.sub).collect();
        let usage = usage_totals(conn, earlier, &subs)?;
        for b in group {
            let rated = charges_for(b, earlier, &usage);
            credit_no_longer_owed(conn, clock, inputs, &invoice, b, &rated, draft)?;
            unbillable.extend(rated.unbillable.into_iter().map(|(_, why)| why));
            for charge in rated.charges {
                let billed =
                    billed_lines(conn, &b.sub.id, &charge.key, draft.map(|d| d.id.as_str()))?;
                let net: i64 = billed.iter().map(Billed::net).sum();
                let Some(late) = charges::late(&charge, net) else {
                    continue;
                };
                if late.amount > 0 {
                    out.push((b.sub.id.clone(), late));
                } else {
                    let adjustment = Adjustment {
                        key: format!("{}:{}:{}", b.sub.id, charge.key, charge.quantity),
                        reason: format!("Late usage lowered: {}", charge.description),
                        owed_back: -late.amount,
                        subscription_id: &b.sub.id,
                        charge_key: &charge.key,
                        except: draft.map(|d| d.id.as_str()),
                    };
                    credit_overbilled(conn, clock, &inputs.started_by, &adjustment, billed)?;
                }
            }
        }
    }
    Ok(out)
}

/// Credits what the final `invoice` billed `b` for charges the period no longer rates
/// (`rated`): a period billed in advance that will never start (cancelled in its trial, or
/// the subscription ended before it), so the run takes it back, as a credit note.
fn credit_no_longer_owed(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    inputs: &RunInputs,
    invoice: &Invoice,
    b: &Billable<'_>,
    rated: &Rated,
    draft: Option<&Invoice>,
) -> Result<()> {
    let billed: Vec<(String, String)> = invoice_lines::table
        .filter(invoice_lines::invoice_id.eq(&invoice.id))
        .filter(invoice_lines::subscription_id.eq(&b.sub.id))
        .filter(invoice_lines::charge_key.not_like("late:%"))
        .select((invoice_lines::charge_key, invoice_lines::description))
        .load(conn)?;
    for (key, description) in billed {
        if rated.covers(&key) {
            continue;
        }
        let lines = billed_lines(conn, &b.sub.id, &key, draft.map(|d| d.id.as_str()))?;
        let owed_back: i64 = lines.iter().map(Billed::net).sum();
        if owed_back <= 0 {
            continue;
        }
        let adjustment = Adjustment {
            key: format!("{}:{key}:0", b.sub.id),
            reason: format!("No longer owed: {description}"),
            owed_back,
            subscription_id: &b.sub.id,
            charge_key: &key,
            except: draft.map(|d| d.id.as_str()),
        };
        credit_overbilled(conn, clock, &inputs.started_by, &adjustment, lines)?;
    }
    Ok(())
}

/// A line already billed for a subscription's charge, with what credit notes took back.
struct Billed {
    line: InvoiceLine,
    invoice_status: String,
    /// Credited on this line by any credit note.
    credited: i64,
    /// Credited by billing runs' late-usage adjustments only: finance's own credits
    /// (goodwill, disputes) stay credited and are not billed again as late charges.
    adjusted: i64,
}

impl Billed {
    /// What this line counts as billed for the charge.
    fn net(&self) -> i64 {
        self.line.amount - self.adjusted
    }

    /// What a credit note may still take back from this line.
    fn creditable(&self) -> i64 {
        self.line.amount - self.credited
    }
}

/// The lines live invoices other than `except` hold for this subscription and charge (its
/// own line and late ones), the newest period first.
fn billed_lines(
    conn: &mut DbConnection,
    subscription_id: &str,
    key: &str,
    except: Option<&str>,
) -> Result<Vec<Billed>> {
    let lines: Vec<(InvoiceLine, String)> = invoice_lines::table
        .inner_join(invoices::table)
        .filter(invoice_lines::subscription_id.eq(subscription_id))
        .filter(invoice_lines::charge_key.eq_any([key.to_string(), format!("late:{key}")]))
        .filter(invoices::status.ne("void"))
        .filter(invoices::id.ne(except.unwrap_or("")))
        .order((invoices::period.desc(), invoice_lines::position.desc()))
        .select((InvoiceLine::as_select(), invoices::status))
        .load(conn)?;
    let credits: Vec<(String, i64, Option<String>)> = if lines.is_empty() {
        Vec::new()
    } else {
        credit_note_lines::table
            .inner_join(credit_notes::table)
            .filter(credit_note_lines::invoice_line_id.eq_any(lines.iter().map(|(l, _)| &l.id)))
            .select((
                credit_note_lines::invoice_line_id,
                credit_note_lines::amount,
                credit_notes::adjustment_key,
            ))
            .load(conn)?
    };
    Ok(lines
        .into_iter()
        .map(|(line, invoice_status)| {
            let on_line = credits.iter().filter(|(id, _, _)| *id == line.id);
            let credited = on_line.clone().map(|(_, a, _)| a).sum();
            let adjusted = on_line
                .filter(|(_, _, key)| key.is_some())
                .map(|(_, a, _)| a)
                .sum();
            Billed {
                line,
                invoice_status,
                credited,
                adjusted,
            }
        })
        .collect())
}

/// A late-usage adjustment: how much a finalized period was billed over its rating now.
struct Adjustment<'a> {
    /// Subscription, charge and the quantity now rated: the same adjustment is never
    /// issued twice on one invoice (a unique key), and more usage makes a new one.
    key: String,
    reason: String,
    owed_back: i64,
    /// What `billed_lines` was asked, to read the lines again under the invoices' locks.
    subscription_id: &'a str,
    charge_key: &'a str,
    except: Option<&'a str>,
}

/// Credits `adjustment.owed_back` on the lines billed for the charge, the newest first, as
/// one credit note per invoice (open or paid: a paid one's credit is a balance owed back).
fn credit_overbilled(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    started_by: &str,
    adjustment: &Adjustment<'_>,
    billed: Vec<Billed>,
) -> Result<()> {
    let seen = billed_state(&billed);
    let mut left = adjustment.owed_back;
    let mut per_invoice: BTreeMap<String, Vec<(InvoiceLine, i64)>> = BTreeMap::new();
    for b in billed {
        let amount = b.creditable().min(left);
        if amount <= 0 || !matches!(b.invoice_status.as_str(), "open" | "paid") {
            continue;
        }
        left -= amount;
        per_invoice
            .entry(b.line.invoice_id.clone())
            .or_default()
            .push((b.line, amount));
    }
    if per_invoice.is_empty() {
        return Ok(());
    }
    // Credit notes are records nothing rebuilds: this transaction's commit waits for the
    // disk, even inside a run's bulk transaction of drafts.
    schema::durable_commit(conn)?;
    // Lock the invoices (in key order, as every run does), then read the lines again: if
    // another run credited this charge, or finance credited or voided, since they were
    // read, start over from what the database holds.
    for invoice_id in per_invoice.keys() {
        schema::locks::invoice(conn, invoice_id)?;
    }
    let now = billed_lines(
        conn,
        adjustment.subscription_id,
        adjustment.charge_key,
        adjustment.except,
    )?;
    if billed_state(&now) != seen {
        return Err(Error::Unavailable(
            "an invoice changed during the run".into(),
        ));
    }
    for (invoice_id, rows) in per_invoice {
        let invoice: Invoice = invoices::table
            .find(&invoice_id)
            .select(Invoice::as_select())
            .first(conn)?;
        let origin = invoicing::NoteOrigin {
            reason: &adjustment.reason,
            created_by: started_by,
            adjustment_key: Some(adjustment.key.clone()),
        };
        invoicing::issue_credit_note(conn, clock, &invoice, origin, &rows)?;
        audit::record(
            conn,
            clock,
            Entry::new("platform", started_by, "credit_note.issued", &invoice_id),
        )?;
    }
    Ok(())
}

/// What a credit decision rests on: each billed line, its invoice's status and its credits.
fn billed_state(billed: &[Billed]) -> Vec<(String, String, i64, i64)> {
    billed
        .iter()
        .map(|b| {
            (
                b.line.id.clone(),
                b.invoice_status.clone(),
                b.credited,
                b.adjusted,
            )
        })
        .collect()
}

/// The invoice a customer's draft is written as.
struct Draft<'a> {
    customer: &'a str,
    month: Month,
    currency: &'a str,
    tax_rate_bps: i32,
    now: NaiveDateTime,
}

/// Drafts a transaction creates, inserted together at its end: two multi-row statements
/// instead of two for each customer.
#[derive(Default)]
struct NewDrafts {
    invoices: Vec<Invoice>,
    lines: Vec<InvoiceLine>,
}

impl NewDrafts {
    fn insert(self, conn: &mut DbConnection) -> Result<()> {
        schema::batch::invoices(conn, &self.invoices).map_err(|e| {
            if schema::is_unique_violation(&e) {
                // Another run created one a moment ago: retry, and rebuild that one.
                Error::Unavailable("concurrent billing run".into())
            } else {
                e.into()
            }
        })?;
        schema::batch::invoice_lines(conn, &self.lines)?;
        Ok(())
    }
}

/// Replaces the draft's lines with `lines` and sets its totals (creating the draft in
/// `new_drafts`, or removing it when there is nothing to bill).
fn write_draft(
    conn: &mut DbConnection,
    inputs: &RunInputs,
    d: &Draft<'_>,
    existing: Option<Invoice>,
    lines: Vec<(String, Charge)>,
    subs: &[Subscription],
    new_drafts: &mut NewDrafts,
) -> Result<Tally> {
    let mut tally = Tally::default();
    let amounts: Vec<i64> = lines.iter().map(|(_, c)| c.amount).collect();
    let totals = billing::invoice::totals(&amounts, d.tax_rate_bps).map_err(Error::internal)?;
    let (invoice_id, is_new) = match existing {
        Some(draft) => {
            schema::locks::invoice(conn, &draft.id).map_err(|e| match e {
                // Removed since the run read it (by another run): start over.
                diesel::result::Error::NotFound => {
                    Error::Unavailable("the draft changed during the run".into())
                }
                e => e.into(),
            })?;
            // Locked now: if it was finalized, voided or removed since it was read, start
            // over from what the database holds.
            let status: Option<String> = invoices::table
                .find(&draft.id)
                .select(invoices::status)
                .first(conn)
                .optional()?;
            if status.as_deref() != Some("draft") {
                return Err(Error::Unavailable(
                    "the draft changed during the run".into(),
                ));
            }
            diesel::delete(invoice_lines::table.filter(invoice_lines::invoice_id.eq(&draft.id)))
                .execute(conn)?;
            if lines.is_empty() {
                diesel::delete(invoices::table.find(&draft.id)).execute(conn)?;
                tally.removed += 1;
                return Ok(tally);
            }
            diesel::update(invoices::table.find(&draft.id))
                .set((
                    invoices::tax_rate_bps.eq(d.tax_rate_bps),
                    invoices::subtotal.eq(totals.subtotal),
                    invoices::tax.eq(totals.tax),
                    invoices::total.eq(totals.total),
                    invoices::updated_at.eq(d.now),
                ))
                .execute(conn)?;
            tally.updated += 1;
            (draft.id, false)
        }
        None if lines.is_empty() => return Ok(tally),
        None => {
            let draft = Invoice {
                id: new_id("inv"),
                organization_id: d.customer.to_string(),
                period: d.month.to_string(),
                currency: d.currency.to_string(),
                status: "draft".into(),
                number: None,
                tax_rate_bps: d.tax_rate_bps,
                subtotal: totals.subtotal,
                tax: totals.tax,
                total: totals.total,
                amount_paid: 0,
                amount_credited: 0,
                tax_credited: 0,
                payment_failure: None,
                created_at: d.now,
                updated_at: d.now,
                finalized_at: None,
                paid_at: None,
                voided_at: None,
            };
            let id = draft.id.clone();
            new_drafts.invoices.push(draft);
            tally.created += 1;
            (id, true)
        }
    };
    let provider_of: HashMap<&str, &str> = subs
        .iter()
        .map(|s| (s.id.as_str(), s.provider_organization_id.as_str()))
        .collect();
    let rows = lines
        .into_iter()
        .enumerate()
        .map(|(position, (subscription_id, c))| {
            let provider = provider_of
                .get(subscription_id.as_str())
                .copied()
                .unwrap_or_default()
                .to_string();
            let fee_bps = inputs.fee_bps(&provider);
            let source = if c.key.starts_with("late:") {
                format!("late_{}", c.source.as_str())
            } else {
                c.source.as_str().to_string()
            };
            Ok(InvoiceLine {
                id: new_id("il"),
                invoice_id: invoice_id.clone(),
                organization_id: d.customer.to_string(),
                provider_organization_id: provider,
                subscription_id,
                source,
                charge_key: c.key,
                service_period: c.service_period,
                description: c.description,
                quantity: c.quantity,
                unit_amount_decimal: c.unit_amount.map(|u| u.normalize().to_string()),
                amount: c.amount,
                tiers: serde_json::to_string(&c.tiers).map_err(Error::internal)?,
                fee_bps,
                position: position as i32,
                created_at: d.now,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if is_new {
        new_drafts.lines.extend(rows);
    } else {
        schema::batch::invoice_lines(conn, &rows)?;
    }
    Ok(tally)
}
