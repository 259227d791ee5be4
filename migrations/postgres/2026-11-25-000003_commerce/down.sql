DROP TABLE usage_events;
DROP TABLE grants;
DROP TABLE subscriptions;
