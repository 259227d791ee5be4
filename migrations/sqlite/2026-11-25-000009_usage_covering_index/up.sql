-- The billing run's usage query (per subscription and metric, over a month) and the daily
-- usage report both read only this index, never the table.
DROP INDEX usage_events_subscription;
CREATE INDEX usage_events_subscription ON usage_events (subscription_id, metric, day, occurred_at, quantity);
