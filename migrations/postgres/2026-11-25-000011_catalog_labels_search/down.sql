DROP INDEX listings_labels_search;
ALTER TABLE listings DROP COLUMN label_vector;
ALTER TABLE listings DROP COLUMN search_labels;
ALTER TABLE listings
    ALTER COLUMN search_vector SET STORAGE EXTENDED,
    ALTER COLUMN search_document SET STORAGE EXTENDED,
    ALTER COLUMN description SET STORAGE EXTENDED;
