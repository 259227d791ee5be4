-- Usage summed per calendar month (UTC), subscription and metric, kept as events are
-- stored: in the same transaction, by the one function that inserts usage events
-- (schema::usage::insert_new), for the events it inserted. A billing run reads these sums
-- instead of the month's events, so its time follows the subscriptions it bills, not the
-- events they sent. Derived data: the events stay the record.
CREATE TABLE usage_monthly (
    month TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    metric TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    PRIMARY KEY (month, subscription_id, metric)
) WITHOUT ROWID;

INSERT INTO usage_monthly (month, subscription_id, metric, quantity)
SELECT substr(day, 1, 7), subscription_id, metric, SUM(quantity)
FROM usage_events
GROUP BY substr(day, 1, 7), subscription_id, metric;
