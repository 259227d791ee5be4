//! Datasets and their revisions (`open → finalized → revoked`), and the assets a revision holds.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use schema::models::{Asset, Dataset, Revision};
use schema::schema::{assets, datasets, listings, revisions};
use schema::DbConnection;
use serde::{Deserialize, Serialize};

use super::{owned_listing, readable_listing};
use crate::after_cursor;
use crate::domain::audit::{self, Entry};
use crate::domain::auth::Caller;
use crate::domain::clock::{db_time, utc, Clock};
use crate::domain::db::transaction;
use crate::domain::error::{Error, Problems, Result};
use crate::domain::ids::new_id;
use crate::domain::outbox;
use crate::domain::pagination::{Page, PageRequest};
use crate::domain::validate::text;

#[derive(Debug, Deserialize)]
pub struct NewDataset {
    pub name: String,
    pub description: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct NewRevision {
    pub comment: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct RevokeRevision {
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DatasetView {
    pub id: String,
    pub listing_id: String,
    pub name: String,
    pub description: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AssetView {
    pub id: String,
    pub revision_id: String,
    pub name: String,
    pub media_type: String,
    pub size: i64,
    pub sha256: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RevisionView {
    pub id: String,
    pub dataset_id: String,
    pub listing_id: String,
    pub state: String,
    pub comment: String,
    pub revoke_reason: Option<String>,
    pub assets: Vec<AssetView>,
    pub created_at: DateTime<Utc>,
    pub finalized_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

fn dataset_view(d: Dataset) -> DatasetView {
    DatasetView {
        id: d.id,
        listing_id: d.listing_id,
        name: d.name,
        description: d.description,
        created_at: utc(d.created_at),
    }
}

pub fn asset_view(a: Asset) -> AssetView {
    AssetView {
        id: a.id,
        revision_id: a.revision_id,
        name: a.name,
        media_type: a.media_type,
        size: a.size,
        sha256: a.sha256,
        created_at: utc(a.created_at),
    }
}

fn revision_view(conn: &mut DbConnection, r: Revision) -> Result<RevisionView> {
    let files: Vec<Asset> = assets::table
        .filter(assets::revision_id.eq(&r.id))
        .order((assets::name.asc(), assets::id.asc()))
        .select(Asset::as_select())
        .load(conn)?;
    Ok(RevisionView {
        assets: files.into_iter().map(asset_view).collect(),
        id: r.id,
        dataset_id: r.dataset_id,
        listing_id: r.listing_id,
        state: r.state,
        comment: r.comment,
        revoke_reason: r.revoke_reason,
        created_at: utc(r.created_at),
        finalized_at: r.finalized_at.map(utc),
        revoked_at: r.revoked_at.map(utc),
    })
}

// ---------- datasets ----------

pub fn create_dataset(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    caller: &Caller,
    listing_id: &str,
    input: NewDataset,
) -> Result<DatasetView> {
    let listing = owned_listing(conn, caller, listing_id)?;
    if listing.state == "archived" {
        return Err(Error::conflict(
            "listing_archived",
            "an archived listing takes no new datasets",
        ));
    }
    let mut problems = Problems::new();
    let name = problems.check("name", text(&input.name, 200));
    let description = match input.description.as_deref() {
        Some(d) if d.chars().count() > 10_000 => {
            problems.push("description", "must be at most 10000 characters");
            String::new()
        }
        other => other.unwrap_or("").to_string(),
    };
    problems.finish()?;
    let dataset = Dataset {
        id: new_id("ds"),
        listing_id: listing.id,
        organization_id: caller.organization_id.clone(),
        name: name.unwrap_or_default(),
        description,
        created_at: db_time(clock.now()),
    };
    transaction(conn, |conn| {
        diesel::insert_into(datasets::table)
            .values(&dataset)
            .execute(conn)?;
        audit::record(
            conn,
            clock,
            Entry::new(
                &caller.organization_id,
                &caller.principal(),
                "dataset.created",
                &dataset.id,
            ),
        )?;
        Ok(dataset_view(dataset.clone()))
    })
}

/// A dataset whose listing the reader may see; 404 otherwise.
fn readable_dataset(
    conn: &mut DbConnection,
    reader_org: Option<&str>,
    dataset_id: &str,
) -> Result<Dataset> {
    let dataset: Dataset = datasets::table
        .find(dataset_id)
        .select(Dataset::as_select())
        .first(conn)
        .optional()?
        .ok_or(Error::NotFound("dataset"))?;
    readable_listing(conn, reader_org, &dataset.listing_id)
        .map_err(|_| Error::NotFound("dataset"))?;
    Ok(dataset)
}

pub fn get_dataset(
    conn: &mut DbConnection,
    reader_org: Option<&str>,
    dataset_id: &str,
) -> Result<DatasetView> {
    readable_dataset(conn, reader_org, dataset_id).map(dataset_view)
}

pub fn list_datasets(
    conn: &mut DbConnection,
    reader_org: Option<&str>,
    listing_id: &str,
    page: &PageRequest,
) -> Result<Page<DatasetView>> {
    readable_listing(conn, reader_org, listing_id)?;
    let rows: Vec<Dataset> = after_cursor!(
        datasets::table.filter(datasets::listing_id.eq(listing_id)),
        page,
        datasets::created_at,
        datasets::id
    )
    .select(Dataset::as_select())
    .load(conn)?;
    Ok(Page::from_rows(
        page,
        rows,
        |d| (d.created_at, d.id.clone()),
        dataset_view,
    ))
}

// ---------- revisions ----------

/// The caller's own revision, for changes (404 if they cannot see it, 403 if not theirs).
pub fn owned_revision(
    conn: &mut DbConnection,
    caller: &Caller,
    revision_id: &str,
) -> Result<Revision> {
    let revision = readable_revision(conn, Some(&caller.organization_id), revision_id)?;
    owned_listing(conn, caller, &revision.listing_id)?;
    Ok(revision)
}

/// A revision the reader may see: the provider sees every one; others see finalized and
/// revoked revisions of listings they can see, never open ones.
pub fn readable_revision(
    conn: &mut DbConnection,
    reader_org: Option<&str>,
    revision_id: &str,
) -> Result<Revision> {
    let revision: Revision = revisions::table
        .find(revision_id)
        .select(Revision::as_select())
        .first(conn)
        .optional()?
        .ok_or(Error::NotFound("revision"))?;
    let provider = reader_org == Some(revision.organization_id.as_str());
    if !provider && revision.state == "open" {
        return Err(Error::NotFound("revision"));
    }
    readable_listing(conn, reader_org, &revision.listing_id)
        .map_err(|_| Error::NotFound("revision"))?;
    Ok(revision)
}

pub fn create_revision(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    caller: &Caller,
    dataset_id: &str,
    input: NewRevision,
) -> Result<RevisionView> {
    let dataset = readable_dataset(conn, Some(&caller.organization_id), dataset_id)?;
    let listing = owned_listing(conn, caller, &dataset.listing_id)?;
    if listing.state == "archived" {
        return Err(Error::conflict(
            "listing_archived",
            "an archived listing takes no new revisions",
        ));
    }
    let comment = input.comment.unwrap_or_default();
    if comment.chars().count() > 2_000 {
        return Err(Error::validation(
            "comment",
            "must be at most 2000 characters",
        ));
    }
    let revision = Revision {
        id: new_id("rev"),
        dataset_id: dataset.id,
        listing_id: dataset.listing_id,
        organization_id: caller.organization_id.clone(),
        state: "open".into(),
        comment,
        revoke_reason: None,
        created_at: db_time(clock.now()),
        finalized_at: None,
        revoked_at: None,
    };
    transaction(conn, |conn| {
        diesel::insert_into(revisions::table)
            .values(&revision)
            .execute(conn)?;
        audit::record(
            conn,
            clock,
            Entry::new(
                &caller.organization_id,
                &caller.principal(),
                "revision.created",
                &revision.id,
            ),
        )?;
        revision_view(conn, revision.clone())
    })
}

pub fn get_revision(
    conn: &mut DbConnection,
    reader_org: Option<&str>,
    revision_id: &str,
) -> Result<RevisionView> {
    let revision = readable_revision(conn, reader_org, revision_id)?;
    revision_view(conn, revision)
}

pub fn list_revisions(
    conn: &mut DbConnection,
    reader_org: Option<&str>,
    dataset_id: &str,
    page: &PageRequest,
) -> Result<Page<RevisionView>> {
    let dataset = readable_dataset(conn, reader_org, dataset_id)?;
    let mut query = revisions::table
        .filter(revisions::dataset_id.eq(dataset_id))
        .into_boxed();
    if reader_org != Some(dataset.organization_id.as_str()) {
        query = query.filter(revisions::state.ne("open"));
    }
    let rows: Vec<Revision> = after_cursor!(query, page, revisions::created_at, revisions::id)
        .select(Revision::as_select())
        .load(conn)?;
    Page::try_from_rows(
        page,
        rows,
        |r| (r.created_at, r.id.clone()),
        |r| revision_view(conn, r),
    )
}

/// Finalizes an open revision: it becomes immutable. An empty revision cannot be finalized.
pub fn finalize_revision(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    caller: &Caller,
    revision_id: &str,
) -> Result<RevisionView> {
    let revision = owned_revision(conn, caller, revision_id)?;
    transaction(conn, |conn| {
        let changed = diesel::update(
            revisions::table
                .find(revision_id)
                .filter(revisions::state.eq("open")),
        )
        .set((
            revisions::state.eq("finalized"),
            revisions::finalized_at.eq(db_time(clock.now())),
        ))
        .execute(conn)?;
        if changed == 0 {
            return Err(Error::conflict(
                "invalid_state",
                "only an open revision can be finalized",
            ));
        }
        // An archived listing's data stays as it was: its subscribers get no new revision.
        // (The revision's row first, then the listing's, as an upload locks them.)
        if schema::locks::listing_state(conn, &revision.listing_id)? == "archived" {
            return Err(Error::conflict(
                "listing_archived",
                "an archived listing takes no new revisions",
            ));
        }
        let files: i64 = assets::table
            .filter(assets::revision_id.eq(revision_id))
            .count()
            .get_result(conn)?;
        if files == 0 {
            return Err(Error::conflict(
                "empty_revision",
                "an empty revision cannot be finalized; upload an asset first",
            ));
        }
        audit::record(
            conn,
            clock,
            Entry::new(
                &caller.organization_id,
                &caller.principal(),
                "revision.finalized",
                revision_id,
            ),
        )?;
        let revision = revisions::table
            .find(revision_id)
            .select(Revision::as_select())
            .first(conn)?;
        revision_view(conn, revision)
    })
}

/// Revokes a finalized revision, with a reason: subscribers lose access to it at once.
pub fn revoke_revision(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    caller: &Caller,
    revision_id: &str,
    input: RevokeRevision,
) -> Result<RevisionView> {
    let reason = match input.reason.as_deref() {
        None => {
            return Err(Error::validation(
                "reason",
                "is required: say why subscribers lose this revision",
            ))
        }
        Some(r) => text(r, 2_000).map_err(|m| Error::validation("reason", m))?,
    };
    owned_revision(conn, caller, revision_id)?;
    transaction(conn, |conn| {
        let changed = diesel::update(
            revisions::table
                .find(revision_id)
                .filter(revisions::state.eq("finalized")),
        )
        .set((
            revisions::state.eq("revoked"),
            revisions::revoke_reason.eq(&reason),
            revisions::revoked_at.eq(db_time(clock.now())),
        ))
        .execute(conn)?;
        if changed == 0 {
            return Err(Error::conflict(
                "invalid_state",
                "only a finalized revision can be revoked",
            ));
        }
        audit::record(
            conn,
            clock,
            Entry::new(
                &caller.organization_id,
                &caller.principal(),
                "revision.revoked",
                revision_id,
            )
            .detail(serde_json::json!({ "reason": reason })),
        )?;
        let revision = revisions::table
            .find(revision_id)
            .select(Revision::as_select())
            .first(conn)?;
        outbox::revision_revoked(conn, clock, &revision)?;
        revision_view(conn, revision)
    })
}

/// The listing state of a revision's listing (uploads need it not archived).
pub fn listing_state(conn: &mut DbConnection, listing_id: &str) -> Result<String> {
    Ok(listings::table
        .find(listing_id)
        .select(listings::state)
        .first(conn)?)
}
