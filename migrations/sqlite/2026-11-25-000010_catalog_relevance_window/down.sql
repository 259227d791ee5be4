DROP INDEX listings_catalog_created;
