-- Billing periods and terms step from one fixed anchor (the first term's start), so month-end
-- clamping never drifts across renewals; and the term-end reminder is sent once per term.
ALTER TABLE subscriptions ADD COLUMN billing_anchor TIMESTAMP;
ALTER TABLE subscriptions ADD COLUMN term_end_reminded_at TIMESTAMP;
UPDATE subscriptions SET billing_anchor = term_start WHERE billing_anchor IS NULL;
