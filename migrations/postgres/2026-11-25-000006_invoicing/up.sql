-- Invoicing: billing runs, invoices and their lines, credit notes, payments, numbering.
CREATE TABLE billing_runs (
    id TEXT PRIMARY KEY NOT NULL,
    period TEXT NOT NULL,
    started_by TEXT NOT NULL,
    invoices_created INTEGER NOT NULL,
    invoices_updated INTEGER NOT NULL,
    invoices_removed INTEGER NOT NULL,
    failures TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    finished_at TIMESTAMP
);
CREATE INDEX billing_runs_period ON billing_runs (period, created_at);

CREATE TABLE invoices (
    id TEXT PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    period TEXT NOT NULL,
    currency TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('draft', 'open', 'paid', 'void')),
    number TEXT,
    tax_rate_bps INTEGER NOT NULL,
    subtotal BIGINT NOT NULL,
    tax BIGINT NOT NULL,
    total BIGINT NOT NULL,
    amount_paid BIGINT NOT NULL,
    amount_credited BIGINT NOT NULL,
    tax_credited BIGINT NOT NULL,
    payment_failure TEXT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    finalized_at TIMESTAMP,
    paid_at TIMESTAMP,
    voided_at TIMESTAMP
);
-- One live invoice per customer, period and currency; a void one frees the period.
CREATE UNIQUE INDEX invoices_one_per_period ON invoices (organization_id, period, currency) WHERE status <> 'void';
CREATE UNIQUE INDEX invoices_number ON invoices (number);
CREATE INDEX invoices_customer ON invoices (organization_id, created_at, id);
CREATE INDEX invoices_period ON invoices (period, status);

CREATE TABLE invoice_lines (
    id TEXT PRIMARY KEY NOT NULL,
    invoice_id TEXT NOT NULL REFERENCES invoices (id) ON DELETE CASCADE,
    organization_id TEXT NOT NULL,
    provider_organization_id TEXT NOT NULL,
    subscription_id TEXT NOT NULL REFERENCES subscriptions (id),
    source TEXT NOT NULL CHECK (source IN ('recurring', 'usage', 'late_recurring', 'late_usage')),
    charge_key TEXT NOT NULL,
    service_period TEXT NOT NULL,
    description TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    unit_amount_decimal TEXT,
    amount BIGINT NOT NULL,
    tiers TEXT NOT NULL,
    fee_bps INTEGER NOT NULL,
    position INTEGER NOT NULL,
    created_at TIMESTAMP NOT NULL
);
-- A charge (subscription, what, which service period) appears once on an invoice.
CREATE UNIQUE INDEX invoice_lines_charge ON invoice_lines (invoice_id, subscription_id, charge_key);
CREATE INDEX invoice_lines_subscription ON invoice_lines (subscription_id, charge_key);
CREATE INDEX invoice_lines_provider ON invoice_lines (provider_organization_id);

CREATE TABLE credit_notes (
    id TEXT PRIMARY KEY NOT NULL,
    invoice_id TEXT NOT NULL REFERENCES invoices (id),
    organization_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    subtotal BIGINT NOT NULL,
    tax BIGINT NOT NULL,
    total BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX credit_notes_invoice ON credit_notes (invoice_id);

CREATE TABLE credit_note_lines (
    id TEXT PRIMARY KEY NOT NULL,
    credit_note_id TEXT NOT NULL REFERENCES credit_notes (id),
    invoice_line_id TEXT NOT NULL REFERENCES invoice_lines (id),
    provider_organization_id TEXT NOT NULL,
    amount BIGINT NOT NULL
);
CREATE INDEX credit_note_lines_line ON credit_note_lines (invoice_line_id);

CREATE TABLE payments (
    id TEXT PRIMARY KEY NOT NULL,
    invoice_id TEXT NOT NULL REFERENCES invoices (id),
    organization_id TEXT NOT NULL,
    method TEXT NOT NULL,
    reference TEXT NOT NULL,
    amount BIGINT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('succeeded', 'failed')),
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX payments_invoice ON payments (invoice_id);

-- Gap-free invoice numbers: one counter row per sequence, updated in the finalizing transaction.
CREATE TABLE invoice_counters (
    name TEXT PRIMARY KEY NOT NULL,
    value BIGINT NOT NULL
);
