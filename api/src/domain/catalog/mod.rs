//! The catalog: listings and who may see them, offers, datasets, revisions and their assets.

pub mod data;
pub mod listing;
pub mod offer;
pub mod pages;

use diesel::prelude::*;
use schema::models::Listing;
use schema::schema::{listing_access, listings, organizations, subscriptions};
use schema::DbConnection;

use super::auth::{Caller, Capability};
use super::error::{Error, Problems, Result};

/// Whether an organization (or an anonymous reader, `None`) may see a listing: its provider
/// always; others only once published, and a private one only if it names them.
pub fn can_see(
    conn: &mut DbConnection,
    reader_org: Option<&str>,
    listing: &Listing,
) -> Result<bool> {
    if reader_org == Some(listing.organization_id.as_str()) {
        return Ok(true);
    }
    if listing.state != "published" {
        return Ok(false);
    }
    if listing.visibility == "public" {
        return Ok(true);
    }
    let Some(org) = reader_org else {
        return Ok(false);
    };
    let named = listing_access::table
        .filter(listing_access::listing_id.eq(&listing.id))
        .filter(listing_access::organization_id.eq(org))
        .count()
        .get_result::<i64>(conn)?;
    Ok(named > 0)
}

/// The listing if the reader may see it; otherwise 404, exactly as if it did not exist.
pub fn readable_listing(
    conn: &mut DbConnection,
    reader_org: Option<&str>,
    listing_id: &str,
) -> Result<Listing> {
    let listing: Option<Listing> = listings::table
        .find(listing_id)
        .select(Listing::as_select())
        .first(conn)
        .optional()?;
    match listing {
        Some(l) if can_see(conn, reader_org, &l)? => Ok(l),
        // Archived, or no longer shared with the reader: a subscriber whose subscription
        // runs its course still finds the listing and its data (reads still need a live
        // grant).
        Some(l) if subscribed(conn, reader_org, &l.id)? => Ok(l),
        _ => Err(Error::NotFound("listing")),
    }
}

/// Whether the reader's organization holds an active subscription to the listing.
fn subscribed(conn: &mut DbConnection, reader_org: Option<&str>, listing_id: &str) -> Result<bool> {
    let Some(org) = reader_org else {
        return Ok(false);
    };
    let active = subscriptions::table
        .filter(subscriptions::organization_id.eq(org))
        .filter(subscriptions::listing_id.eq(listing_id))
        .filter(subscriptions::status.eq("active"))
        .count()
        .get_result::<i64>(conn)?;
    Ok(active > 0)
}

/// The caller's own listing, for changes: 404 if they cannot see it, 403 if it is another
/// organization's, 403 if their role or key may not write.
pub fn owned_listing(
    conn: &mut DbConnection,
    caller: &Caller,
    listing_id: &str,
) -> Result<Listing> {
    let listing = readable_listing(conn, Some(&caller.organization_id), listing_id)?;
    if listing.organization_id != caller.organization_id {
        return Err(Error::Forbidden(
            "only the listing's provider may change it",
        ));
    }
    caller.require(Capability::Write)?;
    Ok(listing)
}

/// Checks that each id names an existing organization other than the caller's own.
fn check_organizations(
    conn: &mut DbConnection,
    problems: &mut Problems,
    field: &str,
    ids: &[String],
    own: &str,
) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    if ids.len() > 100 {
        problems.push(field, "at most 100 organizations");
        return Ok(out);
    }
    for (i, id) in ids.iter().enumerate() {
        if id == own {
            problems.push(format!("{field}[{i}]"), "is your own organization");
            continue;
        }
        let exists = organizations::table
            .find(id)
            .select(organizations::id)
            .first::<String>(conn)
            .optional()?
            .is_some();
        if !exists {
            problems.push(format!("{field}[{i}]"), "no such organization");
        } else if !out.contains(id) {
            out.push(id.clone());
        }
    }
    Ok(out)
}

/// The organization's name, for `provider: {id, name}`.
fn organization_name(conn: &mut DbConnection, id: &str) -> Result<String> {
    Ok(organizations::table
        .find(id)
        .select(organizations::name)
        .first(conn)?)
}
