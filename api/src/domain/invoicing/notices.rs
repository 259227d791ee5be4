//! What the customer is told about its invoices, through the outbox (so only what commits is
//! told): the finalized invoice, a payment received or failed, and access suspended for
//! overdue invoices or restored, by e-mail to its admins and finance users; and every invoice and access event
//! to its webhook endpoints that asked for the type.

use diesel::prelude::*;
use schema::models::{CreditNote, Invoice, Payment};
use schema::schema::{invoices, payments};
use schema::DbConnection;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::invoices::{amount_due, summary};
use crate::domain::catalog::offer::Money;
use crate::domain::clock::{utc, Clock};
use crate::domain::error::Result;
use crate::domain::ids::new_id;
use crate::domain::outbox::{self, Event};

/// Roles that receive e-mail about the organization's invoices.
const BILLING_ROLES: [&str; 2] = ["admin", "finance"];

/// The invoice as it is now (after the caller's change), and the event's data: its summary.
fn invoice_event(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    event_id: String,
    event_type: &str,
    invoice_id: &str,
) -> Result<(Invoice, Event)> {
    let invoice: Invoice = invoices::table
        .find(invoice_id)
        .select(Invoice::as_select())
        .first(conn)?;
    let data = json!({ "invoice": summary(conn, invoice.clone())? });
    Ok((invoice, outbox::event(clock, event_id, event_type, data)))
}

/// The e-mail to the organization's admins and finance users, the event to its endpoints.
fn tell(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    organization_id: &str,
    event: &Event,
    subject: &str,
    text: &str,
) -> Result<()> {
    outbox::notify_roles(
        conn,
        clock,
        organization_id,
        &BILLING_ROLES,
        event,
        subject,
        text,
    )
}

/// How the e-mails name an invoice: its number once finalized (always, for those told of).
fn number_or_id(invoice: &Invoice) -> &str {
    invoice.number.as_deref().unwrap_or(&invoice.id)
}

fn amount(amount: i64, currency: &str) -> String {
    Money {
        amount,
        currency: currency.to_string(),
    }
    .display()
}

/// `invoice.finalized`, and `invoice.paid` when nothing was due: the e-mail tells the
/// customer's admins and finance users the number, the total and what is due.
pub(super) fn finalized(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    invoice_id: &str,
) -> Result<()> {
    let (invoice, event) =
        invoice_event(conn, clock, new_id("evt"), "invoice.finalized", invoice_id)?;
    let number = number_or_id(&invoice);
    let due = amount_due(&invoice);
    let subject = format!(
        "Invoice {number} for {}: {} due",
        invoice.period,
        amount(due, &invoice.currency)
    );
    let text = format!(
        "Invoice {number} for the period {period} is issued.\n\n\
         Subtotal: {subtotal}\nTax: {tax}\nTotal: {total}\nDue: {due}\n\n\
         {next}\n\nRead it with GET /v1/invoices/{id}.\n\nInvoice: {id}\n",
        period = invoice.period,
        subtotal = amount(invoice.subtotal, &invoice.currency),
        tax = amount(invoice.tax, &invoice.currency),
        total = amount(invoice.total, &invoice.currency),
        due = amount(due, &invoice.currency),
        next = if invoice.status == "paid" {
            "Nothing is due: the invoice is paid."
        } else {
            "If your organization pays through the marketplace's card payments, the amount due \
             is collected from its payment method on file, and you will be told if that fails. \
             Otherwise pay it as agreed with the marketplace, quoting the invoice number."
        },
        id = invoice.id,
    );
    tell(
        conn,
        clock,
        &invoice.organization_id,
        &event,
        &subject,
        &text,
    )?;
    if invoice.status == "paid" {
        paid(conn, clock, invoice_id)?;
    }
    Ok(())
}

/// `invoice.paid` (manual payment, Stripe, or nothing due at finalization), with a receipt
/// by e-mail for the payment that settled it (none when nothing was due: the finalization
/// e-mail said so).
pub(super) fn paid(conn: &mut DbConnection, clock: &dyn Clock, invoice_id: &str) -> Result<()> {
    let (invoice, event) = invoice_event(conn, clock, new_id("evt"), "invoice.paid", invoice_id)?;
    let settled_by: Option<Payment> = payments::table
        .filter(payments::invoice_id.eq(invoice_id))
        .filter(payments::status.eq("succeeded"))
        .order((payments::created_at.desc(), payments::id.desc()))
        .select(Payment::as_select())
        .first(conn)
        .optional()?;
    let Some(payment) = settled_by else {
        return outbox::publish(conn, clock, &invoice.organization_id, &event);
    };
    let number = number_or_id(&invoice);
    let how = match payment.method.as_str() {
        "stripe" => "by card".to_string(),
        _ => format!("reference {}", payment.reference),
    };
    let subject = format!("Payment received for invoice {number}");
    let text = format!(
        "We received {paid} for invoice {number} (period {period}), {how}. The invoice is \
         paid.\n\nInvoice: {id}\n",
        paid = amount(payment.amount, &invoice.currency),
        period = invoice.period,
        id = invoice.id,
    );
    tell(
        conn,
        clock,
        &invoice.organization_id,
        &event,
        &subject,
        &text,
    )
}

/// `invoice.voided`.
pub(super) fn voided(conn: &mut DbConnection, clock: &dyn Clock, invoice_id: &str) -> Result<()> {
    let (invoice, event) = invoice_event(conn, clock, new_id("evt"), "invoice.voided", invoice_id)?;
    outbox::publish(conn, clock, &invoice.organization_id, &event)
}

/// `credit_note.issued` (by finance, or by a billing run for late usage that lowered a
/// charge): the note and the invoice it credits, as it is after the note.
pub(super) fn credit_note_issued(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    note: &CreditNote,
) -> Result<()> {
    let (invoice, mut event) = invoice_event(
        conn,
        clock,
        new_id("evt"),
        "credit_note.issued",
        &note.invoice_id,
    )?;
    event.data["credit_note"] = json!({
        "id": note.id,
        "invoice_id": note.invoice_id,
        "reason": note.reason,
        "subtotal": {"amount": note.subtotal, "currency": invoice.currency},
        "tax": {"amount": note.tax, "currency": invoice.currency},
        "total": {"amount": note.total, "currency": invoice.currency},
        "created_at": utc(note.created_at),
    });
    outbox::publish(conn, clock, &invoice.organization_id, &event)
}

/// `invoice.payment_failed`: the e-mail and the event. `source` names what failed (the
/// payment provider's event, or the collection job) and the event's id derives from it, so
/// an event id never stands for two failures, nor a failure for two event ids.
pub(super) fn payment_failed(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    source: &str,
    invoice_id: &str,
    reason: &str,
) -> Result<()> {
    let event_id = format!(
        "evt_{}",
        &hex::encode(Sha256::digest(format!("invoice.payment_failed\n{source}")))[..24]
    );
    let (invoice, mut event) =
        invoice_event(conn, clock, event_id, "invoice.payment_failed", invoice_id)?;
    event.data["reason"] = json!(reason);
    let number = number_or_id(&invoice);
    let subject = format!("Payment of invoice {number} failed");
    let text = format!(
        "We could not collect the payment of invoice {number} ({due} due, period \
         {period}).\n\n\
         Reason given by the payment provider: {reason}\n\n\
         The invoice stays open. Please update your organization's payment method or pay the \
         invoice another way; if it stays unpaid past the grace period, your organization's \
         access to the data it subscribes to is suspended until it is paid.\n\n\
         Invoice: {id}\n",
        due = amount(amount_due(&invoice), &invoice.currency),
        period = invoice.period,
        id = invoice.id,
    );
    tell(
        conn,
        clock,
        &invoice.organization_id,
        &event,
        &subject,
        &text,
    )
}

/// `grants.suspended`: the customer's grants were suspended for these overdue invoices;
/// the e-mail lists them and says that settling them restores access.
pub(super) fn access_suspended(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    organization_id: &str,
    overdue_invoice_ids: &[String],
    grants: usize,
) -> Result<()> {
    let overdue: Vec<Invoice> = invoices::table
        .filter(invoices::id.eq_any(overdue_invoice_ids))
        .order(invoices::finalized_at.asc())
        .select(Invoice::as_select())
        .load(conn)?;
    let mut summaries = Vec::new();
    let mut list = String::new();
    for invoice in overdue {
        list.push_str(&format!(
            "- Invoice {} (period {}): {} due\n",
            number_or_id(&invoice),
            invoice.period,
            amount(amount_due(&invoice), &invoice.currency)
        ));
        summaries.push(summary(conn, invoice)?);
    }
    let event = outbox::event(
        clock,
        new_id("evt"),
        "grants.suspended",
        json!({"grants": grants, "overdue_invoices": summaries}),
    );
    let text = format!(
        "Your organization's access to the data it subscribes to is suspended: these invoices \
         are unpaid past the grace period.\n\n{list}\n\
         Access comes back as soon as no invoice of your organization is overdue: when these \
         are paid (or otherwise settled), unless another one has fallen overdue meanwhile.\n"
    );
    tell(
        conn,
        clock,
        organization_id,
        &event,
        "Access to your subscribed data is suspended",
        &text,
    )
}

/// `grants.restored`: no overdue invoice is left and the suspended grants are live again.
pub(super) fn access_restored(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    organization_id: &str,
    grants: usize,
) -> Result<()> {
    let event = outbox::event(
        clock,
        new_id("evt"),
        "grants.restored",
        json!({"grants": grants}),
    );
    tell(
        conn,
        clock,
        organization_id,
        &event,
        "Access to your subscribed data is restored",
        "The invoices that were overdue are settled: your organization's access to the data \
         it subscribes to is restored.\n",
    )
}
