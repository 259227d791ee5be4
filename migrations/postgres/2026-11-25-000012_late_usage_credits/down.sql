DROP INDEX credit_notes_adjustment;
ALTER TABLE credit_notes DROP COLUMN adjustment_key;
