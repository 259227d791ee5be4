-- PostgreSQL's index for the relevance window, kept here so both schemas stay alike;
-- SQLite's relevance search walks listings_fts by rowid (the order of creation) instead.
CREATE INDEX listings_catalog_created ON listings (state, created_at, id);
