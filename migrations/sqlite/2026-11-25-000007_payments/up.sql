-- Payments: collection jobs started by finalization, the Stripe customer of each
-- organization, the Stripe events already applied, and the invoices found overdue.

-- One job per collection attempt of an invoice, written in the finalizing transaction and
-- run afterwards by a worker (claimed with a lease, as the outbox is). The amount and
-- currency are fixed when the job is written, so every retry sends Stripe the same request
-- under the same idempotency key.
CREATE TABLE payment_jobs (
    id TEXT PRIMARY KEY NOT NULL,
    invoice_id TEXT NOT NULL REFERENCES invoices (id),
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    attempt INTEGER NOT NULL,
    amount BIGINT NOT NULL,
    currency TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'done', 'failed', 'cancelled')),
    tries INTEGER NOT NULL,
    next_attempt_at TIMESTAMP NOT NULL,
    last_error TEXT,
    payment_intent_id TEXT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE UNIQUE INDEX payment_jobs_attempt ON payment_jobs (invoice_id, attempt);
-- The worker's question: which pending jobs are due?
CREATE INDEX payment_jobs_due ON payment_jobs (status, next_attempt_at);

-- The Stripe customer that pays an organization's invoices.
CREATE TABLE stripe_customers (
    organization_id TEXT PRIMARY KEY NOT NULL REFERENCES organizations (id),
    customer_id TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE UNIQUE INDEX stripe_customers_customer ON stripe_customers (customer_id);

-- Stripe events already applied (by event id), written in the transaction of their effect,
-- so a replayed or re-sent event changes nothing.
CREATE TABLE stripe_events (
    id TEXT PRIMARY KEY NOT NULL,
    event_type TEXT NOT NULL,
    received_at TIMESTAMP NOT NULL
);

-- Open invoices unpaid past the grace period; while an organization has one, its grants
-- stay suspended. Paying (or voiding, or crediting in full) the invoice removes its row.
CREATE TABLE overdue_invoices (
    invoice_id TEXT PRIMARY KEY NOT NULL REFERENCES invoices (id),
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    since TIMESTAMP NOT NULL
);
CREATE INDEX overdue_invoices_organization ON overdue_invoices (organization_id);
-- Which organizations have suspended grants (the grace pass restores them).
CREATE INDEX grants_suspended ON grants (suspended_at);
