-- A listing's categories and tags as words of a column of their own in the full-text index
-- ('c' or 't' and the value's UTF-8 bytes in hex), so a search narrowed to a category or a
-- tag is one full-text query instead of a test of each match's labels.
ALTER TABLE listings ADD COLUMN search_labels TEXT NOT NULL DEFAULT '';
UPDATE listings SET search_labels = trim(
    coalesce((SELECT group_concat('c' || lower(hex(value)), ' ') FROM json_each(listings.categories)), '')
    || ' ' ||
    coalesce((SELECT group_concat('t' || lower(hex(value)), ' ') FROM json_each(listings.tags)), ''));

DROP TRIGGER listings_fts_update;
DROP TRIGGER listings_fts_delete;
DROP TRIGGER listings_fts_insert;
DROP TABLE listings_fts;
CREATE VIRTUAL TABLE listings_fts USING fts5(search_document, search_labels, content = 'listings', content_rowid = 'rowid');
CREATE TRIGGER listings_fts_insert AFTER INSERT ON listings BEGIN
    INSERT INTO listings_fts (rowid, search_document, search_labels) VALUES (new.rowid, new.search_document, new.search_labels);
END;
CREATE TRIGGER listings_fts_delete AFTER DELETE ON listings BEGIN
    INSERT INTO listings_fts (listings_fts, rowid, search_document, search_labels) VALUES ('delete', old.rowid, old.search_document, old.search_labels);
END;
CREATE TRIGGER listings_fts_update AFTER UPDATE OF search_document, search_labels ON listings BEGIN
    INSERT INTO listings_fts (listings_fts, rowid, search_document, search_labels) VALUES ('delete', old.rowid, old.search_document, old.search_labels);
    INSERT INTO listings_fts (rowid, search_document, search_labels) VALUES (new.rowid, new.search_document, new.search_labels);
END;
INSERT INTO listings_fts (listings_fts) VALUES ('rebuild');
