ALTER TABLE subscriptions DROP COLUMN term_end_reminded_at;
ALTER TABLE subscriptions DROP COLUMN billing_anchor;
