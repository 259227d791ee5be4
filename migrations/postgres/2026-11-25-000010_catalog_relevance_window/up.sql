-- Relevance ranks the most recently created matches (the window): walking this index
-- backwards, a search for a common word stops after the window instead of sorting every
-- match.
CREATE INDEX listings_catalog_created ON listings (state, created_at, id);
