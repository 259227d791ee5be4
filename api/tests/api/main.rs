//! API tests: each spawns the server on a random port over its own database and talks HTTP.
//! `TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres` runs them on PostgreSQL.

mod accounts;
mod assets;
mod billing;
mod catalog;
mod commerce;
mod console;
mod durability;
mod errors;
mod helpers;
mod idempotency;
mod lifecycle;
mod notifications;
mod operations;
mod payments;
mod reads;
mod tokens;
