//! Invoices as customers and platform finance see them, and what finance does to them:
//! finalize (numbered, then immutable), void, record a payment, issue a credit note.

use chrono::{DateTime, Datelike, Utc};
use diesel::prelude::*;
use schema::models::{CreditNote, CreditNoteLine, Invoice, InvoiceLine, Payment};
use schema::schema::{
    credit_note_lines, credit_notes, invoice_counters, invoice_lines, invoices, organizations,
    payments,
};
use schema::DbConnection;
use serde::{Deserialize, Serialize};

use crate::after_cursor;
use crate::domain::accounts::OrganizationRef;
use crate::domain::audit::{self, Entry};
use crate::domain::auth::{Caller, Capability};
use crate::domain::catalog::offer::Money;
use crate::domain::clock::{db_time, utc, Clock};
use crate::domain::db::transaction;
use crate::domain::error::{Error, Problems, Result};
use crate::domain::ids::new_id;
use crate::domain::pagination::{Page, PageRequest};
use crate::domain::validate::text;

#[derive(Debug, Serialize)]
pub struct LineView {
    pub id: String,
    pub description: String,
    pub quantity: i64,
    pub unit_amount_decimal: Option<String>,
    pub amount: Money,
    pub subscription_id: String,
    pub provider_id: String,
    pub source: String,
    pub service_period: String,
    pub tiers: serde_json::Value,
    pub amount_credited: Money,
}

#[derive(Debug, Serialize)]
pub struct CreditNoteView {
    pub id: String,
    pub invoice_id: String,
    pub reason: String,
    pub lines: Vec<CreditNoteLineView>,
    pub subtotal: Money,
    pub tax: Money,
    pub total: Money,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize)]
pub struct CreditNoteLineView {
    pub invoice_line_id: String,
    pub amount: Money,
}

#[derive(Debug, Serialize)]
pub struct PaymentView {
    pub id: String,
    pub method: String,
    pub reference: String,
    pub amount: Money,
    pub status: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize)]
pub struct InvoiceView {
    pub id: String,
    pub number: Option<String>,
    pub status: String,
    pub customer: OrganizationRef,
    pub period: String,
    pub currency: String,
    pub lines: Vec<LineView>,
    pub tax_rate_bps: i32,
    pub subtotal: Money,
    pub tax: Money,
    pub total: Money,
    pub amount_paid: Money,
    /// Credited, tax included.
    pub amount_credited: Money,
    pub amount_due: Money,
    pub payment_failure: Option<String>,
    pub credit_notes: Vec<CreditNoteView>,
    pub payments: Vec<PaymentView>,
    pub created_at: DateTime<Utc>,
    pub finalized_at: Option<DateTime<Utc>>,
    pub paid_at: Option<DateTime<Utc>>,
    pub voided_at: Option<DateTime<Utc>>,
}

/// The summary in lists (no lines).
#[derive(Debug, Serialize)]
pub struct InvoiceSummary {
    pub id: String,
    pub number: Option<String>,
    pub status: String,
    pub customer: OrganizationRef,
    pub period: String,
    pub currency: String,
    pub subtotal: Money,
    pub tax: Money,
    pub total: Money,
    pub amount_due: Money,
    pub created_at: DateTime<Utc>,
    pub finalized_at: Option<DateTime<Utc>>,
}

/// What the customer still owes: total − paid − credited (tax included), never below 0.
pub fn amount_due(i: &Invoice) -> i64 {
    (i.total - i.amount_paid - i.amount_credited - i.tax_credited).max(0)
}

fn money(amount: i64, currency: &str) -> Money {
    Money {
        amount,
        currency: currency.to_string(),
    }
}

fn customer_ref(conn: &mut DbConnection, id: &str) -> Result<OrganizationRef> {
    let name: String = organizations::table
        .find(id)
        .select(organizations::name)
        .first(conn)?;
    Ok(OrganizationRef {
        id: id.to_string(),
        name,
    })
}

pub(super) fn summary(conn: &mut DbConnection, i: Invoice) -> Result<InvoiceSummary> {
    Ok(InvoiceSummary {
        customer: customer_ref(conn, &i.organization_id)?,
        subtotal: money(i.subtotal, &i.currency),
        tax: money(i.tax, &i.currency),
        total: money(i.total, &i.currency),
        amount_due: money(amount_due(&i), &i.currency),
        id: i.id,
        number: i.number,
        status: i.status,
        period: i.period,
        currency: i.currency,
        created_at: utc(i.created_at),
        finalized_at: i.finalized_at.map(utc),
    })
}

fn credited_per_line(conn: &mut DbConnection, invoice_id: &str) -> Result<Vec<(String, i64)>> {
    Ok(credit_note_lines::table
        .inner_join(credit_notes::table)
        .filter(credit_notes::invoice_id.eq(invoice_id))
        .select((
            credit_note_lines::invoice_line_id,
            credit_note_lines::amount,
        ))
        .load(conn)?)
}

pub fn view(conn: &mut DbConnection, i: Invoice) -> Result<InvoiceView> {
    let lines: Vec<InvoiceLine> = invoice_lines::table
        .filter(invoice_lines::invoice_id.eq(&i.id))
        .order((invoice_lines::position.asc(), invoice_lines::id.asc()))
        .select(InvoiceLine::as_select())
        .load(conn)?;
    let credited = credited_per_line(conn, &i.id)?;
    let notes: Vec<CreditNote> = credit_notes::table
        .filter(credit_notes::invoice_id.eq(&i.id))
        .order(credit_notes::created_at.asc())
        .select(CreditNote::as_select())
        .load(conn)?;
    let credit_notes = notes
        .into_iter()
        .map(|n| credit_note_view(conn, n, &i.currency))
        .collect::<Result<Vec<_>>>()?;
    let paid: Vec<Payment> = payments::table
        .filter(payments::invoice_id.eq(&i.id))
        .order(payments::created_at.asc())
        .select(Payment::as_select())
        .load(conn)?;
    let c = i.currency.clone();
    Ok(InvoiceView {
        customer: customer_ref(conn, &i.organization_id)?,
        lines: lines
            .into_iter()
            .map(|l| LineView {
                amount_credited: money(
                    credited
                        .iter()
                        .filter(|(id, _)| *id == l.id)
                        .map(|(_, a)| a)
                        .sum(),
                    &c,
                ),
                amount: money(l.amount, &c),
                tiers: serde_json::from_str(&l.tiers).unwrap_or_default(),
                id: l.id,
                description: l.description,
                quantity: l.quantity,
                unit_amount_decimal: l.unit_amount_decimal,
                subscription_id: l.subscription_id,
                provider_id: l.provider_organization_id,
                source: l.source,
                service_period: l.service_period,
            })
            .collect(),
        payments: paid
            .into_iter()
            .map(|p| PaymentView {
                amount: money(p.amount, &c),
                id: p.id,
                method: p.method,
                reference: p.reference,
                status: p.status,
                created_at: utc(p.created_at),
            })
            .collect(),
        credit_notes,
        tax_rate_bps: i.tax_rate_bps,
        subtotal: money(i.subtotal, &c),
        tax: money(i.tax, &c),
        total: money(i.total, &c),
        amount_paid: money(i.amount_paid, &c),
        amount_credited: money(i.amount_credited + i.tax_credited, &c),
        amount_due: money(amount_due(&i), &c),
        id: i.id,
        number: i.number,
        status: i.status,
        period: i.period,
        currency: i.currency,
        payment_failure: i.payment_failure,
        created_at: utc(i.created_at),
        finalized_at: i.finalized_at.map(utc),
        paid_at: i.paid_at.map(utc),
        voided_at: i.voided_at.map(utc),
    })
}

fn credit_note_view(
    conn: &mut DbConnection,
    n: CreditNote,
    currency: &str,
) -> Result<CreditNoteView> {
    let lines: Vec<CreditNoteLine> = credit_note_lines::table
        .filter(credit_note_lines::credit_note_id.eq(&n.id))
        .select(CreditNoteLine::as_select())
        .load(conn)?;
    Ok(CreditNoteView {
        lines: lines
            .into_iter()
            .map(|l| CreditNoteLineView {
                invoice_line_id: l.invoice_line_id,
                amount: money(l.amount, currency),
            })
            .collect(),
        subtotal: money(n.subtotal, currency),
        tax: money(n.tax, currency),
        total: money(n.total, currency),
        id: n.id,
        invoice_id: n.invoice_id,
        reason: n.reason,
        created_at: utc(n.created_at),
    })
}

/// Platform finance sees every invoice; a customer's admin and finance users their own;
/// everyone else gets 404.
fn readable(conn: &mut DbConnection, caller: &Caller, id: &str) -> Result<Invoice> {
    caller.require(Capability::Billing)?;
    let invoice: Invoice = invoices::table
        .find(id)
        .select(Invoice::as_select())
        .first(conn)
        .optional()?
        .ok_or(Error::NotFound("invoice"))?;
    if caller.can(Capability::PlatformBilling) || invoice.organization_id == caller.organization_id
    {
        Ok(invoice)
    } else {
        Err(Error::NotFound("invoice"))
    }
}

pub fn get(conn: &mut DbConnection, caller: &Caller, id: &str) -> Result<InvoiceView> {
    let invoice = readable(conn, caller, id)?;
    view(conn, invoice)
}

#[derive(Debug, Default, Clone, Deserialize)]
pub struct InvoiceFilters {
    pub status: Option<String>,
    pub period: Option<String>,
    pub customer: Option<String>,
    pub provider: Option<String>,
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

const STATUSES: [&str; 4] = ["draft", "open", "paid", "void"];

/// The invoices the caller may read, filtered; customers see only their own.
pub fn matching(
    caller: &Caller,
    f: &InvoiceFilters,
) -> Result<invoices::BoxedQuery<'static, schema::search::Backend>> {
    caller.require(Capability::Billing)?;
    let mut q = invoices::table.into_boxed();
    if !caller.can(Capability::PlatformBilling) {
        q = q.filter(invoices::organization_id.eq(caller.organization_id.clone()));
    }
    if let Some(status) = f.status.as_deref() {
        if !STATUSES.contains(&status) {
            return Err(Error::validation(
                "status",
                "must be draft, open, paid or void",
            ));
        }
        q = q.filter(invoices::status.eq(status.to_string()));
    }
    if let Some(period) = f.period.as_deref() {
        billing::charges::Month::parse(period).map_err(|m| Error::validation("period", m))?;
        q = q.filter(invoices::period.eq(period.to_string()));
    }
    if let Some(customer) = f.customer.clone() {
        q = q.filter(invoices::organization_id.eq(customer));
    }
    if let Some(provider) = f.provider.clone() {
        let with_provider = invoice_lines::table
            .filter(invoice_lines::provider_organization_id.eq(provider))
            .select(invoice_lines::invoice_id);
        q = q.filter(invoices::id.eq_any(with_provider));
    }
    Ok(q)
}

pub fn list(
    conn: &mut DbConnection,
    caller: &Caller,
    f: &InvoiceFilters,
    page: &PageRequest,
) -> Result<Page<InvoiceSummary>> {
    let q = matching(caller, f)?;
    let rows: Vec<Invoice> = after_cursor!(q, page, invoices::created_at, invoices::id)
        .select(Invoice::as_select())
        .load(conn)?;
    Page::try_from_rows(
        page,
        rows,
        |i| (i.created_at, i.id.clone()),
        |i| summary(conn, i),
    )
}

/// The platform-finance action on an invoice row, under a row lock, in one transaction.
fn act<T>(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    caller: &Caller,
    id: &str,
    action: &str,
    work: impl Fn(&mut DbConnection, Invoice) -> Result<T>,
) -> Result<T> {
    caller.require(Capability::PlatformBilling)?;
    readable(conn, caller, id)?;
    transaction(conn, |conn| {
        schema::locks::invoice(conn, id)?;
        let invoice: Invoice = invoices::table
            .find(id)
            .select(Invoice::as_select())
            .first(conn)?;
        let out = work(conn, invoice)?;
        audit::record(
            conn,
            clock,
            Entry::new("platform", &caller.principal(), action, id),
        )?;
        Ok(out)
    })
}

fn reload(conn: &mut DbConnection, id: &str) -> Result<InvoiceView> {
    let invoice = invoices::table
        .find(id)
        .select(Invoice::as_select())
        .first(conn)?;
    view(conn, invoice)
}

/// The invoice number format: `MKT-<year>-<6 digits>`, the sequence restarting each year.
fn next_number(conn: &mut DbConnection, year: i32) -> Result<String> {
    let counter = format!("invoices:{year}");
    let bumped: Option<i64> = diesel::update(invoice_counters::table.find(&counter))
        .set(invoice_counters::value.eq(invoice_counters::value + 1))
        .returning(invoice_counters::value)
        .get_result(conn)
        .optional()?;
    let value = match bumped {
        Some(v) => v,
        None => {
            // First invoice of the year. A concurrent first one hits the primary key and
            // its transaction is retried, then finds the row.
            diesel::insert_into(invoice_counters::table)
                .values((
                    invoice_counters::name.eq(&counter),
                    invoice_counters::value.eq(1i64),
                ))
                .execute(conn)
                .map_err(|e| {
                    if schema::is_unique_violation(&e) {
                        Error::Unavailable(e.to_string())
                    } else {
                        e.into()
                    }
                })?;
            1
        }
    };
    Ok(format!("MKT-{year}-{value:06}"))
}

/// Finalizes a draft: the next gap-free number, then immutable. A zero-due invoice is paid
/// at once.
pub fn finalize(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    caller: &Caller,
    id: &str,
) -> Result<InvoiceView> {
    act(
        conn,
        clock,
        caller,
        id,
        "invoice.finalized",
        |conn, invoice| {
            if invoice.status != "draft" {
                return Err(Error::conflict(
                    "invalid_state",
                    format!("the invoice is {}: it cannot be finalized", invoice.status),
                ));
            }
            let now = clock.now();
            let number = next_number(conn, now.year())?;
            let paid = invoice.total == 0;
            diesel::update(invoices::table.find(id))
                .set((
                    invoices::status.eq(if paid { "paid" } else { "open" }),
                    invoices::number.eq(&number),
                    invoices::finalized_at.eq(db_time(now)),
                    invoices::paid_at.eq(paid.then(|| db_time(now))),
                    invoices::updated_at.eq(db_time(now)),
                ))
                .execute(conn)?;
            if !paid {
                // Collection (Stripe) runs after this transaction commits, from this job.
                super::payments::enqueue_collection(conn, clock, &invoice)?;
            }
            super::notices::finalized(conn, clock, id)?;
            reload(conn, id)
        },
    )
}

/// Voids an open invoice that has no payment and no credit note; its period can be billed again.
pub fn void(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    caller: &Caller,
    id: &str,
) -> Result<InvoiceView> {
    act(
        conn,
        clock,
        caller,
        id,
        "invoice.voided",
        |conn, invoice| {
            let credited: i64 = credit_notes::table
                .filter(credit_notes::invoice_id.eq(id))
                .count()
                .get_result(conn)?;
            if invoice.status != "open" || invoice.amount_paid != 0 || credited > 0 {
                return Err(Error::conflict(
                    "invalid_state",
                    "only an open invoice with no payment and no credit note can be voided",
                ));
            }
            let now = db_time(clock.now());
            diesel::update(invoices::table.find(id))
                .set((
                    invoices::status.eq("void"),
                    invoices::voided_at.eq(now),
                    invoices::updated_at.eq(now),
                ))
                .execute(conn)?;
            super::grace::settle(conn, clock, id)?;
            super::notices::voided(conn, clock, id)?;
            reload(conn, id)
        },
    )
}

#[derive(Debug, Deserialize)]
pub struct PaymentRequest {
    pub method: String,
    pub reference: String,
}

/// Records a manual payment of what is due; the invoice is then paid.
pub fn pay(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    caller: &Caller,
    id: &str,
    request: PaymentRequest,
) -> Result<InvoiceView> {
    let mut problems = Problems::new();
    if request.method != "manual" {
        problems.push("method", "must be manual (card payments go through Stripe)");
    }
    let reference = problems.check("reference", text(&request.reference, 200));
    problems.finish()?;
    let reference = reference.unwrap_or_default();
    act(conn, clock, caller, id, "invoice.paid", |conn, invoice| {
        if invoice.status != "open" {
            return Err(Error::conflict(
                "invalid_state",
                format!("the invoice is {}: it cannot be paid", invoice.status),
            ));
        }
        record_payment(conn, clock, &invoice, "manual", &reference)?;
        reload(conn, id)
    })
}

/// Marks an open invoice paid with a succeeded payment of what is due (manual or Stripe), and
/// restores the customer's grants if no overdue invoice is left (see `grace`).
pub fn record_payment(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    invoice: &Invoice,
    method: &str,
    reference: &str,
) -> Result<()> {
    let now = db_time(clock.now());
    let due = amount_due(invoice);
    diesel::insert_into(payments::table)
        .values(Payment {
            id: new_id("pay"),
            invoice_id: invoice.id.clone(),
            organization_id: invoice.organization_id.clone(),
            method: method.to_string(),
            reference: reference.to_string(),
            amount: due,
            status: "succeeded".into(),
            created_at: now,
        })
        .execute(conn)?;
    diesel::update(invoices::table.find(&invoice.id))
        .set((
            invoices::status.eq("paid"),
            invoices::amount_paid.eq(invoice.amount_paid + due),
            invoices::paid_at.eq(now),
            invoices::payment_failure.eq(None::<String>),
            invoices::updated_at.eq(now),
        ))
        .execute(conn)?;
    // Nothing overdue left: the customer's suspended grants come back at once.
    super::grace::settle(conn, clock, &invoice.id)?;
    super::notices::paid(conn, clock, &invoice.id)
}

#[derive(Debug, Clone, Deserialize)]
pub struct CreditNoteRequest {
    pub reason: String,
    pub lines: Vec<CreditLineRequest>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CreditLineRequest {
    pub invoice_line_id: String,
    pub amount: i64,
}

/// Credits amounts of an open or paid invoice's lines (pre-tax); the note's tax follows
/// the invoice's tax cumulatively. Never more than a line has left. On a paid invoice the
/// credit is owed back to the customer as a balance (see README).
pub fn credit(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    caller: &Caller,
    id: &str,
    request: CreditNoteRequest,
) -> Result<CreditNoteView> {
    let mut problems = Problems::new();
    let reason = problems.check("reason", text(&request.reason, 500));
    if request.lines.is_empty() || request.lines.len() > 200 {
        problems.push("lines", "must hold 1 to 200 lines");
    }
    for (i, l) in request.lines.iter().enumerate() {
        if l.amount <= 0 {
            problems.push(
                format!("lines[{i}].amount"),
                "must be a positive integer amount in minor units",
            );
        }
    }
    problems.finish()?;
    let reason = reason.unwrap_or_default();
    act(
        conn,
        clock,
        caller,
        id,
        "credit_note.issued",
        |conn, invoice| {
            if invoice.status != "open" && invoice.status != "paid" {
                return Err(Error::conflict(
                    "invalid_state",
                    format!("the invoice is {}: it cannot be credited", invoice.status),
                ));
            }
            let credited = credited_per_line(conn, id)?;
            let mut problems = Problems::new();
            let mut rows: Vec<(InvoiceLine, i64)> = Vec::new();
            for (i, l) in request.lines.iter().enumerate() {
                let line: Option<InvoiceLine> = invoice_lines::table
                    .find(&l.invoice_line_id)
                    .filter(invoice_lines::invoice_id.eq(id))
                    .select(InvoiceLine::as_select())
                    .first(conn)
                    .optional()?;
                let Some(line) = line else {
                    problems.push(
                        format!("lines[{i}].invoice_line_id"),
                        "is not a line of this invoice",
                    );
                    continue;
                };
                let already: i64 = credited
                    .iter()
                    .filter(|(lid, _)| *lid == line.id)
                    .map(|(_, a)| a)
                    .sum::<i64>()
                    + rows
                        .iter()
                        .filter(|(r, _)| r.id == line.id)
                        .map(|(_, a)| a)
                        .sum::<i64>();
                if l.amount > line.amount - already {
                    problems.push(
                        format!("lines[{i}].amount"),
                        format!(
                            "exceeds what this line has left to credit ({})",
                            line.amount - already
                        ),
                    );
                    continue;
                }
                rows.push((line, l.amount));
            }
            problems.finish()?;
            let note = issue_credit_note(
                conn,
                clock,
                &invoice,
                NoteOrigin {
                    reason: &reason,
                    created_by: &caller.principal(),
                    adjustment_key: None,
                },
                &rows,
            )?;
            credit_note_view(conn, note, &invoice.currency)
        },
    )
}

/// Who issues a credit note, and why.
pub(super) struct NoteOrigin<'a> {
    pub reason: &'a str,
    pub created_by: &'a str,
    /// A billing run's adjustment for late usage (see `runs`); `None` for finance's notes.
    pub adjustment_key: Option<String>,
}

/// Writes a credit note over `rows` (line, pre-tax amount; each already checked against
/// what its line has left) on a locked open or paid invoice: the note's tax follows the
/// invoice's tax cumulatively, and the invoice's credited amounts grow by the note.
pub(super) fn issue_credit_note(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    invoice: &Invoice,
    origin: NoteOrigin<'_>,
    rows: &[(InvoiceLine, i64)],
) -> Result<CreditNote> {
    let subtotal: i64 = rows.iter().map(|(_, a)| a).sum();
    let totals = billing::invoice::Totals {
        subtotal: invoice.subtotal,
        tax: invoice.tax,
        total: invoice.total,
    };
    let tax = billing::invoice::credit_note_tax(
        totals,
        invoice.amount_credited,
        invoice.tax_credited,
        subtotal,
    )
    .map_err(Error::internal)?;
    let now = db_time(clock.now());
    let note = CreditNote {
        id: new_id("cn"),
        invoice_id: invoice.id.clone(),
        organization_id: invoice.organization_id.clone(),
        reason: origin.reason.to_string(),
        subtotal,
        tax,
        total: subtotal + tax,
        created_by: origin.created_by.to_string(),
        created_at: now,
        adjustment_key: origin.adjustment_key,
    };
    diesel::insert_into(credit_notes::table)
        .values(&note)
        .execute(conn)
        .map_err(|e| {
            if schema::is_unique_violation(&e) {
                // Another run issued this adjustment a moment ago: retry, and see it.
                Error::Unavailable("credit note issued concurrently".into())
            } else {
                e.into()
            }
        })?;
    for (line, amount) in rows {
        diesel::insert_into(credit_note_lines::table)
            .values(CreditNoteLine {
                id: new_id("cnl"),
                credit_note_id: note.id.clone(),
                invoice_line_id: line.id.clone(),
                provider_organization_id: line.provider_organization_id.clone(),
                amount: *amount,
            })
            .execute(conn)?;
    }
    let credited = Invoice {
        amount_credited: invoice.amount_credited + subtotal,
        tax_credited: invoice.tax_credited + tax,
        ..invoice.clone()
    };
    // An open invoice credited to nothing is settled: paid, with no payment, as one whose
    // total is 0 is at finalization (so it leaves the list of what customers owe).
    let settled = invoice.status == "open" && amount_due(&credited) == 0;
    diesel::update(invoices::table.find(&invoice.id))
        .set((
            invoices::amount_credited.eq(credited.amount_credited),
            invoices::tax_credited.eq(credited.tax_credited),
            invoices::updated_at.eq(now),
        ))
        .execute(conn)?;
    if settled {
        diesel::update(invoices::table.find(&invoice.id))
            .set((
                invoices::status.eq("paid"),
                invoices::paid_at.eq(now),
                invoices::payment_failure.eq(None::<String>),
            ))
            .execute(conn)?;
    }
    // A credit that leaves nothing due settles an overdue invoice.
    super::grace::settle(conn, clock, &invoice.id)?;
    super::notices::credit_note_issued(conn, clock, &note)?;
    if settled {
        super::notices::paid(conn, clock, &invoice.id)?;
    }
    Ok(note)
}

/// What the invoices matching a filter add up to, in one currency.
#[derive(Debug, Clone, Serialize)]
pub struct CurrencyTotals {
    pub currency: String,
    pub invoices: i64,
    pub subtotal: Money,
    pub tax: Money,
    pub total: Money,
    pub amount_due: Money,
}

/// Totals per currency of every invoice the filter matches (not only one page).
pub fn totals(
    conn: &mut DbConnection,
    caller: &Caller,
    f: &InvoiceFilters,
) -> Result<Vec<CurrencyTotals>> {
    let rows: Vec<Invoice> = matching(caller, f)?
        .select(Invoice::as_select())
        .load(conn)?;
    let mut sums: std::collections::BTreeMap<String, [i64; 5]> = Default::default();
    for i in &rows {
        let s = sums.entry(i.currency.clone()).or_default();
        for (slot, amount) in s
            .iter_mut()
            .zip([1, i.subtotal, i.tax, i.total, amount_due(i)])
        {
            *slot = slot
                .checked_add(amount)
                .ok_or(Error::internal("invoice totals overflow"))?;
        }
    }
    Ok(sums
        .into_iter()
        .map(|(c, [n, subtotal, tax, total, due])| CurrencyTotals {
            invoices: n,
            subtotal: money(subtotal, &c),
            tax: money(tax, &c),
            total: money(total, &c),
            amount_due: money(due, &c),
            currency: c,
        })
        .collect())
}
