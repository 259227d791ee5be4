ALTER TABLE listings DROP COLUMN search_labels;
