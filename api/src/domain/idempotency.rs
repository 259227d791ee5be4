//! Idempotency keys: the first response to a (caller, method, path, key) is kept with a hash
//! of its request; a retry replays it, a different request under the same key is refused.

use chrono::Duration;
use diesel::prelude::*;
use schema::models::IdempotencyRecord;
use schema::schema::idempotency_keys as ik;
use schema::DbConnection;

use super::clock::{db_time, Clock};
use super::db::transaction;
use super::error::{Error, Result};

/// How long a request may stay in flight before its key is considered abandoned (a crash).
const ABANDONED_AFTER_SECS: i64 = 120;
/// Keys are kept at least 24 hours; they are purged after this many.
pub const RETENTION_HOURS: i64 = 48;
pub const MAX_KEY_LEN: usize = 255;

/// The row of one request key, as a diesel query (`update`/`delete` need the table form).
macro_rules! row_of {
    ($key:expr) => {
        ik::table
            .filter(ik::caller.eq(&$key.caller))
            .filter(ik::method.eq(&$key.method))
            .filter(ik::path.eq(&$key.path))
            .filter(ik::idempotency_key.eq(&$key.key))
    };
}

#[derive(Debug, Clone)]
pub struct RequestKey {
    pub caller: String,
    pub method: String,
    pub path: String,
    pub key: String,
}

impl RequestKey {
    /// Checks the client's key: 1–255 visible ASCII characters.
    pub fn new(caller: String, method: String, path: String, key: &str) -> Result<RequestKey> {
        if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid_key());
        }
        Ok(RequestKey {
            caller,
            method,
            path,
            key: key.to_string(),
        })
    }
}

pub fn invalid_key() -> Error {
    Error::BadRequest {
        code: "invalid_idempotency_key",
        detail: format!("Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"),
    }
}

#[derive(Debug, Clone)]
pub struct StoredResponse {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

#[derive(Debug)]
pub enum Begin {
    /// First time: run the request, then `complete`, `mark_not_stored` or `abandon`.
    Proceed,
    Replay(StoredResponse),
}

fn find(conn: &mut DbConnection, key: &RequestKey) -> QueryResult<Option<IdempotencyRecord>> {
    row_of!(key)
        .select(IdempotencyRecord::as_select())
        .first(conn)
        .optional()
}

/// Claims the key for this request, or says what to answer instead.
pub fn begin(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    key: &RequestKey,
    request_hash: &str,
) -> Result<Begin> {
    let now = clock.now();
    let row = IdempotencyRecord {
        caller: key.caller.clone(),
        method: key.method.clone(),
        path: key.path.clone(),
        idempotency_key: key.key.clone(),
        request_hash: request_hash.to_string(),
        state: "in_flight".into(),
        response_status: None,
        response_content_type: None,
        response_body: None,
        created_at: db_time(now),
    };
    // In a savepoint of its own: inside a caller's transaction (`once`), a key already
    // taken must not abort the transaction (PostgreSQL would refuse every later statement).
    let inserted =
        conn.transaction(|conn| diesel::insert_into(ik::table).values(&row).execute(conn));
    match inserted {
        Ok(_) => return Ok(Begin::Proceed),
        Err(e) if schema::is_unique_violation(&e) => {}
        Err(e) => return Err(e.into()),
    }
    let existing = find(conn, key)?
        .ok_or_else(|| Error::conflict("idempotency_key_in_use", "retry the request"))?;
    if existing.request_hash != request_hash {
        return Err(Error::IdempotencyMismatch(
            "this Idempotency-Key was used with a different request; use a new key".into(),
        ));
    }
    match existing.state.as_str() {
        "completed" => Ok(Begin::Replay(StoredResponse {
            status: existing.response_status.unwrap_or(200) as u16,
            content_type: existing.response_content_type,
            body: existing.response_body.unwrap_or_default(),
        })),
        "not_stored" => Err(Error::conflict(
            "idempotency_key_used",
            "this request's response carried a secret and was not stored; use a new Idempotency-Key",
        )),
        _ if existing.created_at < db_time(now - Duration::seconds(ABANDONED_AFTER_SECS)) => {
            // The first attempt died mid-flight; take the key over, once.
            let taken = diesel::update(
                row_of!(key)
                    .filter(ik::state.eq("in_flight"))
                    .filter(ik::created_at.eq(existing.created_at)),
            )
            .set(ik::created_at.eq(db_time(now)))
            .execute(conn)?;
            if taken == 1 {
                Ok(Begin::Proceed)
            } else {
                Err(in_flight())
            }
        }
        _ => Err(in_flight()),
    }
}

/// Runs `work` once for this key, in one transaction with the key: a repeat of the same
/// request after it succeeded does nothing (`Ok(None)`), one that arrives meanwhile waits for
/// it, and a failure leaves no trace. For callers that answer the same way each time (the
/// console's forms), so no response is stored.
pub fn once<T>(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    key: &RequestKey,
    request_hash: &str,
    work: impl Fn(&mut DbConnection) -> Result<T>,
) -> Result<Option<T>> {
    transaction(conn, |conn| {
        if let Begin::Replay(_) = begin(conn, clock, key, request_hash)? {
            return Ok(None);
        }
        let done = work(conn)?;
        let answered = StoredResponse {
            status: 200,
            content_type: None,
            body: Vec::new(),
        };
        complete(conn, key, &answered)?;
        Ok(Some(done))
    })
}

fn in_flight() -> Error {
    Error::conflict(
        "idempotency_key_in_flight",
        "a request with this Idempotency-Key is still being processed",
    )
}

/// Stores the response, so retries replay it.
pub fn complete(
    conn: &mut DbConnection,
    key: &RequestKey,
    response: &StoredResponse,
) -> Result<()> {
    diesel::update(row_of!(key))
        .set((
            ik::state.eq("completed"),
            ik::response_status.eq(i32::from(response.status)),
            ik::response_content_type.eq(&response.content_type),
            ik::response_body.eq(&response.body),
        ))
        .execute(conn)?;
    Ok(())
}

/// The response carried a secret: keep the key spent but store nothing.
pub fn mark_not_stored(conn: &mut DbConnection, key: &RequestKey) -> Result<()> {
    diesel::update(row_of!(key))
        .set(ik::state.eq("not_stored"))
        .execute(conn)?;
    Ok(())
}

/// The request failed: free the key so the client can try again.
pub fn abandon(conn: &mut DbConnection, key: &RequestKey) -> Result<()> {
    diesel::delete(row_of!(key)).execute(conn)?;
    Ok(())
}

/// Deletes keys past their retention.
pub fn purge(conn: &mut DbConnection, clock: &dyn Clock) -> Result<usize> {
    let cutoff = db_time(clock.now() - Duration::hours(RETENTION_HOURS));
    Ok(diesel::delete(ik::table.filter(ik::created_at.lt(cutoff))).execute(conn)?)
}
