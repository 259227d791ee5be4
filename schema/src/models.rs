//! Rows as Rust structs: one `Queryable` per table and one `Insertable` form where rows are created.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::schema::*;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = organizations)]
pub struct Organization {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub tax_rate_bps: Option<i32>,
    pub fee_bps: Option<i32>,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = users)]
pub struct User {
    pub id: String,
    pub organization_id: String,
    pub email: String,
    pub name: String,
    pub password_hash: String,
    pub role: String,
    pub created_at: NaiveDateTime,
    pub removed_at: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = api_keys)]
pub struct ApiKey {
    pub id: String,
    pub organization_id: String,
    pub user_id: String,
    pub name: String,
    pub key_hash: String,
    pub key_hint: String,
    pub scopes: String,
    pub created_at: NaiveDateTime,
    pub revoked_at: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = refresh_tokens)]
pub struct RefreshToken {
    pub id: String,
    pub organization_id: String,
    pub user_id: String,
    pub family_id: String,
    pub token_hash: String,
    pub created_at: NaiveDateTime,
    pub expires_at: NaiveDateTime,
    pub spent_at: Option<NaiveDateTime>,
    pub revoked_at: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = server_secrets)]
pub struct ServerSecret {
    pub id: String,
    pub purpose: String,
    pub secret: String,
    pub created_at: NaiveDateTime,
    pub retired_at: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = idempotency_keys)]
pub struct IdempotencyRecord {
    pub caller: String,
    pub method: String,
    pub path: String,
    pub idempotency_key: String,
    pub request_hash: String,
    pub state: String,
    pub response_status: Option<i32>,
    pub response_content_type: Option<String>,
    pub response_body: Option<Vec<u8>>,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = audit_events)]
pub struct AuditEvent {
    pub id: String,
    pub organization_id: String,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub grant_id: Option<String>,
    pub detail: String,
    pub client_address: Option<String>,
    pub created_at: NaiveDateTime,
}
