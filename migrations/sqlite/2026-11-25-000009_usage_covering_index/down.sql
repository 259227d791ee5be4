DROP INDEX usage_events_subscription;
CREATE INDEX usage_events_subscription ON usage_events (subscription_id, metric, day);
