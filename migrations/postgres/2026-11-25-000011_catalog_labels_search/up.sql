-- The relevance window reads each walked listing's search_vector and ranks it: kept in the
-- row (MAIN), with the long text columns moved out of it when a row grows past the TOAST
-- threshold, instead of the vector. Rows written from here on follow this; existing rows
-- follow it once the table is rewritten, which adding the STORED column label_vector below
-- does (a rewrite stores every value afresh; an UPDATE would keep an unchanged
-- search_vector where it is). So these settings must come before that column.
ALTER TABLE listings
    ALTER COLUMN search_vector SET STORAGE MAIN,
    ALTER COLUMN search_document SET STORAGE EXTERNAL,
    ALTER COLUMN description SET STORAGE EXTERNAL;

-- A listing's categories and tags as words ('c' or 't' and the value's UTF-8 bytes in
-- hex), with a GIN index of their own, so a search narrowed to a category or a tag is one
-- index lookup for words and labels together (SQLite: a column of listings_fts).
ALTER TABLE listings ADD COLUMN search_labels TEXT NOT NULL DEFAULT '';
ALTER TABLE listings ADD COLUMN label_vector tsvector
    GENERATED ALWAYS AS (to_tsvector('simple', search_labels)) STORED;
UPDATE listings SET search_labels = trim(
    coalesce((SELECT string_agg('c' || encode(convert_to(value, 'UTF8'), 'hex'), ' ')
              FROM jsonb_array_elements_text(listings.categories::jsonb) AS value), '')
    || ' ' ||
    coalesce((SELECT string_agg('t' || encode(convert_to(value, 'UTF8'), 'hex'), ' ')
              FROM jsonb_array_elements_text(listings.tags::jsonb) AS value), ''));
CREATE INDEX listings_labels_search ON listings USING GIN (label_vector);
