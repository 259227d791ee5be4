DROP INDEX grants_listing;
DROP TABLE outbox;
DROP TABLE webhook_endpoints;
