//! Grace: an open invoice unpaid `grace_days` after finalization is overdue, and while a
//! customer has an overdue invoice its grants are suspended; paying (or voiding, or crediting
//! in full) the last one restores them.
//!
//! Overdue invoices are written down (`overdue_invoices`) when the pass finds them, so the
//! payment paths restore access at once without knowing the grace period, and what suspended
//! a customer can be read back.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Duration, NaiveDateTime};
use diesel::prelude::*;
use schema::models::OverdueInvoice;
use schema::schema::{grants, invoices, overdue_invoices};
use schema::DbConnection;
use serde_json::json;

use crate::domain::audit::{self, Entry};
use crate::domain::clock::{db_time, Clock};
use crate::domain::db::transaction;
use crate::domain::error::Result;

/// Who the audit trail names for the pass's changes.
const ACTOR: &str = "grace";

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    /// Invoices newly found overdue.
    pub overdue: usize,
    /// Grants suspended.
    pub suspended: usize,
    /// Grants restored.
    pub restored: usize,
}

/// The SQL of "what the customer still owes": total − paid − credited (tax included).
macro_rules! due {
    () => {
        invoices::total - invoices::amount_paid - invoices::amount_credited - invoices::tax_credited
    };
}

/// One pass: marks open invoices finalized more than `grace_days` ago that still have
/// something due, forgets marks whose invoice no longer has, suspends every grant of a
/// customer with an overdue invoice and restores every suspended grant of a customer without.
pub fn run_once(conn: &mut DbConnection, clock: &dyn Clock, grace_days: u32) -> Result<Report> {
    transaction(conn, |conn| pass(conn, clock, grace_days))
}

fn pass(conn: &mut DbConnection, clock: &dyn Clock, grace_days: u32) -> Result<Report> {
    let now = db_time(clock.now());
    let cutoff = now - Duration::days(i64::from(grace_days));
    let mut report = Report::default();

    let late: Vec<(String, String)> = invoices::table
        .filter(invoices::status.eq("open"))
        .filter(invoices::finalized_at.le(cutoff))
        .filter(due!().gt(0i64))
        .select((invoices::id, invoices::organization_id))
        .load(conn)?;
    let rows: Vec<OverdueInvoice> = late
        .into_iter()
        .map(|(invoice_id, organization_id)| OverdueInvoice {
            invoice_id,
            organization_id,
            since: now,
        })
        .collect();
    report.overdue = schema::payments::mark_overdue(conn, &rows)?;

    // Marks whose invoice was paid, voided or credited in full since.
    let settled: Vec<String> = overdue_invoices::table
        .inner_join(invoices::table)
        .filter(invoices::status.ne("open").or(due!().le(0i64)))
        .select(overdue_invoices::invoice_id)
        .load(conn)?;
    if !settled.is_empty() {
        diesel::delete(
            overdue_invoices::table.filter(overdue_invoices::invoice_id.eq_any(&settled)),
        )
        .execute(conn)?;
    }

    let mut overdue: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let marks: Vec<(String, String)> = overdue_invoices::table
        .order((
            overdue_invoices::organization_id,
            overdue_invoices::invoice_id,
        ))
        .select((
            overdue_invoices::organization_id,
            overdue_invoices::invoice_id,
        ))
        .load(conn)?;
    for (organization_id, invoice_id) in marks {
        overdue.entry(organization_id).or_default().push(invoice_id);
    }
    let mut still_overdue: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (organization_id, invoice_ids) in &overdue {
        let marked = invoice_ids;
        let invoice_ids = lock_still_overdue(conn, marked)?;
        // Settled while this pass ran (its settlement could not see this pass's new mark).
        let settled: Vec<&String> = marked.iter().filter(|i| !invoice_ids.contains(i)).collect();
        if !settled.is_empty() {
            diesel::delete(
                overdue_invoices::table.filter(overdue_invoices::invoice_id.eq_any(settled)),
            )
            .execute(conn)?;
        }
        if invoice_ids.is_empty() {
            continue;
        }
        still_overdue.insert(organization_id.clone(), invoice_ids.clone());
        let already_suspended: i64 = grants::table
            .filter(grants::organization_id.eq(organization_id))
            .filter(grants::suspended_at.is_not_null())
            .count()
            .get_result(conn)?;
        let n = diesel::update(
            grants::table
                .filter(grants::organization_id.eq(organization_id))
                .filter(grants::suspended_at.is_null())
                .filter(grants::revoked_at.is_null())
                .filter(grants::valid_until.gt(now)),
        )
        .set(grants::suspended_at.eq(now))
        .execute(conn)?;
        if n > 0 {
            report.suspended += n;
            audit::record(
                conn,
                clock,
                Entry::new(organization_id, ACTOR, "grants.suspended", organization_id)
                    .detail(json!({"grants": n, "overdue_invoices": invoice_ids})),
            )?;
            // Told once per suspension: a grant made while suspended follows silently.
            if already_suspended == 0 {
                super::notices::access_suspended(conn, clock, organization_id, &invoice_ids, n)?;
            }
        }
    }

    let suspended: BTreeSet<String> = grants::table
        .filter(grants::suspended_at.is_not_null())
        .select(grants::organization_id)
        .distinct()
        .load::<String>(conn)?
        .into_iter()
        .collect();
    for organization_id in suspended.iter().filter(|o| !still_overdue.contains_key(*o)) {
        report.restored += restore(conn, clock, organization_id)?;
    }
    Ok(report)
}

/// Locks the invoices (as paying, voiding and crediting do, so a settlement in flight is
/// waited for) and returns those still open with something due.
fn lock_still_overdue(conn: &mut DbConnection, invoice_ids: &[String]) -> Result<Vec<String>> {
    for id in invoice_ids {
        schema::locks::invoice(conn, id)?;
    }
    Ok(invoices::table
        .filter(invoices::id.eq_any(invoice_ids))
        .filter(invoices::status.eq("open"))
        .filter(due!().gt(0i64))
        .order(invoices::id)
        .select(invoices::id)
        .load(conn)?)
}

/// Called in the transaction that pays, voids or credits an invoice: the invoice is no
/// longer overdue once nothing is due on it, and a customer with no overdue invoice left gets
/// its grants back at once. Returns how many grants were restored.
pub fn settle(conn: &mut DbConnection, clock: &dyn Clock, invoice_id: &str) -> Result<usize> {
    let invoice: Option<(String, String, i64)> = invoices::table
        .find(invoice_id)
        .select((invoices::organization_id, invoices::status, due!()))
        .first(conn)
        .optional()?;
    let Some((organization_id, status, due)) = invoice else {
        return Ok(0);
    };
    if status == "open" && due > 0 {
        return Ok(0);
    }
    diesel::delete(overdue_invoices::table.find(invoice_id)).execute(conn)?;
    let still_overdue: i64 = overdue_invoices::table
        .inner_join(invoices::table)
        .filter(overdue_invoices::organization_id.eq(&organization_id))
        .filter(invoices::status.eq("open"))
        .filter(due!().gt(0i64))
        .count()
        .get_result(conn)?;
    if still_overdue > 0 {
        return Ok(0);
    }
    restore(conn, clock, &organization_id)
}

fn restore(conn: &mut DbConnection, clock: &dyn Clock, organization_id: &str) -> Result<usize> {
    let n = diesel::update(
        grants::table
            .filter(grants::organization_id.eq(organization_id))
            .filter(grants::suspended_at.is_not_null()),
    )
    .set(grants::suspended_at.eq(None::<NaiveDateTime>))
    .execute(conn)?;
    if n > 0 {
        audit::record(
            conn,
            clock,
            Entry::new(organization_id, ACTOR, "grants.restored", organization_id)
                .detail(json!({"grants": n})),
        )?;
        super::notices::access_restored(conn, clock, organization_id, n)?;
    }
    Ok(n)
}
