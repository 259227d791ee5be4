DROP TABLE assets;
DROP TABLE revisions;
DROP TABLE datasets;
DROP TABLE offer_access;
DROP TABLE offers;
DROP TABLE listing_access;
DROP TABLE listing_labels;
DROP TABLE listings;
