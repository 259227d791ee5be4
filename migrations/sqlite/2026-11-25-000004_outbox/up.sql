-- Outbox: e-mails and outgoing webhooks, written in the transaction of the change that
-- causes them and delivered by a worker with retries; and the webhook endpoints they go to.
CREATE TABLE webhook_endpoints (
    id TEXT PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    secret TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    deleted_at TIMESTAMP
);
CREATE INDEX webhook_endpoints_organization ON webhook_endpoints (organization_id, created_at, id);

CREATE TABLE outbox (
    id TEXT PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    kind TEXT NOT NULL CHECK (kind IN ('email', 'webhook')),
    event_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'failed')),
    attempts INTEGER NOT NULL,
    next_attempt_at TIMESTAMP NOT NULL,
    last_error TEXT,
    created_at TIMESTAMP NOT NULL,
    sent_at TIMESTAMP
);
-- The worker's question: which pending messages are due?
CREATE INDEX outbox_due ON outbox (status, next_attempt_at);
-- Has this organization already been told of this event? (reminders are sent once)
CREATE INDEX outbox_event ON outbox (organization_id, event_id);

-- Who holds a grant on a listing (told when one of its revisions is revoked).
CREATE INDEX grants_listing ON grants (listing_id);
