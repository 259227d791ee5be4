//! The console's sign-in sessions: a random token in a cookie, stored only as its hash. Each
//! request turns it into the same `Caller` an access token gives (`caller_for_token`), so a
//! removed member's session stops working at once, and every rule sees one kind of caller.

use chrono::Duration;
use diesel::prelude::*;
use schema::models::ConsoleSession;
use schema::schema::console_sessions;
use schema::DbConnection;

use super::accounts::{self, TokenRequest};
use super::audit::{self, Entry};
use super::auth::Caller;
use super::clock::{db_time, Clock};
use super::db::transaction;
use super::error::{Error, Result};
use super::ids::new_id;
use super::tokens::{new_secret, secret_hash};

/// A session unused this long ends.
pub const IDLE_MINUTES: i64 = 60;
/// A session ends this long after sign-in, used or not.
pub const ABSOLUTE_HOURS: i64 = 12;
/// `last_seen_at` is written at most this often, not on every page.
const TOUCH_SECONDS: i64 = 60;
/// The prefix of session tokens, so a leaked one is recognisable.
pub const TOKEN_PREFIX: &str = "mkt_cs_";

/// A new session: the token for the cookie (shown once, stored as a hash) and who it is.
pub struct Started {
    pub token: String,
    pub caller: Caller,
}

/// Signs in with e-mail and password (the API's credential check) and opens a session.
pub fn sign_in(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    request: &TokenRequest,
) -> Result<Started> {
    let (user, org, _) = accounts::check_password(conn, request)?;
    let token = new_secret(TOKEN_PREFIX);
    transaction(conn, |conn| {
        let now = db_time(clock.now());
        // The user's sessions that ended by themselves go now, so the table stays small.
        diesel::delete(
            console_sessions::table
                .filter(console_sessions::user_id.eq(&user.id))
                .filter(
                    console_sessions::expires_at
                        .le(now)
                        .or(console_sessions::last_seen_at
                            .le(now - Duration::minutes(IDLE_MINUTES))),
                ),
        )
        .execute(conn)?;
        let row = ConsoleSession {
            id: new_id("cses"),
            organization_id: org.id.clone(),
            user_id: user.id.clone(),
            token_hash: secret_hash(&token),
            created_at: now,
            last_seen_at: now,
            expires_at: now + Duration::hours(ABSOLUTE_HOURS),
        };
        diesel::insert_into(console_sessions::table)
            .values(&row)
            .execute(conn)?;
        audit::record(
            conn,
            clock,
            Entry::new(&org.id, &user.id, "console_session.started", &row.id),
        )
    })?;
    let caller = accounts::caller_for_token(conn, &user.id, &org.id)?;
    Ok(Started { token, caller })
}

/// The caller behind a session token, if the session is live and its user still a member;
/// `None` otherwise (and a dead session's row is removed).
pub fn resolve(conn: &mut DbConnection, clock: &dyn Clock, token: &str) -> Result<Option<Caller>> {
    let now = db_time(clock.now());
    let hash = secret_hash(token);
    let found: Option<ConsoleSession> = console_sessions::table
        .filter(console_sessions::token_hash.eq(&hash))
        .select(ConsoleSession::as_select())
        .first(conn)
        .optional()?;
    let Some(session) = found else {
        return Ok(None);
    };
    let idle_until = session.last_seen_at + Duration::minutes(IDLE_MINUTES);
    if session.expires_at <= now || idle_until <= now {
        end(conn, &session.id)?;
        return Ok(None);
    }
    let caller = match accounts::caller_for_token(conn, &session.user_id, &session.organization_id)
    {
        Ok(caller) => caller,
        Err(Error::Unauthorized(_)) => {
            end(conn, &session.id)?;
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    if now - session.last_seen_at >= Duration::seconds(TOUCH_SECONDS) {
        diesel::update(console_sessions::table.find(&session.id))
            .set(console_sessions::last_seen_at.eq(now))
            .execute(conn)?;
    }
    Ok(Some(caller))
}

/// Signs out: the session's row goes, so its cookie is worthless from now on.
pub fn sign_out(conn: &mut DbConnection, token: &str) -> Result<()> {
    diesel::delete(
        console_sessions::table.filter(console_sessions::token_hash.eq(secret_hash(token))),
    )
    .execute(conn)?;
    Ok(())
}

fn end(conn: &mut DbConnection, id: &str) -> Result<()> {
    diesel::delete(console_sessions::table.find(id)).execute(conn)?;
    Ok(())
}

/// The session's CSRF token: derived from its secret token, so it is per session, needs no
/// storage, and nobody without the (HttpOnly) cookie can compute it.
pub fn csrf_token(token: &str) -> String {
    secret_hash(&format!("console-csrf\n{token}"))
}
