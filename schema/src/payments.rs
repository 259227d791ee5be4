//! Payments: claiming due collection jobs so two workers never run one job at once, and the
//! inserts that must skip a row already there (`ON CONFLICT DO NOTHING`, which does not
//! compile through a `MultiConnection`, so each branches per backend).

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::models::{OverdueInvoice, PaymentJob, StripeCustomer, StripeEvent};
use crate::schema::{overdue_invoices, payment_jobs, stripe_customers, stripe_events};
use crate::DbConnection;

/// Claims up to `limit` pending jobs due at `now`, oldest due first, in a short transaction
/// of its own: each gets one more try and a lease (`next_attempt_at = lease_until`), so the
/// jobs of a worker that dies come due again when the lease ends. PostgreSQL locks the due
/// rows and skips those another worker holds (`FOR UPDATE SKIP LOCKED`); SQLite takes the
/// write lock first (`BEGIN IMMEDIATE`), so claims run one after another. Returns the
/// claimed rows as they now stand.
pub fn claim_due(
    conn: &mut DbConnection,
    now: NaiveDateTime,
    lease_until: NaiveDateTime,
    limit: i64,
) -> QueryResult<Vec<PaymentJob>> {
    macro_rules! due {
        () => {
            payment_jobs::table
                .filter(payment_jobs::status.eq("pending"))
                .filter(payment_jobs::next_attempt_at.le(now))
                .order((payment_jobs::next_attempt_at.asc(), payment_jobs::id.asc()))
                .limit(limit)
                .select(PaymentJob::as_select())
        };
    }
    macro_rules! lease {
        ($c:expr, $rows:expr) => {{
            let mut rows: Vec<PaymentJob> = $rows;
            let ids: Vec<&str> = rows.iter().map(|j| j.id.as_str()).collect();
            if !ids.is_empty() {
                diesel::update(payment_jobs::table.filter(payment_jobs::id.eq_any(&ids)))
                    .set((
                        payment_jobs::tries.eq(payment_jobs::tries + 1),
                        payment_jobs::next_attempt_at.eq(lease_until),
                        payment_jobs::updated_at.eq(now),
                    ))
                    .execute($c)?;
            }
            for j in &mut rows {
                j.tries += 1;
                j.next_attempt_at = lease_until;
                j.updated_at = now;
            }
            Ok(rows)
        }};
    }
    match conn {
        DbConnection::Postgresql(c) => {
            c.transaction(|c| lease!(c, due!().for_update().skip_locked().load(c)?))
        }
        DbConnection::Sqlite(c) => c.immediate_transaction(|c| lease!(c, due!().load(c)?)),
    }
}

/// Records a Stripe event id; `false` if it was recorded before (a replay or a re-send).
/// Call it in the transaction of the event's effect: a concurrent delivery of the same event
/// waits on PostgreSQL for this one to commit, then finds the id.
pub fn record_event(conn: &mut DbConnection, event: &StripeEvent) -> QueryResult<bool> {
    let inserted = match conn {
        DbConnection::Postgresql(c) => diesel::insert_into(stripe_events::table)
            .values(event)
            .on_conflict(stripe_events::id)
            .do_nothing()
            .execute(c)?,
        DbConnection::Sqlite(c) => diesel::insert_into(stripe_events::table)
            .values(event)
            .on_conflict(stripe_events::id)
            .do_nothing()
            .execute(c)?,
    };
    Ok(inserted == 1)
}

/// Stores an organization's Stripe customer unless one is stored already; returns the one
/// that is stored now (the first writer's, when two workers raced).
pub fn save_customer(conn: &mut DbConnection, customer: &StripeCustomer) -> QueryResult<String> {
    match conn {
        DbConnection::Postgresql(c) => diesel::insert_into(stripe_customers::table)
            .values(customer)
            .on_conflict(stripe_customers::organization_id)
            .do_nothing()
            .execute(c)?,
        DbConnection::Sqlite(c) => diesel::insert_into(stripe_customers::table)
            .values(customer)
            .on_conflict(stripe_customers::organization_id)
            .do_nothing()
            .execute(c)?,
    };
    stripe_customers::table
        .find(&customer.organization_id)
        .select(stripe_customers::customer_id)
        .first(conn)
}

/// Marks invoices overdue unless they are already; returns how many were new.
pub fn mark_overdue(conn: &mut DbConnection, rows: &[OverdueInvoice]) -> QueryResult<usize> {
    let mut inserted = 0;
    for row in rows {
        inserted += match conn {
            DbConnection::Postgresql(c) => diesel::insert_into(overdue_invoices::table)
                .values(row)
                .on_conflict(overdue_invoices::invoice_id)
                .do_nothing()
                .execute(c)?,
            DbConnection::Sqlite(c) => diesel::insert_into(overdue_invoices::table)
                .values(row)
                .on_conflict(overdue_invoices::invoice_id)
                .do_nothing()
                .execute(c)?,
        };
    }
    Ok(inserted)
}
