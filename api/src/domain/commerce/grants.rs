//! Access grants: what a subscription entitles its subscriber to read, and when.

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use schema::models::{Grant, UsageEvent};
use schema::schema::{datasets, grants, subscriptions};
use schema::DbConnection;
use serde::Serialize;

use crate::after_cursor;
use crate::domain::auth::{Caller, Capability};
use crate::domain::clock::{db_time, utc, Clock};
use crate::domain::error::Result;
use crate::domain::ids::new_id;
use crate::domain::pagination::{Page, PageRequest};

#[derive(Debug, Clone, Serialize)]
pub struct GrantView {
    pub id: String,
    pub subscription_id: String,
    pub listing_id: String,
    /// The listing's datasets: a grant covers the listing's data, datasets added later too.
    pub dataset_ids: Vec<String>,
    pub valid_from: DateTime<Utc>,
    pub valid_until: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub suspended_at: Option<DateTime<Utc>>,
    /// Whether the grant allows reading now.
    pub live: bool,
}

/// Live at `now`: started, not ended, not revoked, not suspended.
pub fn is_live(g: &Grant, now: NaiveDateTime) -> bool {
    g.valid_from <= now && now < g.valid_until && g.revoked_at.is_none() && g.suspended_at.is_none()
}

pub fn list(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    caller: &Caller,
    page: &PageRequest,
) -> Result<Page<GrantView>> {
    caller.require(Capability::Read)?;
    let now = db_time(clock.now());
    let rows: Vec<Grant> = after_cursor!(
        grants::table.filter(grants::organization_id.eq(&caller.organization_id)),
        page,
        grants::created_at,
        grants::id
    )
    .select(Grant::as_select())
    .load(conn)?;
    Page::try_from_rows(
        page,
        rows,
        |g| (g.created_at, g.id.clone()),
        |g| {
            let dataset_ids = datasets::table
                .filter(datasets::listing_id.eq(&g.listing_id))
                .order((datasets::created_at.asc(), datasets::id.asc()))
                .select(datasets::id)
                .load(conn)?;
            Ok(GrantView {
                live: is_live(&g, now),
                id: g.id,
                subscription_id: g.subscription_id,
                listing_id: g.listing_id,
                dataset_ids,
                valid_from: utc(g.valid_from),
                valid_until: utc(g.valid_until),
                revoked_at: g.revoked_at.map(utc),
                suspended_at: g.suspended_at.map(utc),
            })
        },
    )
}

/// The grant a read by `organization_id` of the listing's data is made under: of the grants
/// live now, the one whose subscription started earliest (reads are metered to it).
pub fn live_grant(
    conn: &mut DbConnection,
    organization_id: &str,
    listing_id: &str,
    now: NaiveDateTime,
) -> Result<Option<Grant>> {
    Ok(grants::table
        .filter(grants::organization_id.eq(organization_id))
        .filter(grants::listing_id.eq(listing_id))
        .filter(grants::valid_from.le(now))
        .filter(grants::valid_until.gt(now))
        .filter(grants::revoked_at.is_null())
        .filter(grants::suspended_at.is_null())
        .order((grants::valid_from.asc(), grants::id.asc()))
        .select(Grant::as_select())
        .first(conn)
        .optional()?)
}

/// A named grant, if it is still live for this organization and listing (signed URLs carry one).
pub fn still_live(
    conn: &mut DbConnection,
    grant_id: &str,
    organization_id: &str,
    listing_id: &str,
    now: NaiveDateTime,
) -> Result<Option<Grant>> {
    let grant: Option<Grant> = grants::table
        .find(grant_id)
        .select(Grant::as_select())
        .first(conn)
        .optional()?;
    Ok(grant.filter(|g| {
        g.organization_id == organization_id && g.listing_id == listing_id && is_live(g, now)
    }))
}

/// Meters a subscriber's read to the grant's subscription: one `api_calls` and the bytes
/// sent. The server is the sender; its event ids are fresh, so nothing is counted twice.
pub fn meter_read(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    grant_id: &str,
    bytes: i64,
) -> Result<()> {
    let (organization_id, subscription_id): (String, String) = grants::table
        .find(grant_id)
        .select((grants::organization_id, grants::subscription_id))
        .first(conn)?;
    let now = clock.now();
    let event = |metric: &str, quantity: i64| UsageEvent {
        organization_id: organization_id.clone(),
        id: new_id("evt"),
        subscription_id: subscription_id.clone(),
        metric: metric.to_string(),
        quantity,
        occurred_at: db_time(now),
        day: now.format("%Y-%m-%d").to_string(),
        received_at: db_time(now),
    };
    schema::usage::insert_new(
        conn,
        &[event("api_calls", 1), event("bytes_downloaded", bytes)],
    )?;
    Ok(())
}

/// Whether a subscription exists with this id (for messages that must not leak others').
pub fn subscription_exists(conn: &mut DbConnection, id: &str) -> Result<bool> {
    Ok(subscriptions::table
        .find(id)
        .select(subscriptions::id)
        .first::<String>(conn)
        .optional()?
        .is_some())
}
