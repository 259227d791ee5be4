//! The use cases and their rules. No actix, no HTML: typed inputs, a connection, a result.

pub mod accounts;
pub mod assets;
pub mod audit;
pub mod auth;
pub mod catalog;
pub mod clock;
pub mod commerce;
pub mod console_sessions;
pub mod db;
pub mod error;
pub mod idempotency;
pub mod ids;
pub mod invoicing;
pub mod markdown;
pub mod outbox;
pub mod pagination;
pub mod passwords;
pub mod secrets;
pub mod storage;
pub mod tokens;
pub mod validate;
pub mod webhooks;

pub use error::{Error, FieldError, Result};
