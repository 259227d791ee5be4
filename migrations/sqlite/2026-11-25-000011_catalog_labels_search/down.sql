DROP TRIGGER listings_fts_update;
DROP TRIGGER listings_fts_delete;
DROP TRIGGER listings_fts_insert;
DROP TABLE listings_fts;
CREATE VIRTUAL TABLE listings_fts USING fts5(search_document, content = 'listings', content_rowid = 'rowid');
CREATE TRIGGER listings_fts_insert AFTER INSERT ON listings BEGIN
    INSERT INTO listings_fts (rowid, search_document) VALUES (new.rowid, new.search_document);
END;
CREATE TRIGGER listings_fts_delete AFTER DELETE ON listings BEGIN
    INSERT INTO listings_fts (listings_fts, rowid, search_document) VALUES ('delete', old.rowid, old.search_document);
END;
CREATE TRIGGER listings_fts_update AFTER UPDATE OF search_document ON listings BEGIN
    INSERT INTO listings_fts (listings_fts, rowid, search_document) VALUES ('delete', old.rowid, old.search_document);
    INSERT INTO listings_fts (rowid, search_document) VALUES (new.rowid, new.search_document);
END;
INSERT INTO listings_fts (listings_fts) VALUES ('rebuild');
ALTER TABLE listings DROP COLUMN search_labels;
