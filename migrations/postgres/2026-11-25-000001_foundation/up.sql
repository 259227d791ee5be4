-- Foundation: organizations, users, credentials, server secrets, idempotency, audit.
CREATE TABLE organizations (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('customer', 'platform')),
    tax_rate_bps INTEGER,
    fee_bps INTEGER,
    created_at TIMESTAMP NOT NULL
);
-- At most one platform organization.
CREATE UNIQUE INDEX organizations_one_platform ON organizations (kind) WHERE kind = 'platform';

CREATE TABLE users (
    id TEXT PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    email TEXT NOT NULL,
    name TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin', 'member', 'finance', 'operator')),
    created_at TIMESTAMP NOT NULL,
    removed_at TIMESTAMP
);
CREATE UNIQUE INDEX users_email ON users (email);
CREATE INDEX users_organization ON users (organization_id, created_at, id);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    user_id TEXT NOT NULL REFERENCES users (id),
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL,
    key_hint TEXT NOT NULL,
    scopes TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    revoked_at TIMESTAMP
);
CREATE UNIQUE INDEX api_keys_hash ON api_keys (key_hash);
CREATE INDEX api_keys_organization ON api_keys (organization_id, created_at, id);

CREATE TABLE refresh_tokens (
    id TEXT PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    user_id TEXT NOT NULL REFERENCES users (id),
    family_id TEXT NOT NULL,
    token_hash TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    spent_at TIMESTAMP,
    revoked_at TIMESTAMP
);
CREATE UNIQUE INDEX refresh_tokens_hash ON refresh_tokens (token_hash);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);

-- Secrets the server generates (token and URL signing keys), shared by every instance.
CREATE TABLE server_secrets (
    id TEXT PRIMARY KEY NOT NULL,
    purpose TEXT NOT NULL,
    secret TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    retired_at TIMESTAMP
);
CREATE UNIQUE INDEX server_secrets_current ON server_secrets (purpose) WHERE retired_at IS NULL;

CREATE TABLE idempotency_keys (
    caller TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('in_flight', 'completed', 'not_stored')),
    response_status INTEGER,
    response_content_type TEXT,
    response_body BYTEA,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (caller, method, path, idempotency_key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

CREATE TABLE audit_events (
    id TEXT PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    grant_id TEXT,
    detail TEXT NOT NULL,
    client_address TEXT,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX audit_events_organization ON audit_events (organization_id, created_at);
