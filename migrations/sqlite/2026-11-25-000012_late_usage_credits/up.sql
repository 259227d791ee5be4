-- A credit note a billing run issues when late usage lowers what a finalized period owes
-- (a volume price falling to a cheaper tier) carries the adjustment it makes: the
-- subscription, the charge and the quantity now rated. Each adjustment is issued once per
-- invoice, however many runs see it, at once or one after another.
ALTER TABLE credit_notes ADD COLUMN adjustment_key TEXT;
CREATE UNIQUE INDEX credit_notes_adjustment ON credit_notes (invoice_id, adjustment_key);
