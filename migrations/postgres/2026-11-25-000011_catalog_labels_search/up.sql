-- A listing's categories and tags as words ('c' or 't' and the value's UTF-8 bytes in hex),
-- the column SQLite's full-text index searches for category and tag filters; kept here so
-- both schemas stay alike.
ALTER TABLE listings ADD COLUMN search_labels TEXT NOT NULL DEFAULT '';
UPDATE listings SET search_labels = trim(
    coalesce((SELECT string_agg('c' || encode(convert_to(value, 'UTF8'), 'hex'), ' ')
              FROM jsonb_array_elements_text(listings.categories::jsonb) AS value), '')
    || ' ' ||
    coalesce((SELECT string_agg('t' || encode(convert_to(value, 'UTF8'), 'hex'), ' ')
              FROM jsonb_array_elements_text(listings.tags::jsonb) AS value), ''));
