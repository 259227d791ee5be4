//! Secrets the server generates for itself (token and URL signing keys): made on first start,
//! kept in the database so every instance shares them, never logged.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use diesel::prelude::*;
use schema::models::ServerSecret;
use schema::schema::server_secrets;
use schema::DbConnection;

use super::clock::{db_time, Clock};
use super::error::Result;
use super::ids::new_id;

/// A signing key and the id (`kid`) tokens and URLs carry to name it.
#[derive(Clone)]
pub struct SigningKey {
    pub id: String,
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The current key for `purpose`, created if there is none. Two instances starting at once
/// race on a unique index; the loser reads the winner's key.
pub fn current_or_create(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    purpose: &str,
) -> Result<SigningKey> {
    if let Some(key) = current(conn, purpose)? {
        return Ok(key);
    }
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    let row = ServerSecret {
        id: new_id("sk"),
        purpose: purpose.to_string(),
        secret: STANDARD.encode(bytes),
        created_at: db_time(clock.now()),
        retired_at: None,
    };
    match diesel::insert_into(server_secrets::table)
        .values(&row)
        .execute(conn)
    {
        Ok(_) => Ok(SigningKey {
            id: row.id,
            secret: bytes.to_vec(),
        }),
        Err(e) if schema::is_unique_violation(&e) => current(conn, purpose)?
            .ok_or_else(|| super::error::Error::internal("signing key vanished")),
        Err(e) => Err(e.into()),
    }
}

fn current(conn: &mut DbConnection, purpose: &str) -> Result<Option<SigningKey>> {
    let row: Option<ServerSecret> = server_secrets::table
        .filter(server_secrets::purpose.eq(purpose))
        .filter(server_secrets::retired_at.is_null())
        .select(ServerSecret::as_select())
        .first(conn)
        .optional()?;
    Ok(row.and_then(decode))
}

/// Every key of `purpose` that still verifies: the current one and retired ones.
pub fn all(conn: &mut DbConnection, purpose: &str) -> Result<Vec<SigningKey>> {
    let rows: Vec<ServerSecret> = server_secrets::table
        .filter(server_secrets::purpose.eq(purpose))
        .select(ServerSecret::as_select())
        .load(conn)?;
    Ok(rows.into_iter().filter_map(decode).collect())
}

fn decode(row: ServerSecret) -> Option<SigningKey> {
    let secret = STANDARD.decode(row.secret).ok()?;
    Some(SigningKey { id: row.id, secret })
}
