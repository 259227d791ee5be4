//! Collecting invoices with Stripe: a job written when an invoice is finalized and run after
//! that transaction commits (a PaymentIntent under an idempotency key derived from the
//! invoice and the attempt, so a retry never charges twice), and Stripe's webhooks, verified
//! by their signature and applied once per event id.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;
use hmac::{Hmac, Mac};
use schema::models::{Invoice, Payment, PaymentJob, StripeCustomer, StripeEvent};
use schema::schema::{invoices, organizations, payment_jobs, payments, stripe_customers};
use schema::{DbConnection, DbPool};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::Sha256;

use super::invoices::{amount_due, record_payment};
use super::stripe::{Charge, Failure, Stripe};
use crate::domain::audit::{self, Entry};
use crate::domain::clock::{db_time, Clock, SharedClock};
use crate::domain::db::transaction;
use crate::domain::error::{Error, Result};
use crate::domain::ids::new_id;
use crate::domain::validate::{field_error, integral_numbers, replace_nul};
use ::stripe::{PaymentIntent, PaymentIntentStatus};

/// Who the audit trail names for what Stripe did.
const ACTOR: &str = "stripe";
/// The payment method recorded on payments collected through Stripe.
pub const METHOD: &str = "stripe";
/// Jobs claimed per transaction.
const CLAIM: i64 = 20;
/// How long a worker holds a claimed job before another may take it (a worker that died).
const LEASE: Duration = Duration::minutes(5);
/// Runs of a job before it gives up. With the backoff below the last one starts about 15 hours
/// after the first, inside the 24 hours Stripe keeps an idempotency key.
const MAX_TRIES: i32 = 12;
/// Oldest signature timestamp accepted, either way of the server clock (replays).
pub const SIGNATURE_TOLERANCE_SECS: i64 = 300;

/// Writes the collection job of an invoice that finalization just opened (its first
/// collection attempt). Call it in the finalizing transaction: the job exists if and only if
/// the invoice was finalized, and runs after the commit (Stripe is never called inside the
/// transaction). With no Stripe key the job waits: invoices are paid manually, and one still
/// open is collected once a key is set.
pub fn enqueue_collection(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    invoice: &Invoice,
) -> Result<()> {
    let due = amount_due(invoice);
    if due <= 0 {
        return Ok(());
    }
    let now = db_time(clock.now());
    diesel::insert_into(payment_jobs::table)
        .values(PaymentJob {
            id: new_id("pjob"),
            invoice_id: invoice.id.clone(),
            organization_id: invoice.organization_id.clone(),
            attempt: 1,
            amount: due,
            currency: invoice.currency.clone(),
            status: "pending".into(),
            tries: 0,
            next_attempt_at: now,
            last_error: None,
            payment_intent_id: None,
            created_at: now,
            updated_at: now,
        })
        .execute(conn)?;
    Ok(())
}

/// The idempotency key of a collection attempt's PaymentIntent: the same for every run of the
/// job, so Stripe creates one PaymentIntent per attempt however often the job is retried.
pub fn payment_intent_key(invoice_id: &str, attempt: i32) -> String {
    format!("mkt-invoice-{invoice_id}-{attempt}")
}

/// What one pass of the payment worker did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// PaymentIntents created (or found again under their key).
    pub submitted: usize,
    /// Jobs that will run again (Stripe unreachable, or its answer lost).
    pub retrying: usize,
    /// Payments the card or bank refused at once.
    pub declined: usize,
    /// Jobs given up or refused by Stripe.
    pub failed: usize,
    /// Jobs whose invoice no longer needed collecting.
    pub cancelled: usize,
}

/// Runs the collection jobs due now, until none is left: each is claimed in a short
/// transaction with a lease, Stripe is called outside any transaction, and the outcome is
/// written in another. Database work runs on the blocking pool.
pub async fn collect_due(pool: &DbPool, clock: SharedClock, stripe: &Stripe) -> Result<Report> {
    let mut report = Report::default();
    loop {
        let c = clock.clone();
        let jobs = blocking(pool, move |conn| {
            let now = db_time(c.now());
            Ok(schema::payments::claim_due(conn, now, now + LEASE, CLAIM)?)
        })
        .await?;
        let claimed = jobs.len();
        for job in jobs {
            let id = job.id.clone();
            match collect(pool, clock.clone(), stripe, job).await {
                Ok(outcome) => match outcome {
                    Outcome::Submitted => report.submitted += 1,
                    Outcome::Retrying => report.retrying += 1,
                    Outcome::Declined => report.declined += 1,
                    Outcome::Failed => report.failed += 1,
                    Outcome::Cancelled => report.cancelled += 1,
                },
                // Its lease runs out and it comes due again.
                Err(e) => {
                    tracing::warn!(job = %id, error = %e, "payment job could not be recorded")
                }
            }
        }
        if claimed < CLAIM as usize {
            return Ok(report);
        }
    }
}

enum Outcome {
    Submitted,
    Retrying,
    Declined,
    Failed,
    Cancelled,
}

/// What a job needs to know, read before calling Stripe.
enum Plan {
    Cancel(String),
    Charge {
        number: String,
        organization_name: String,
        customer_id: Option<String>,
        /// What to charge: the job's amount, or what is due now on a job's first try.
        amount: i64,
    },
}

async fn collect(
    pool: &DbPool,
    clock: SharedClock,
    stripe: &Stripe,
    job: PaymentJob,
) -> Result<Outcome> {
    let j = job.clone();
    let plan = blocking(pool, move |conn| plan(conn, &j)).await?;
    let (number, organization_name, stored_customer, amount) = match plan {
        Plan::Cancel(why) => {
            let j = job.clone();
            blocking(pool, move |conn| {
                finish(conn, clock.as_ref(), &j, "cancelled", Some(why), None)
            })
            .await?;
            return Ok(Outcome::Cancelled);
        }
        Plan::Charge {
            number,
            organization_name,
            customer_id,
            amount,
        } => (number, organization_name, customer_id, amount),
    };

    let customer = match stored_customer {
        Some(id) => stripe.customer(&id).await,
        None => match stripe
            .create_customer(&job.organization_id, &organization_name)
            .await
        {
            Ok(created) => {
                let row = StripeCustomer {
                    organization_id: job.organization_id.clone(),
                    customer_id: created.id.clone(),
                    created_at: db_time(clock.now()),
                };
                let stored = blocking(pool, move |conn| {
                    Ok(schema::payments::save_customer(conn, &row)?)
                })
                .await?;
                if stored == created.id {
                    Ok(created)
                } else {
                    // Another worker stored the organization's customer first: use that one.
                    stripe.customer(&stored).await
                }
            }
            Err(e) => Err(e),
        },
    };
    let result = match customer {
        Ok(customer) => {
            let key = payment_intent_key(&job.invoice_id, job.attempt);
            let charge = Charge {
                idempotency_key: &key,
                customer_id: &customer.id,
                payment_method: customer.default_payment_method.as_deref(),
                amount,
                currency: &job.currency,
                description: &format!("Invoice {number}"),
                metadata: HashMap::from([
                    ("invoice_id".to_string(), job.invoice_id.clone()),
                    ("invoice_number".to_string(), number.clone()),
                    ("organization_id".to_string(), job.organization_id.clone()),
                    ("attempt".to_string(), job.attempt.to_string()),
                ]),
            };
            stripe
                .create_payment_intent(&charge)
                .await
                .map(|pi| (pi, customer.default_payment_method.is_some()))
        }
        Err(e) => Err(e),
    };

    blocking(pool, move |conn| record(conn, clock.as_ref(), &job, result)).await
}

/// Writes what Stripe answered for a job.
fn record(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    job: &PaymentJob,
    answer: Result<(PaymentIntent, bool), Failure>,
) -> Result<Outcome> {
    match answer {
        Ok((pi, has_payment_method)) => {
            let pi_id = pi.id.to_string();
            finish(conn, clock, job, "done", None, Some(pi_id.clone()))?;
            match pi.status {
                // Confirmed at once: settle now rather than wait for the webhook (which then
                // finds the invoice paid and changes nothing).
                PaymentIntentStatus::Succeeded => {
                    let object = PaymentIntentObject {
                        id: pi_id,
                        amount: pi.amount,
                        amount_received: Some(pi.amount_received.max(pi.amount)),
                        currency: pi.currency.to_string(),
                        // The invoice is the job's, whatever the answer echoes.
                        metadata: HashMap::from([(
                            "invoice_id".to_string(),
                            job.invoice_id.clone(),
                        )]),
                        last_payment_error: None,
                    };
                    transaction(conn, |conn| succeeded(conn, clock, &object).map(|_| ()))?;
                }
                PaymentIntentStatus::RequiresPaymentMethod
                | PaymentIntentStatus::RequiresAction => {
                    let why = if has_payment_method {
                        "the payment needs the customer's action in Stripe (authentication)"
                    } else {
                        "no default payment method on the customer's Stripe account: the \
                         payment waits for the customer"
                    };
                    note_failure_and_tell(conn, clock, job, why)?;
                }
                _ => {}
            }
            Ok(Outcome::Submitted)
        }
        Err(Failure::Declined(message)) => {
            // The PaymentIntent exists; the webhook records the failed payment and tells the
            // customer. Retrying the same key would only repeat the refusal.
            finish(conn, clock, job, "done", Some(message.clone()), None)?;
            note_failure(conn, clock, &job.invoice_id, &message)?;
            Ok(Outcome::Declined)
        }
        Err(Failure::Retry(message)) if job.tries < MAX_TRIES => {
            let wait = backoff(job.tries);
            tracing::info!(
                job = %job.id,
                invoice = %job.invoice_id,
                error = %message,
                retry_in_s = wait.num_seconds(),
                "payment job will retry"
            );
            let now = clock.now();
            diesel::update(payment_jobs::table.find(&job.id))
                .set((
                    payment_jobs::next_attempt_at.eq(db_time(now + wait)),
                    payment_jobs::last_error.eq(&message),
                    payment_jobs::updated_at.eq(db_time(now)),
                ))
                .execute(conn)?;
            Ok(Outcome::Retrying)
        }
        Err(Failure::Retry(message)) | Err(Failure::Refused(message)) => {
            tracing::error!(
                job = %job.id,
                invoice = %job.invoice_id,
                error = %message,
                "payment job failed"
            );
            finish(conn, clock, job, "failed", Some(message.clone()), None)?;
            let why = format!("automatic collection failed: {message}");
            note_failure_and_tell(conn, clock, job, &why)?;
            Ok(Outcome::Failed)
        }
    }
}

/// 30 s × 2^(tries − 1), at most 6 hours.
fn backoff(tries: i32) -> Duration {
    let exp = (tries.max(1) - 1).min(16) as u32;
    Duration::seconds((30i64 << exp).min(6 * 3600))
}

fn plan(conn: &mut DbConnection, job: &PaymentJob) -> Result<Plan> {
    let invoice: Invoice = invoices::table
        .find(&job.invoice_id)
        .select(Invoice::as_select())
        .first(conn)?;
    if invoice.status != "open" {
        return Ok(Plan::Cancel(format!("the invoice is {}", invoice.status)));
    }
    let due = amount_due(&invoice);
    if due <= 0 {
        return Ok(Plan::Cancel("nothing is due on the invoice".into()));
    }
    // A credit note issued since finalization lowers the charge, as long as no earlier try
    // may have sent the old amount under this attempt's key (Stripe would refuse a key reused
    // with another amount; the excess of a PaymentIntent made before is owed back).
    let amount = if job.tries <= 1 && due != job.amount {
        diesel::update(payment_jobs::table.find(&job.id))
            .set(payment_jobs::amount.eq(due))
            .execute(conn)?;
        due
    } else {
        job.amount
    };
    let organization_name: String = organizations::table
        .find(&invoice.organization_id)
        .select(organizations::name)
        .first(conn)?;
    let customer_id: Option<String> = stripe_customers::table
        .find(&invoice.organization_id)
        .select(stripe_customers::customer_id)
        .first(conn)
        .optional()?;
    Ok(Plan::Charge {
        number: invoice.number.unwrap_or_else(|| invoice.id.clone()),
        organization_name,
        customer_id,
        amount,
    })
}

fn finish(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    job: &PaymentJob,
    status: &str,
    error: Option<String>,
    payment_intent_id: Option<String>,
) -> Result<()> {
    diesel::update(payment_jobs::table.find(&job.id))
        .set((
            payment_jobs::status.eq(status),
            payment_jobs::last_error.eq(error),
            payment_jobs::payment_intent_id.eq(payment_intent_id),
            payment_jobs::updated_at.eq(db_time(clock.now())),
        ))
        .execute(conn)?;
    Ok(())
}

/// Writes why collecting an open invoice did not work (finance sees it on the invoice).
fn note_failure(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    invoice_id: &str,
    why: &str,
) -> Result<bool> {
    let noted = diesel::update(
        invoices::table
            .find(invoice_id)
            .filter(invoices::status.eq("open")),
    )
    .set((
        invoices::payment_failure.eq(why),
        invoices::updated_at.eq(db_time(clock.now())),
    ))
    .execute(conn)?;
    Ok(noted > 0)
}

/// A collection that failed with no Stripe webhook to come (no payment method, the payment
/// waits for the customer's action, or the job gave up): noted on the open invoice, and the
/// customer told as for a failed payment, once per job.
fn note_failure_and_tell(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    job: &PaymentJob,
    why: &str,
) -> Result<()> {
    transaction(conn, |conn| {
        if note_failure(conn, clock, &job.invoice_id, why)? {
            let source = format!("payment job\n{}", job.id);
            super::notices::payment_failed(conn, clock, &source, &job.invoice_id, why)?;
        }
        Ok(())
    })
}

/// Runs diesel work on the blocking pool with a pooled connection.
async fn blocking<T, F>(pool: &DbPool, work: F) -> Result<T>
where
    F: FnOnce(&mut DbConnection) -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    let pool = pool.clone();
    tokio::task::spawn_blocking(move || {
        let mut conn = pool.get()?;
        work(&mut conn)
    })
    .await
    .map_err(|e| Error::internal(format!("blocking task failed: {e}")))?
}

// ---------------------------------------------------------------------------------------
// Webhooks

/// Checks a `Stripe-Signature` header (`t=<unix seconds>,v1=<hex>[,v1=<hex>…]`) over the raw
/// body: HMAC-SHA256 of `"{t}.{body}"`, every `v1` tried against every secret in constant
/// time, and `t` within five minutes of `now`. Any failure is the same 400
/// `invalid_signature`, so a caller learns nothing about which part was wrong.
pub fn verify_signature(
    header: Option<&str>,
    body: &[u8],
    secrets: &[String],
    now: DateTime<Utc>,
) -> Result<()> {
    let refuse = |detail: &str| Error::BadRequest {
        code: "invalid_signature",
        detail: detail.to_string(),
    };
    let header = header.ok_or_else(|| refuse("the Stripe-Signature header is missing"))?;
    let mut timestamp: Option<&str> = None;
    let mut signatures: Vec<Vec<u8>> = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = Some(t.trim()),
            Some(("v1", sig)) => {
                if let Ok(bytes) = hex::decode(sig.trim()) {
                    signatures.push(bytes);
                }
            }
            _ => {}
        }
    }
    let t = timestamp.ok_or_else(|| refuse("the Stripe-Signature header has no timestamp"))?;
    let seconds: i64 = t
        .parse()
        .map_err(|_| refuse("the Stripe-Signature timestamp is not a number"))?;
    if (now.timestamp() - seconds).abs() > SIGNATURE_TOLERANCE_SECS {
        return Err(refuse(
            "the Stripe-Signature timestamp is more than 300 seconds from the server's clock",
        ));
    }
    for secret in secrets {
        for signature in &signatures {
            let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
                .map_err(|_| Error::internal("HMAC takes keys of any length"))?;
            mac.update(t.as_bytes());
            mac.update(b".");
            mac.update(body);
            if mac.verify_slice(signature).is_ok() {
                return Ok(());
            }
        }
    }
    Err(refuse(
        "no v1 signature matches a configured webhook secret",
    ))
}

/// The envelope of a Stripe event; only what is used is read, so the Stripe API version the
/// webhook endpoint is pinned to may differ from the client's.
#[derive(Debug, Deserialize)]
struct EventEnvelope {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    data: EventData,
}

#[derive(Debug, Deserialize)]
struct EventData {
    object: serde_json::Value,
}

/// The fields of a PaymentIntent that the webhooks use; amounts in Stripe's units.
#[derive(Debug, Clone, Deserialize)]
struct PaymentIntentObject {
    id: String,
    amount: i64,
    #[serde(default)]
    amount_received: Option<i64>,
    currency: String,
    #[serde(default)]
    metadata: HashMap<String, String>,
    #[serde(default)]
    last_payment_error: Option<PaymentError>,
}

impl PaymentIntentObject {
    /// An amount of this PaymentIntent in the ISO minor units invoices keep, if it has an
    /// exact one.
    fn minor_units(&self, stripe_amount: i64) -> Option<i64> {
        billing::currency::CurrencyCode::parse(&self.currency.to_ascii_uppercase())
            .ok()?
            .from_stripe_amount(stripe_amount)
    }
}

#[derive(Debug, Clone, Deserialize)]
struct PaymentError {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    decline_code: Option<String>,
}

/// What was done with an event (the webhook's answer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Receipt {
    pub received: bool,
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    /// `applied`, `duplicate` (seen before: nothing done), `ignored` (a type or an invoice
    /// that is not ours to act on).
    pub outcome: &'static str,
}

/// Applies a verified event once: its id is recorded in the same transaction as its effect,
/// so a replay or a re-send answers 200 and changes nothing.
pub fn apply_event(conn: &mut DbConnection, clock: &dyn Clock, body: &[u8]) -> Result<Receipt> {
    let malformed = |e: serde_json::Error| Error::MalformedBody(format!("not a Stripe event: {e}"));
    let mut raw: serde_json::Value = serde_json::from_slice(body).map_err(malformed)?;
    replace_nul(&mut raw);
    // JSON of another shape: the field it breaks is named (422), as for any other body.
    let event: EventEnvelope = serde_path_to_error::deserialize(&raw).map_err(|e| {
        let path = e.path().to_string();
        Error::Validation(vec![field_error(&path, &e.into_inner())])
    })?;
    if event.id.is_empty() || event.id.chars().count() > 255 {
        return Err(Error::validation("id", "must be a Stripe event id"));
    }
    let intent = match event.event_type.as_str() {
        "payment_intent.succeeded" | "payment_intent.payment_failed" => {
            let mut object = event.data.object.clone();
            integral_numbers(&mut object);
            Some(
                serde_json::from_value::<PaymentIntentObject>(object).map_err(|e| {
                    Error::validation("data.object", format!("not a PaymentIntent: {e}"))
                })?,
            )
        }
        _ => None,
    };
    let outcome = transaction(conn, |conn| {
        let fresh = schema::payments::record_event(
            conn,
            &StripeEvent {
                id: event.id.clone(),
                event_type: event.event_type.clone(),
                received_at: db_time(clock.now()),
            },
        )?;
        if !fresh {
            return Ok("duplicate");
        }
        let applied = match (event.event_type.as_str(), &intent) {
            ("payment_intent.succeeded", Some(pi)) => succeeded(conn, clock, pi)?,
            ("payment_intent.payment_failed", Some(pi)) => failed(conn, clock, &event.id, pi)?,
            _ => false,
        };
        Ok(if applied { "applied" } else { "ignored" })
    })?;
    Ok(Receipt {
        received: true,
        id: event.id,
        event_type: event.event_type,
        outcome,
    })
}

/// The open invoice a PaymentIntent collects, locked, if it is ours and still open.
fn invoice_of(conn: &mut DbConnection, pi: &PaymentIntentObject) -> Result<Option<Invoice>> {
    let Some(invoice_id) = pi.metadata.get("invoice_id") else {
        return Ok(None);
    };
    let exists: i64 = invoices::table.find(invoice_id).count().get_result(conn)?;
    if exists == 0 {
        return Ok(None);
    }
    schema::locks::invoice(conn, invoice_id)?;
    Ok(Some(
        invoices::table
            .find(invoice_id)
            .select(Invoice::as_select())
            .first(conn)?,
    ))
}

/// `payment_intent.succeeded`: the invoice is paid, if it is still open and the payment
/// covers what is due in its currency. Returns whether anything changed.
fn succeeded(conn: &mut DbConnection, clock: &dyn Clock, pi: &PaymentIntentObject) -> Result<bool> {
    let Some(invoice) = invoice_of(conn, pi)? else {
        tracing::info!(payment_intent = %pi.id, "succeeded PaymentIntent names no invoice of ours");
        return Ok(false);
    };
    let stripe_received = pi.amount_received.unwrap_or(pi.amount);
    let exact = pi.minor_units(stripe_received);
    let received = exact.unwrap_or(0);
    let due = amount_due(&invoice);
    let unapplied = if invoice.status != "open" {
        Some(format!("the invoice is {}", invoice.status))
    } else if !pi.currency.eq_ignore_ascii_case(&invoice.currency) {
        Some(format!(
            "paid in {}, invoiced in {}",
            pi.currency.to_uppercase(),
            invoice.currency
        ))
    } else if exact.is_none() {
        Some(format!(
            "{stripe_received} in Stripe's units of {} has no exact amount in minor units",
            invoice.currency
        ))
    } else if received < due {
        Some(format!("{received} received, {due} due"))
    } else {
        None
    };
    if let Some(why) = unapplied {
        let already: i64 = payments::table
            .filter(payments::invoice_id.eq(&invoice.id))
            .filter(payments::method.eq(METHOD))
            .filter(payments::reference.eq(&pi.id))
            .filter(payments::status.eq("succeeded"))
            .count()
            .get_result(conn)?;
        if already == 0 {
            // Money arrived that does not settle the invoice: finance must look (a payment
            // on a paid or void invoice is owed back to the customer).
            tracing::warn!(
                invoice = %invoice.id,
                payment_intent = %pi.id,
                reason = %why,
                "Stripe payment not applied"
            );
            let entry = Entry::new(
                &invoice.organization_id,
                ACTOR,
                "invoice.payment_unapplied",
                &invoice.id,
            )
            .detail(json!({
                "payment_intent": pi.id,
                "amount": received,
                "stripe_amount": stripe_received,
                "currency": pi.currency,
                "reason": why,
            }));
            audit::record(conn, clock, entry)?;
        }
        return Ok(false);
    }
    record_payment(conn, clock, &invoice, METHOD, &pi.id)?;
    // More than is due (a credit note issued after the PaymentIntent was made) is owed back
    // to the customer, like a credit on a paid invoice: the audit entry keeps the excess.
    audit::record(
        conn,
        clock,
        Entry::new(&invoice.organization_id, ACTOR, "invoice.paid", &invoice.id).detail(json!({
            "method": METHOD,
            "payment_intent": pi.id,
            "amount": due,
            "received": received,
            "excess": received - due,
        })),
    )?;
    Ok(true)
}

/// `payment_intent.payment_failed`: a failed payment is recorded, the invoice stays open with
/// the failure on it, and the customer is told (e-mail to its admins and finance users, and
/// `invoice.payment_failed` to its webhook endpoints).
fn failed(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    event_id: &str,
    pi: &PaymentIntentObject,
) -> Result<bool> {
    let Some(invoice) = invoice_of(conn, pi)? else {
        tracing::info!(payment_intent = %pi.id, "failed PaymentIntent names no invoice of ours");
        return Ok(false);
    };
    if invoice.status != "open" {
        return Ok(false);
    }
    let reason = pi
        .last_payment_error
        .as_ref()
        .and_then(|e| {
            e.message
                .clone()
                .or_else(|| e.decline_code.clone())
                .or_else(|| e.code.clone())
        })
        .unwrap_or_else(|| "the payment failed".into());
    let attempted = pi
        .minor_units(pi.amount)
        .unwrap_or_else(|| amount_due(&invoice));
    let now = db_time(clock.now());
    diesel::insert_into(payments::table)
        .values(Payment {
            id: new_id("pay"),
            invoice_id: invoice.id.clone(),
            organization_id: invoice.organization_id.clone(),
            method: METHOD.into(),
            reference: pi.id.clone(),
            amount: attempted,
            status: "failed".into(),
            created_at: now,
        })
        .execute(conn)?;
    diesel::update(invoices::table.find(&invoice.id))
        .set((
            invoices::payment_failure.eq(&reason),
            invoices::updated_at.eq(now),
        ))
        .execute(conn)?;
    audit::record(
        conn,
        clock,
        Entry::new(
            &invoice.organization_id,
            ACTOR,
            "invoice.payment_failed",
            &invoice.id,
        )
        .detail(json!({"payment_intent": pi.id, "amount": attempted, "reason": reason})),
    )?;
    let source = format!("stripe\n{event_id}");
    super::notices::payment_failed(conn, clock, &source, &invoice.id, &reason)?;
    Ok(true)
}

/// The Stripe gateway for a secret key, if one is set (`None`: payments stay manual).
pub fn gateway(secret_key: Option<&str>, api_base: &str) -> Result<Option<Arc<Stripe>>, String> {
    match secret_key {
        None => Ok(None),
        Some(key) => Stripe::new(key, api_base).map(|s| Some(Arc::new(s))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn sign(secret: &str, t: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn signatures_are_checked_against_every_secret_and_every_v1() {
        let now = Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap();
        let t = now.timestamp();
        let body = br#"{"id":"evt_1"}"#;
        let secrets = vec!["whsec_old".to_string(), "whsec_new".to_string()];
        let good = sign("whsec_new", t, body);
        let bad = sign("whsec_other", t, body);
        let ok = |h: &str| verify_signature(Some(h), body, &secrets, now).is_ok();
        assert!(ok(&format!("t={t},v1={good}")));
        assert!(ok(&format!("t={t},v1={bad},v1={good}")), "any v1 may match");
        assert!(
            ok(&format!("t={t}, v0=abc, v1={good}")),
            "other schemes are skipped"
        );
        assert!(!ok(&format!("t={t},v1={bad}")));
        assert!(!ok(&format!("v1={good}")), "no timestamp");
        assert!(
            !ok(&format!("t={},v1={good}", t + 1)),
            "the timestamp is signed"
        );
        let late = now + Duration::seconds(301);
        let code = |r: Result<()>| match r {
            Err(Error::BadRequest { code, .. }) => code,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            code(verify_signature(
                Some(&format!("t={t},v1={good}")),
                body,
                &secrets,
                late
            )),
            "invalid_signature"
        );
        assert!(verify_signature(
            Some(&format!("t={t},v1={good}")),
            body,
            &secrets,
            now + Duration::seconds(300)
        )
        .is_ok());
        assert!(verify_signature(Some(&format!("t={t},v1={good}")), b"{}", &secrets, now).is_err());
        assert!(verify_signature(None, body, &secrets, now).is_err());
        assert!(verify_signature(Some(&format!("t={t},v1={good}")), body, &[], now).is_err());
    }

    #[test]
    fn retries_back_off_to_six_hours() {
        assert_eq!(backoff(1), Duration::seconds(30));
        assert_eq!(backoff(2), Duration::seconds(60));
        assert_eq!(backoff(5), Duration::seconds(480));
        assert_eq!(backoff(12), Duration::hours(6));
        let total: i64 = (1..MAX_TRIES).map(|t| backoff(t).num_seconds()).sum();
        assert!(
            total < 24 * 3600,
            "all retries inside Stripe's idempotency window: {total}"
        );
    }
}
