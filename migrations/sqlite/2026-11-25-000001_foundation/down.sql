DROP TABLE audit_events;
DROP TABLE idempotency_keys;
DROP TABLE server_secrets;
DROP TABLE refresh_tokens;
DROP TABLE api_keys;
DROP TABLE users;
DROP TABLE organizations;
