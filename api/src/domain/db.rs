//! Running domain work against the database: transactions that retry when the database asks.

use std::cell::Cell;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use diesel::Connection;
use schema::DbConnection;

use super::error::{Error, Result};

/// Busy SQLite writers (a deferred transaction whose snapshot went stale) and PostgreSQL
/// serialization failures get this many tries, with growing, jittered pauses (about 5 s in all).
const ATTEMPTS: u32 = 40;

/// SQLite lets one writer in at a time, and a transaction that read before another wrote
/// finds the database busy when it writes, which only a retry from the start cures. Taking
/// turns inside the process before `BEGIN` spares this server's own connections those
/// collisions (and their retries); other processes on the same file still meet the busy
/// timeout and the retries below.
static SQLITE_TURN: Mutex<()> = Mutex::new(());

thread_local! {
    /// Whether this thread holds `SQLITE_TURN` (a transaction inside a transaction).
    static HOLDS_SQLITE_TURN: Cell<bool> = const { Cell::new(false) };
}

struct SqliteTurn(#[allow(dead_code)] MutexGuard<'static, ()>);

impl SqliteTurn {
    fn take(conn: &DbConnection) -> Option<SqliteTurn> {
        if !matches!(conn, DbConnection::Sqlite(_)) || HOLDS_SQLITE_TURN.get() {
            return None;
        }
        let guard = SQLITE_TURN.lock().unwrap_or_else(PoisonError::into_inner);
        HOLDS_SQLITE_TURN.set(true);
        Some(SqliteTurn(guard))
    }
}

impl Drop for SqliteTurn {
    fn drop(&mut self) {
        HOLDS_SQLITE_TURN.set(false);
    }
}

/// Runs `work` in a transaction, retrying it from the start when the database reports a
/// serialization failure or (SQLite) a busy database; a client never sees those as a 500.
pub fn transaction<T>(
    conn: &mut DbConnection,
    work: impl Fn(&mut DbConnection) -> Result<T>,
) -> Result<T> {
    let _turn = SqliteTurn::take(conn);
    let mut attempt = 0;
    loop {
        attempt += 1;
        match attempt_transaction(conn, &work) {
            Err(e @ Error::Unavailable(_)) if attempt < ATTEMPTS => {
                tracing::debug!(attempt, error = %e, "retrying transaction");
                let pause = (5 * u64::from(attempt * attempt)).min(200);
                let jitter = rand::Rng::gen_range(&mut rand::thread_rng(), 0..=pause / 2);
                std::thread::sleep(Duration::from_millis(pause / 2 + jitter));
            }
            outcome => return outcome,
        }
    }
}

/// Runs `work`, which opens a transaction of its own (SQLite: `BEGIN IMMEDIATE`), in this
/// instance's writers' turn on SQLite, as [`transaction`] does.
pub fn in_writers_turn<T>(
    conn: &mut DbConnection,
    work: impl FnOnce(&mut DbConnection) -> Result<T>,
) -> Result<T> {
    let _turn = SqliteTurn::take(conn);
    work(conn)
}

/// Runs `work` in a transaction once, without retrying: for a caller that has its own
/// way to go on when the transaction fails.
pub fn transaction_once<T>(
    conn: &mut DbConnection,
    work: impl Fn(&mut DbConnection) -> Result<T>,
) -> Result<T> {
    let _turn = SqliteTurn::take(conn);
    attempt_transaction(conn, &work)
}

/// Runs `work`'s reads against one snapshot of the database, so that several statements
/// agree (PostgreSQL: a read-only repeatable-read transaction; SQLite: a deferred
/// transaction, which never writes, so it needs no turn and is never busy).
pub fn read_snapshot<T>(
    conn: &mut DbConnection,
    work: impl FnOnce(&mut DbConnection) -> Result<T>,
) -> Result<T> {
    conn.transaction(|conn| {
        if matches!(conn, DbConnection::Postgresql(_)) {
            diesel::RunQueryDsl::execute(
                diesel::sql_query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"),
                conn,
            )?;
        }
        work(conn).map_err(TxError)
    })
    .map_err(|TxError(e)| e)
}

fn attempt_transaction<T>(
    conn: &mut DbConnection,
    work: &impl Fn(&mut DbConnection) -> Result<T>,
) -> Result<T> {
    conn.transaction(|conn| work(conn).map_err(TxError))
        .map_err(|TxError(e)| e)
}

/// Carries a domain error through diesel's transaction, which needs `From<diesel::Error>`.
struct TxError(Error);

impl From<diesel::result::Error> for TxError {
    fn from(e: diesel::result::Error) -> Self {
        TxError(Error::from(e))
    }
}
