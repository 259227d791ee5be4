-- An e-mail address belongs to at most one live user: a removed member's address can be
-- added again, or sign up anew (the removed row stays, for the audit trail and history).
DROP INDEX users_email;
CREATE UNIQUE INDEX users_email_live ON users (email) WHERE removed_at IS NULL;
