-- The console's sign-in sessions: a random token in an HttpOnly cookie, kept here only as
-- its SHA-256 hash. A session ends at sign-out (row deleted), after an idle time, at an
-- absolute expiry, and at once when its user is removed (checked on every request).
CREATE TABLE console_sessions (
    id TEXT PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    user_id TEXT NOT NULL REFERENCES users (id),
    token_hash TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    last_seen_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL
);
CREATE UNIQUE INDEX console_sessions_hash ON console_sessions (token_hash);
CREATE INDEX console_sessions_user ON console_sessions (organization_id, user_id);
