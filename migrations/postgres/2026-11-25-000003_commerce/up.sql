-- Commerce: subscriptions, the access grants they create, usage events and daily totals.
CREATE TABLE subscriptions (
    id TEXT PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    provider_organization_id TEXT NOT NULL REFERENCES organizations (id),
    listing_id TEXT NOT NULL REFERENCES listings (id),
    offer_id TEXT NOT NULL REFERENCES offers (id),
    status TEXT NOT NULL CHECK (status IN ('pending_approval', 'active', 'rejected', 'expired', 'cancelled')),
    message TEXT NOT NULL,
    decision_reason TEXT,
    prices TEXT,
    trial_end TIMESTAMP,
    term_start TIMESTAMP,
    term_end TIMESTAMP,
    current_period_start TIMESTAMP,
    current_period_end TIMESTAMP,
    auto_renew BOOLEAN NOT NULL,
    cancel_at TIMESTAMP,
    request_expires_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    ended_at TIMESTAMP
);
-- Never two live subscriptions of one organization to one offer.
CREATE UNIQUE INDEX subscriptions_one_live ON subscriptions (organization_id, offer_id)
    WHERE status IN ('pending_approval', 'active');
CREATE INDEX subscriptions_subscriber ON subscriptions (organization_id, created_at, id);
CREATE INDEX subscriptions_provider ON subscriptions (provider_organization_id, created_at, id);
CREATE INDEX subscriptions_term_end ON subscriptions (status, term_end);

CREATE TABLE grants (
    id TEXT PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    subscription_id TEXT NOT NULL REFERENCES subscriptions (id),
    listing_id TEXT NOT NULL REFERENCES listings (id),
    valid_from TIMESTAMP NOT NULL,
    valid_until TIMESTAMP NOT NULL,
    revoked_at TIMESTAMP,
    suspended_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL
);
CREATE UNIQUE INDEX grants_subscription ON grants (subscription_id);
CREATE INDEX grants_reader ON grants (organization_id, listing_id, valid_from);

-- Usage events; ids are unique per sending organization, forever.
CREATE TABLE usage_events (
    organization_id TEXT NOT NULL,
    id TEXT NOT NULL,
    subscription_id TEXT NOT NULL REFERENCES subscriptions (id),
    metric TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    occurred_at TIMESTAMP NOT NULL,
    day TEXT NOT NULL,
    received_at TIMESTAMP NOT NULL,
    PRIMARY KEY (organization_id, id)
);
CREATE INDEX usage_events_subscription ON usage_events (subscription_id, metric, day);
