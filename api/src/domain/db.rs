//! Running domain work against the database: transactions that retry when the database asks.

use std::time::Duration;

use diesel::Connection;
use schema::DbConnection;

use super::error::{Error, Result};

/// Busy SQLite writers (a deferred transaction whose snapshot went stale) and PostgreSQL
/// serialization failures get this many tries, with growing, jittered pauses (about 5 s in all).
const ATTEMPTS: u32 = 40;

/// Runs `work` in a transaction, retrying it from the start when the database reports a
/// serialization failure or (SQLite) a busy database; a client never sees those as a 500.
pub fn transaction<T>(
    conn: &mut DbConnection,
    work: impl Fn(&mut DbConnection) -> Result<T>,
) -> Result<T> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut retryable = false;
        let outcome = conn.transaction(|conn| {
            work(conn).map_err(|e| {
                retryable = matches!(e, Error::Unavailable(_));
                TxError(e)
            })
        });
        match outcome {
            Ok(v) => return Ok(v),
            Err(TxError(e)) if retryable && attempt < ATTEMPTS => {
                tracing::debug!(attempt, error = %e, "retrying transaction");
                let pause = (5 * u64::from(attempt * attempt)).min(200);
                let jitter = rand::Rng::gen_range(&mut rand::thread_rng(), 0..=pause / 2);
                std::thread::sleep(Duration::from_millis(pause / 2 + jitter));
            }
            Err(TxError(e)) => return Err(e),
        }
    }
}

/// Carries a domain error through diesel's transaction, which needs `From<diesel::Error>`.
struct TxError(Error);

impl From<diesel::result::Error> for TxError {
    fn from(e: diesel::result::Error) -> Self {
        TxError(Error::from(e))
    }
}
