//! The audit trail: every state change of money or access, and every data read.

use diesel::prelude::*;
use schema::models::AuditEvent;
use schema::schema::audit_events;
use schema::DbConnection;

use super::clock::{db_time, Clock};
use super::error::Result;
use super::ids::new_id;

/// One thing that happened: who (a user or key id), what, to which object.
pub struct Entry<'a> {
    pub organization_id: &'a str,
    pub actor: &'a str,
    pub action: &'a str,
    pub subject: &'a str,
    pub detail: serde_json::Value,
    /// The access grant a data read was made under.
    pub grant_id: Option<&'a str>,
    /// The client's address (data reads).
    pub client_address: Option<&'a str>,
}

impl<'a> Entry<'a> {
    pub fn new(
        organization_id: &'a str,
        actor: &'a str,
        action: &'a str,
        subject: &'a str,
    ) -> Self {
        Entry {
            organization_id,
            actor,
            action,
            subject,
            detail: serde_json::Value::Object(Default::default()),
            grant_id: None,
            client_address: None,
        }
    }

    pub fn detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = detail;
        self
    }

    pub fn grant(mut self, grant_id: Option<&'a str>) -> Self {
        self.grant_id = grant_id;
        self
    }

    pub fn client_address(mut self, address: Option<&'a str>) -> Self {
        self.client_address = address;
        self
    }
}

/// Records the entry; call it inside the transaction of the change it describes.
pub fn record(conn: &mut DbConnection, clock: &dyn Clock, entry: Entry<'_>) -> Result<()> {
    diesel::insert_into(audit_events::table)
        .values(AuditEvent {
            id: new_id("aud"),
            organization_id: entry.organization_id.to_string(),
            actor: entry.actor.to_string(),
            action: entry.action.to_string(),
            subject: entry.subject.to_string(),
            grant_id: entry.grant_id.map(str::to_string),
            detail: entry.detail.to_string(),
            client_address: entry.client_address.map(str::to_string),
            created_at: db_time(clock.now()),
        })
        .execute(conn)?;
    Ok(())
}
