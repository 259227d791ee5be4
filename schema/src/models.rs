//! Rows as Rust structs: one `Queryable` per table and one `Insertable` form where rows are created.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::schema::*;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = organizations)]
pub struct Organization {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub tax_rate_bps: Option<i32>,
    pub fee_bps: Option<i32>,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = users)]
pub struct User {
    pub id: String,
    pub organization_id: String,
    pub email: String,
    pub name: String,
    pub password_hash: String,
    pub role: String,
    pub created_at: NaiveDateTime,
    pub removed_at: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = api_keys)]
pub struct ApiKey {
    pub id: String,
    pub organization_id: String,
    pub user_id: String,
    pub name: String,
    pub key_hash: String,
    pub key_hint: String,
    pub scopes: String,
    pub created_at: NaiveDateTime,
    pub revoked_at: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = refresh_tokens)]
pub struct RefreshToken {
    pub id: String,
    pub organization_id: String,
    pub user_id: String,
    pub family_id: String,
    pub token_hash: String,
    pub created_at: NaiveDateTime,
    pub expires_at: NaiveDateTime,
    pub spent_at: Option<NaiveDateTime>,
    pub revoked_at: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = server_secrets)]
pub struct ServerSecret {
    pub id: String,
    pub purpose: String,
    pub secret: String,
    pub created_at: NaiveDateTime,
    pub retired_at: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = idempotency_keys)]
pub struct IdempotencyRecord {
    pub caller: String,
    pub method: String,
    pub path: String,
    pub idempotency_key: String,
    pub request_hash: String,
    pub state: String,
    pub response_status: Option<i32>,
    pub response_content_type: Option<String>,
    pub response_body: Option<Vec<u8>>,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = audit_events)]
pub struct AuditEvent {
    pub id: String,
    pub organization_id: String,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub grant_id: Option<String>,
    pub detail: String,
    pub client_address: Option<String>,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = listings)]
pub struct Listing {
    pub id: String,
    pub organization_id: String,
    pub title: String,
    pub summary: String,
    pub description: String,
    /// JSON array of strings.
    pub categories: String,
    /// JSON array of strings.
    pub tags: String,
    pub visibility: String,
    pub state: String,
    /// Title, summary, description and tags, for full-text search.
    pub search_document: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub published_at: Option<NaiveDateTime>,
    pub archived_at: Option<NaiveDateTime>,
    /// Its categories and tags as words for full-text search ([`crate::search::label_token`]).
    pub search_labels: String,
}

/// A listing as the API shows it: every column of [`Listing`] but the two search columns,
/// which only the database reads. Catalog pages read this: on PostgreSQL a long
/// `search_document` lives out of the row, and reading it cost a TOAST lookup per listing.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = listings)]
pub struct ListingShown {
    pub id: String,
    pub organization_id: String,
    pub title: String,
    pub summary: String,
    pub description: String,
    /// JSON array of strings.
    pub categories: String,
    /// JSON array of strings.
    pub tags: String,
    pub visibility: String,
    pub state: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub published_at: Option<NaiveDateTime>,
    pub archived_at: Option<NaiveDateTime>,
}

impl From<Listing> for ListingShown {
    fn from(l: Listing) -> Self {
        // Every field named: a column added to `Listing` does not compile here until it is
        // shown or left out on purpose.
        let Listing {
            id,
            organization_id,
            title,
            summary,
            description,
            categories,
            tags,
            visibility,
            state,
            search_document: _,
            created_at,
            updated_at,
            published_at,
            archived_at,
            search_labels: _,
        } = l;
        ListingShown {
            id,
            organization_id,
            title,
            summary,
            description,
            categories,
            tags,
            visibility,
            state,
            created_at,
            updated_at,
            published_at,
            archived_at,
        }
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = listing_labels)]
pub struct ListingLabel {
    pub listing_id: String,
    pub organization_id: String,
    pub kind: String,
    pub value: String,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = listing_access)]
pub struct ListingAccess {
    pub listing_id: String,
    pub organization_id: String,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = offers)]
pub struct Offer {
    pub id: String,
    pub listing_id: String,
    pub organization_id: String,
    pub name: String,
    pub currency: String,
    pub billing_interval: String,
    pub recurring_amount: i64,
    pub term_months: i32,
    /// JSON array of usage prices, as the API shows them.
    pub usage_prices: String,
    /// JSON array of metric names.
    pub free_metrics: String,
    pub trial_days: i32,
    pub requires_approval: bool,
    pub auto_renew_default: bool,
    pub private: bool,
    pub state: String,
    pub created_at: NaiveDateTime,
    pub archived_at: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = offer_access)]
pub struct OfferAccess {
    pub offer_id: String,
    pub organization_id: String,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = datasets)]
pub struct Dataset {
    pub id: String,
    pub listing_id: String,
    pub organization_id: String,
    pub name: String,
    pub description: String,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = revisions)]
pub struct Revision {
    pub id: String,
    pub dataset_id: String,
    pub listing_id: String,
    pub organization_id: String,
    pub state: String,
    pub comment: String,
    pub revoke_reason: Option<String>,
    pub created_at: NaiveDateTime,
    pub finalized_at: Option<NaiveDateTime>,
    pub revoked_at: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = assets)]
pub struct Asset {
    pub id: String,
    pub revision_id: String,
    pub dataset_id: String,
    pub listing_id: String,
    pub organization_id: String,
    pub name: String,
    pub media_type: String,
    pub size: i64,
    pub sha256: String,
    pub storage_key: String,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = subscriptions)]
pub struct Subscription {
    pub id: String,
    /// The subscriber.
    pub organization_id: String,
    pub provider_organization_id: String,
    pub listing_id: String,
    pub offer_id: String,
    pub status: String,
    pub message: String,
    pub decision_reason: Option<String>,
    /// JSON snapshot of the offer's prices, taken when the subscription becomes active.
    pub prices: Option<String>,
    pub trial_end: Option<NaiveDateTime>,
    pub term_start: Option<NaiveDateTime>,
    pub term_end: Option<NaiveDateTime>,
    pub current_period_start: Option<NaiveDateTime>,
    pub current_period_end: Option<NaiveDateTime>,
    pub auto_renew: bool,
    pub cancel_at: Option<NaiveDateTime>,
    pub request_expires_at: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub ended_at: Option<NaiveDateTime>,
    /// The first term's start: every period and term boundary is this plus whole months.
    pub billing_anchor: Option<NaiveDateTime>,
    pub term_end_reminded_at: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = grants)]
pub struct Grant {
    pub id: String,
    pub organization_id: String,
    pub subscription_id: String,
    pub listing_id: String,
    pub valid_from: NaiveDateTime,
    pub valid_until: NaiveDateTime,
    pub revoked_at: Option<NaiveDateTime>,
    pub suspended_at: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
}

// `treat_none_as_default_value = false` lets SQLite insert many rows in one statement
// (diesel otherwise inserts them one by one, in case a value is DEFAULT).
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = usage_events, treat_none_as_default_value = false)]
pub struct UsageEvent {
    /// The sending organization (the provider, or the subscriber for reads the server meters).
    pub organization_id: String,
    pub id: String,
    pub subscription_id: String,
    pub metric: String,
    pub quantity: i64,
    pub occurred_at: NaiveDateTime,
    /// The UTC day of `occurred_at`, `YYYY-MM-DD`.
    pub day: String,
    pub received_at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = webhook_endpoints)]
pub struct WebhookEndpoint {
    pub id: String,
    pub organization_id: String,
    pub url: String,
    /// JSON array of event types (`*` for all).
    pub events: String,
    /// The HMAC-SHA256 key deliveries are signed with (`whsec_…`).
    pub secret: String,
    pub created_at: NaiveDateTime,
    pub deleted_at: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = outbox)]
pub struct OutboxMessage {
    pub id: String,
    /// The organization the message goes to.
    pub organization_id: String,
    /// `email` or `webhook`.
    pub kind: String,
    /// The event the message tells of (one event fans out to several messages).
    pub event_id: String,
    /// JSON: the rendered e-mail, or the webhook's endpoint and event.
    pub payload: String,
    /// `pending`, `sent` or `failed` (gave up).
    pub status: String,
    /// Deliveries started so far (claiming one counts).
    pub attempts: i32,
    /// When a pending message is due; while a worker holds it, the end of its lease.
    pub next_attempt_at: NaiveDateTime,
    pub last_error: Option<String>,
    pub created_at: NaiveDateTime,
    pub sent_at: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = billing_runs)]
pub struct BillingRun {
    pub id: String,
    pub period: String,
    pub started_by: String,
    pub invoices_created: i32,
    pub invoices_updated: i32,
    pub invoices_removed: i32,
    /// JSON array of {customer, error} for customers that could not be rated.
    pub failures: String,
    pub created_at: NaiveDateTime,
    pub finished_at: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = invoices, treat_none_as_default_value = false)]
pub struct Invoice {
    pub id: String,
    /// The customer.
    pub organization_id: String,
    pub period: String,
    pub currency: String,
    pub status: String,
    pub number: Option<String>,
    pub tax_rate_bps: i32,
    pub subtotal: i64,
    pub tax: i64,
    pub total: i64,
    pub amount_paid: i64,
    /// Pre-tax amounts credited by credit notes.
    pub amount_credited: i64,
    pub tax_credited: i64,
    pub payment_failure: Option<String>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub finalized_at: Option<NaiveDateTime>,
    pub paid_at: Option<NaiveDateTime>,
    pub voided_at: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = invoice_lines, treat_none_as_default_value = false)]
pub struct InvoiceLine {
    pub id: String,
    pub invoice_id: String,
    pub organization_id: String,
    pub provider_organization_id: String,
    pub subscription_id: String,
    pub source: String,
    /// What is charged and for which service period, e.g. `recurring:2026-11-30T10:00:00`
    /// or `usage:queries:2026-11`; unique per invoice and subscription.
    pub charge_key: String,
    pub service_period: String,
    pub description: String,
    pub quantity: i64,
    pub unit_amount_decimal: Option<String>,
    pub amount: i64,
    /// JSON tier breakdown (usage lines).
    pub tiers: String,
    pub fee_bps: i32,
    pub position: i32,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = credit_notes)]
pub struct CreditNote {
    pub id: String,
    pub invoice_id: String,
    pub organization_id: String,
    pub reason: String,
    pub subtotal: i64,
    pub tax: i64,
    pub total: i64,
    pub created_by: String,
    pub created_at: NaiveDateTime,
    /// Set on a billing run's credit for late usage that lowered a finalized period's
    /// charge: which adjustment it is (unique per invoice). `None` on finance's own notes.
    pub adjustment_key: Option<String>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = credit_note_lines)]
pub struct CreditNoteLine {
    pub id: String,
    pub credit_note_id: String,
    pub invoice_line_id: String,
    pub provider_organization_id: String,
    pub amount: i64,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = payments)]
pub struct Payment {
    pub id: String,
    pub invoice_id: String,
    pub organization_id: String,
    pub method: String,
    pub reference: String,
    pub amount: i64,
    pub status: String,
    pub created_at: NaiveDateTime,
}

/// A collection attempt of an invoice (Stripe), run by the payment worker.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = payment_jobs)]
pub struct PaymentJob {
    pub id: String,
    pub invoice_id: String,
    /// The customer.
    pub organization_id: String,
    /// Which collection attempt of the invoice (1 for the one started by finalization); part
    /// of the idempotency key of the PaymentIntent.
    pub attempt: i32,
    /// What to collect, fixed when the job is written.
    pub amount: i64,
    pub currency: String,
    /// `pending`, `done`, `failed` (gave up or refused) or `cancelled` (nothing to collect).
    pub status: String,
    /// Runs started so far (claiming one counts).
    pub tries: i32,
    /// When a pending job is due; while a worker holds it, the end of its lease.
    pub next_attempt_at: NaiveDateTime,
    pub last_error: Option<String>,
    pub payment_intent_id: Option<String>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = stripe_customers)]
pub struct StripeCustomer {
    pub organization_id: String,
    pub customer_id: String,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = stripe_events)]
pub struct StripeEvent {
    pub id: String,
    pub event_type: String,
    pub received_at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = overdue_invoices)]
pub struct OverdueInvoice {
    pub invoice_id: String,
    pub organization_id: String,
    pub since: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = console_sessions)]
pub struct ConsoleSession {
    pub id: String,
    pub organization_id: String,
    pub user_id: String,
    pub token_hash: String,
    pub created_at: NaiveDateTime,
    pub last_seen_at: NaiveDateTime,
    pub expires_at: NaiveDateTime,
}
