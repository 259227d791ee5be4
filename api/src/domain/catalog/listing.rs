//! Listings: create, read, change, publish, archive; the catalog search.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use schema::models::{Listing, ListingAccess, ListingLabel, ListingShown};
use schema::schema::{listing_access, listing_labels, listings, offers, organizations};
use schema::search::LabelKind;
use schema::DbConnection;
use serde::{Deserialize, Serialize};

use super::{check_organizations, organization_name, owned_listing, readable_listing};
use crate::after_cursor;
use crate::domain::accounts::OrganizationRef;
use crate::domain::audit::{self, Entry};
use crate::domain::auth::{Caller, Capability};
use crate::domain::clock::{db_time, utc, Clock};
use crate::domain::db::{read_snapshot, transaction};
use crate::domain::error::{Error, Problems, Result};
use crate::domain::ids::new_id;
use crate::domain::markdown;
use crate::domain::pagination::{cursor_instant, cursor_text, Page, PageRequest};
use crate::domain::validate::text;

const TITLE_MAX: usize = 200;
const SUMMARY_MAX: usize = 500;
const DESCRIPTION_MAX: usize = 50_000;
const LABEL_MAX: usize = 50;
const LABELS_MAX: usize = 20;
/// The furthest a relevance cursor may point (the server never issues one this far).
const MAX_RELEVANCE_OFFSET: i64 = 1 << 40;

#[derive(Debug, Deserialize)]
pub struct NewListing {
    pub title: String,
    pub summary: String,
    pub description: Option<String>,
    #[serde(default)]
    pub categories: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub visibility: String,
    pub allowed_organization_ids: Option<Vec<String>>,
}

/// A PATCH: only the fields given change.
#[derive(Debug, Deserialize)]
pub struct ListingChanges {
    pub title: Option<String>,
    pub summary: Option<String>,
    pub description: Option<String>,
    pub categories: Option<Vec<String>>,
    pub tags: Option<Vec<String>>,
    pub visibility: Option<String>,
    pub allowed_organization_ids: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ListingView {
    pub id: String,
    pub state: String,
    pub provider: OrganizationRef,
    pub title: String,
    pub summary: String,
    /// The Markdown as the provider wrote it.
    pub description: String,
    /// The description rendered and sanitized: safe to show as HTML.
    pub description_html: String,
    pub categories: Vec<String>,
    pub tags: Vec<String>,
    pub visibility: String,
    /// Who a private listing is shown to: present for its provider only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_organization_ids: Option<Vec<String>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub published_at: Option<DateTime<Utc>>,
    pub archived_at: Option<DateTime<Utc>>,
}

fn parse_labels(problems: &mut Problems, field: &str, raw: &[String]) -> Vec<String> {
    if raw.len() > LABELS_MAX {
        problems.push(field, format!("at most {LABELS_MAX}"));
        return Vec::new();
    }
    let mut out: Vec<String> = Vec::new();
    for (i, label) in raw.iter().enumerate() {
        if let Some(l) = problems.check(&format!("{field}[{i}]"), text(label, LABEL_MAX)) {
            let l = l.to_lowercase();
            if !out.contains(&l) {
                out.push(l);
            }
        }
    }
    out
}

fn parse_visibility(raw: &str) -> Result<String, String> {
    match raw {
        "public" | "private" => Ok(raw.to_string()),
        _ => Err("must be public or private".into()),
    }
}

fn parse_description(raw: &str) -> Result<String, String> {
    if raw.chars().count() > DESCRIPTION_MAX {
        Err(format!("must be at most {DESCRIPTION_MAX} characters"))
    } else {
        Ok(raw.to_string())
    }
}

fn search_document(l: &Listing) -> String {
    let tags: Vec<String> = serde_json::from_str(&l.tags).unwrap_or_default();
    format!(
        "{}\n{}\n{}\n{}",
        l.title,
        l.summary,
        l.description,
        tags.join(" ")
    )
}

/// The listing's categories and tags as words of the full-text index.
fn search_labels(l: &Listing) -> String {
    let categories: Vec<String> = serde_json::from_str(&l.categories).unwrap_or_default();
    let tags: Vec<String> = serde_json::from_str(&l.tags).unwrap_or_default();
    schema::search::labels_document(
        categories
            .iter()
            .map(|c| (LabelKind::Category, c.as_str()))
            .chain(tags.iter().map(|t| (LabelKind::Tag, t.as_str()))),
    )
}

fn to_json(values: &[String]) -> String {
    serde_json::to_string(values).unwrap_or_else(|_| "[]".into())
}

/// Replaces a listing's category and tag rows and who it is shown to.
fn write_labels_and_access(
    conn: &mut DbConnection,
    l: &Listing,
    allowed: Option<&[String]>,
) -> Result<()> {
    diesel::delete(listing_labels::table.filter(listing_labels::listing_id.eq(&l.id)))
        .execute(conn)?;
    let categories: Vec<String> = serde_json::from_str(&l.categories).unwrap_or_default();
    let tags: Vec<String> = serde_json::from_str(&l.tags).unwrap_or_default();
    let rows: Vec<ListingLabel> = categories
        .into_iter()
        .map(|v| ("category", v))
        .chain(tags.into_iter().map(|v| ("tag", v)))
        .map(|(kind, value)| ListingLabel {
            listing_id: l.id.clone(),
            organization_id: l.organization_id.clone(),
            kind: kind.into(),
            value,
        })
        .collect();
    // One row at a time: batch inserts do not compile through a MultiConnection.
    for row in &rows {
        diesel::insert_into(listing_labels::table)
            .values(row)
            .execute(conn)?;
    }
    if let Some(allowed) = allowed {
        diesel::delete(listing_access::table.filter(listing_access::listing_id.eq(&l.id)))
            .execute(conn)?;
        let rows: Vec<ListingAccess> = allowed
            .iter()
            .map(|org| ListingAccess {
                listing_id: l.id.clone(),
                organization_id: org.clone(),
            })
            .collect();
        for row in &rows {
            diesel::insert_into(listing_access::table)
                .values(row)
                .execute(conn)?;
        }
    }
    Ok(())
}

fn allowed_organizations(conn: &mut DbConnection, listing_id: &str) -> Result<Vec<String>> {
    Ok(listing_access::table
        .filter(listing_access::listing_id.eq(listing_id))
        .select(listing_access::organization_id)
        .order(listing_access::organization_id)
        .load(conn)?)
}

/// The API's view; `allowed_organization_ids` only when the reader is the provider.
pub fn view(
    conn: &mut DbConnection,
    reader_org: Option<&str>,
    l: impl Into<ListingShown>,
    provider_name: String,
) -> Result<ListingView> {
    let l: ListingShown = l.into();
    let allowed = if reader_org == Some(l.organization_id.as_str()) {
        Some(allowed_organizations(conn, &l.id)?)
    } else {
        None
    };
    Ok(ListingView {
        description_html: markdown::render_listing(&l.id, &l.description),
        categories: serde_json::from_str(&l.categories).unwrap_or_default(),
        tags: serde_json::from_str(&l.tags).unwrap_or_default(),
        provider: OrganizationRef {
            id: l.organization_id,
            name: provider_name,
        },
        id: l.id,
        state: l.state,
        title: l.title,
        summary: l.summary,
        description: l.description,
        visibility: l.visibility,
        allowed_organization_ids: allowed,
        created_at: utc(l.created_at),
        updated_at: utc(l.updated_at),
        published_at: l.published_at.map(utc),
        archived_at: l.archived_at.map(utc),
    })
}

pub fn create(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    caller: &Caller,
    input: NewListing,
) -> Result<ListingView> {
    caller.require(Capability::Write)?;
    let mut problems = Problems::new();
    let title = problems.check("title", text(&input.title, TITLE_MAX));
    let summary = problems.check("summary", text(&input.summary, SUMMARY_MAX));
    let description = problems.check(
        "description",
        parse_description(input.description.as_deref().unwrap_or("")),
    );
    let categories = parse_labels(&mut problems, "categories", &input.categories);
    let tags = parse_labels(&mut problems, "tags", &input.tags);
    let visibility = problems.check("visibility", parse_visibility(&input.visibility));
    let allowed = check_organizations(
        conn,
        &mut problems,
        "allowed_organization_ids",
        input.allowed_organization_ids.as_deref().unwrap_or(&[]),
        &caller.organization_id,
    )?;
    problems.finish()?;
    let now = db_time(clock.now());
    let mut listing = Listing {
        id: new_id("lst"),
        organization_id: caller.organization_id.clone(),
        title: title.unwrap_or_default(),
        summary: summary.unwrap_or_default(),
        description: description.unwrap_or_default(),
        categories: to_json(&categories),
        tags: to_json(&tags),
        visibility: visibility.unwrap_or_default(),
        state: "draft".into(),
        search_document: String::new(),
        created_at: now,
        updated_at: now,
        published_at: None,
        archived_at: None,
        search_labels: String::new(),
    };
    listing.search_document = search_document(&listing);
    listing.search_labels = search_labels(&listing);
    transaction(conn, |conn| {
        diesel::insert_into(listings::table)
            .values(&listing)
            .execute(conn)?;
        write_labels_and_access(conn, &listing, Some(&allowed))?;
        audit::record(
            conn,
            clock,
            Entry::new(
                &caller.organization_id,
                &caller.principal(),
                "listing.created",
                &listing.id,
            ),
        )?;
        view(
            conn,
            Some(&caller.organization_id),
            listing.clone(),
            caller.organization_name.clone(),
        )
    })
}

pub fn get(
    conn: &mut DbConnection,
    reader_org: Option<&str>,
    listing_id: &str,
) -> Result<ListingView> {
    let listing = readable_listing(conn, reader_org, listing_id)?;
    let name = organization_name(conn, &listing.organization_id)?;
    view(conn, reader_org, listing, name)
}

pub fn update(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    caller: &Caller,
    listing_id: &str,
    changes: ListingChanges,
) -> Result<ListingView> {
    let mut listing = owned_listing(conn, caller, listing_id)?;
    if listing.state == "archived" {
        return Err(Error::conflict(
            "listing_archived",
            "an archived listing cannot be changed",
        ));
    }
    let mut problems = Problems::new();
    if let Some(t) = &changes.title {
        listing.title = problems
            .check("title", text(t, TITLE_MAX))
            .unwrap_or_default();
    }
    if let Some(s) = &changes.summary {
        listing.summary = problems
            .check("summary", text(s, SUMMARY_MAX))
            .unwrap_or_default();
    }
    if let Some(d) = &changes.description {
        listing.description = problems
            .check("description", parse_description(d))
            .unwrap_or_default();
    }
    if let Some(c) = &changes.categories {
        listing.categories = to_json(&parse_labels(&mut problems, "categories", c));
    }
    if let Some(t) = &changes.tags {
        listing.tags = to_json(&parse_labels(&mut problems, "tags", t));
    }
    if let Some(v) = &changes.visibility {
        listing.visibility = problems
            .check("visibility", parse_visibility(v))
            .unwrap_or_default();
    }
    let allowed = match &changes.allowed_organization_ids {
        Some(ids) => Some(check_organizations(
            conn,
            &mut problems,
            "allowed_organization_ids",
            ids,
            &caller.organization_id,
        )?),
        None => None,
    };
    problems.finish()?;
    listing.search_document = search_document(&listing);
    listing.search_labels = search_labels(&listing);
    listing.updated_at = db_time(clock.now());
    transaction(conn, |conn| {
        diesel::update(listings::table.find(&listing.id))
            .set((
                listings::title.eq(&listing.title),
                listings::summary.eq(&listing.summary),
                listings::description.eq(&listing.description),
                listings::categories.eq(&listing.categories),
                listings::tags.eq(&listing.tags),
                listings::visibility.eq(&listing.visibility),
                listings::search_document.eq(&listing.search_document),
                listings::search_labels.eq(&listing.search_labels),
                listings::updated_at.eq(listing.updated_at),
            ))
            .execute(conn)?;
        write_labels_and_access(conn, &listing, allowed.as_deref())?;
        audit::record(
            conn,
            clock,
            Entry::new(
                &caller.organization_id,
                &caller.principal(),
                "listing.updated",
                &listing.id,
            ),
        )?;
        view(
            conn,
            Some(&caller.organization_id),
            listing.clone(),
            caller.organization_name.clone(),
        )
    })
}

/// Publishes a draft: it needs at least one active offer.
pub fn publish(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    caller: &Caller,
    listing_id: &str,
) -> Result<ListingView> {
    transition(conn, clock, caller, listing_id, "published")
}

/// Archives a listing: it leaves the catalog; existing subscriptions run their course.
pub fn archive(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    caller: &Caller,
    listing_id: &str,
) -> Result<ListingView> {
    transition(conn, clock, caller, listing_id, "archived")
}

fn transition(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    caller: &Caller,
    listing_id: &str,
    to: &'static str,
) -> Result<ListingView> {
    owned_listing(conn, caller, listing_id)?;
    transaction(conn, |conn| {
        let mut listing: Listing = listings::table
            .find(listing_id)
            .select(Listing::as_select())
            .first(conn)?;
        let allowed_from: &[&str] = if to == "published" {
            &["draft"]
        } else {
            &["draft", "published"]
        };
        if !allowed_from.contains(&listing.state.as_str()) {
            return Err(Error::conflict(
                "invalid_state",
                format!("the listing is {}: it cannot be {to}", listing.state),
            ));
        }
        let now = db_time(clock.now());
        if to == "published" {
            let active: i64 = offers::table
                .filter(offers::listing_id.eq(listing_id))
                .filter(offers::state.eq("active"))
                .count()
                .get_result(conn)?;
            if active == 0 {
                return Err(Error::conflict(
                    "no_active_offer",
                    "publishing needs at least one active offer",
                ));
            }
            listing.published_at = Some(now);
        } else {
            listing.archived_at = Some(now);
        }
        listing.state = to.to_string();
        listing.updated_at = now;
        diesel::update(listings::table.find(listing_id))
            .set((
                listings::state.eq(&listing.state),
                listings::published_at.eq(listing.published_at),
                listings::archived_at.eq(listing.archived_at),
                listings::updated_at.eq(now),
            ))
            .execute(conn)?;
        let action = if to == "published" {
            "listing.published"
        } else {
            "listing.archived"
        };
        audit::record(
            conn,
            clock,
            Entry::new(
                &caller.organization_id,
                &caller.principal(),
                action,
                listing_id,
            ),
        )?;
        view(
            conn,
            Some(&caller.organization_id),
            listing.clone(),
            caller.organization_name.clone(),
        )
    })
}

// ---------- the catalog ----------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sort {
    Relevance,
    Newest,
    Title,
}

/// A catalog query, parsed (two equal queries ask for the same page).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CatalogQuery {
    pub terms: Vec<String>,
    pub category: Option<String>,
    pub tag: Option<String>,
    pub provider: Option<String>,
    pub sort: Sort,
    pub limit: i64,
    cursor: Option<CatalogCursor>,
}

/// Where the next page starts, for each sort.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum CatalogCursor {
    Offset(i64),
    Newest { micros: i64, id: String },
    Title { title: String, id: String },
}

#[derive(Debug, Default, Deserialize)]
pub struct CatalogParams {
    pub q: Option<String>,
    pub category: Option<String>,
    pub tag: Option<String>,
    pub provider: Option<String>,
    pub sort: Option<String>,
    pub limit: Option<String>,
    pub cursor: Option<String>,
    pub mine: Option<String>,
}

impl CatalogQuery {
    /// The length of the text the query holds, roughly what it takes in memory.
    pub fn text_len(&self) -> usize {
        let cursor = match &self.cursor {
            None | Some(CatalogCursor::Offset(_)) => 0,
            Some(CatalogCursor::Newest { id, .. }) => id.len(),
            Some(CatalogCursor::Title { title, id }) => title.len() + id.len(),
        };
        let labels = [&self.category, &self.tag, &self.provider]
            .into_iter()
            .map(|v| v.as_ref().map_or(0, String::len))
            .sum::<usize>();
        self.terms.iter().map(String::len).sum::<usize>() + labels + cursor
    }

    pub fn parse(params: &CatalogParams) -> Result<CatalogQuery> {
        let mut problems = Problems::new();
        let q = params.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
        if q.is_some_and(|q| q.chars().count() > 500) {
            problems.push("q", "must be at most 500 characters");
        }
        let terms = q.map(schema::search::terms).unwrap_or_default();
        let sort = match params.sort.as_deref() {
            None if !terms.is_empty() => Sort::Relevance,
            None => Sort::Newest,
            Some("relevance") if !terms.is_empty() => Sort::Relevance,
            Some("relevance") => {
                problems.push("sort", "relevance needs a search query `q`");
                Sort::Newest
            }
            Some("newest") => Sort::Newest,
            Some("title") => Sort::Title,
            Some(_) => {
                problems.push("sort", "must be relevance, newest or title");
                Sort::Newest
            }
        };
        let limit = match params.limit.as_deref().map(str::parse::<i64>) {
            None => crate::domain::pagination::DEFAULT_LIMIT,
            Some(Ok(n)) if (1..=crate::domain::pagination::MAX_LIMIT).contains(&n) => n,
            Some(_) => {
                problems.push(
                    "limit",
                    format!(
                        "must be an integer from 1 to {}",
                        crate::domain::pagination::MAX_LIMIT
                    ),
                );
                1
            }
        };
        let cursor = match params.cursor.as_deref().filter(|c| !c.is_empty()) {
            None => None,
            Some(raw) => {
                let decoded = URL_SAFE_NO_PAD
                    .decode(raw)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<CatalogCursor>(&b).ok())
                    .filter(|c| match (c, sort) {
                        (CatalogCursor::Offset(offset), Sort::Relevance) => {
                            (0..=MAX_RELEVANCE_OFFSET).contains(offset)
                        }
                        (CatalogCursor::Newest { micros, id }, Sort::Newest) => {
                            cursor_instant(*micros).is_some() && cursor_text(id)
                        }
                        (CatalogCursor::Title { title, id }, Sort::Title) => {
                            cursor_text(title) && cursor_text(id)
                        }
                        _ => false,
                    });
                if decoded.is_none() {
                    problems.push("cursor", "is not a cursor this server issued for this sort");
                }
                decoded
            }
        };
        let label = |problems: &mut Problems, field: &str, v: &Option<String>| {
            v.as_deref().and_then(|s| {
                problems
                    .check(field, text(s, LABEL_MAX))
                    .map(|s| s.to_lowercase())
            })
        };
        let category = label(&mut problems, "category", &params.category);
        let tag = label(&mut problems, "tag", &params.tag);
        let provider = params.provider.clone().filter(|p| !p.is_empty());
        problems.finish()?;
        Ok(CatalogQuery {
            terms,
            category,
            tag,
            provider,
            sort,
            limit,
            cursor,
        })
    }
}

/// The published listings `reader_org` may see, narrowed by the query's filters: `$from`
/// (listings joined to their organizations, and perhaps to the full-text table) boxed, with
/// `$select` selected (by default the listing and its provider's name).
macro_rules! visible_listings {
    ($from:expr, $reader_org:expr, $query:expr) => {
        visible_listings!(
            $from,
            $reader_org,
            $query,
            (ListingShown::as_select(), organizations::name)
        )
    };
    ($from:expr, $reader_org:expr, $query:expr, $select:expr) => {{
        let mut q = $from
            .filter(listings::state.eq("published"))
            .select($select)
            .into_boxed();
        q = match $reader_org {
            Some(org) => q.filter(
                listings::visibility
                    .eq("public")
                    .or(listings::organization_id.eq(org.to_string()))
                    .or(listings::id.eq_any(
                        listing_access::table
                            .filter(listing_access::organization_id.eq(org.to_string()))
                            .select(listing_access::listing_id),
                    )),
            ),
            None => q.filter(listings::visibility.eq("public")),
        };
        for (kind, value) in [("category", &$query.category), ("tag", &$query.tag)] {
            if let Some(value) = value {
                q = q.filter(
                    listings::id.eq_any(
                        listing_labels::table
                            .filter(listing_labels::kind.eq(kind))
                            .filter(listing_labels::value.eq(value.clone()))
                            .select(listing_labels::listing_id),
                    ),
                );
            }
        }
        if let Some(provider) = &$query.provider {
            q = q.filter(listings::organization_id.eq(provider.clone()));
        }
        q
    }};
}

/// SQLite's full-text table joined to the listings it indexes and their providers.
macro_rules! fts_joined_listings {
    () => {
        schema::search::listings_fts::table
            .inner_join(
                listings::table.on(diesel::dsl::sql::<diesel::sql_types::Bool>(
                    "listings.rowid = listings_fts.rowid",
                )),
            )
            .inner_join(organizations::table.on(organizations::id.eq(listings::organization_id)))
    };
}

/// The matches (`Filters`) the reader may see, most recently created first, from `$skip` on,
/// selecting `$sqlite_select` or `$pg_select`: SQLite walks `listings_fts` backwards by rowid
/// (the order listings were created in), the index itself; PostgreSQL walks
/// `listings_catalog_created`, or finds a rare word's few listings through its index.
macro_rules! latest_created_matches {
    ($conn:expr, $reader_org:expr, $filters:expr, $sqlite_select:expr, $pg_select:expr, $skip:expr, $take:expr) => {{
        let (query, labels): Filters = $filters;
        if schema::search::ranks_through_join($conn) {
            visible_listings!(fts_joined_listings!(), $reader_org, query, $sqlite_select)
                .filter(schema::search::ranked_matches(&query.terms, labels))
                .order(schema::search::listings_fts::rowid.desc())
                .offset($skip)
                .limit($take)
                .load($conn)?
        } else {
            visible_listings!(
                listings::table.inner_join(organizations::table),
                $reader_org,
                query,
                $pg_select
            )
            .filter(schema::search::matches($conn, &query.terms, labels))
            .order((listings::created_at.desc(), listings::id.desc()))
            .offset($skip)
            .limit($take)
            .load($conn)?
        }
    }};
}

/// Published listings the reader may see, filtered, searched and sorted, a page at a time.
///
/// `sort=relevance` ranks the `relevance_window` most recently created matches by their text
/// rank and lists any older matches after them, most recently created first: ranking every
/// match of a word found in most of the catalog would cost a text rank per match, on every
/// such search.
pub fn search(
    conn: &mut DbConnection,
    reader_org: Option<&str>,
    query: &CatalogQuery,
    relevance_window: i64,
) -> Result<Page<ListingView>> {
    let fetch = query.limit + 1;
    let offset = match (&query.sort, &query.cursor) {
        (Sort::Relevance, Some(CatalogCursor::Offset(n))) => *n,
        _ => 0,
    };
    let (other_filters, labels) = labels_apart(query);
    let mut rows: Vec<(ListingShown, String)> = match query.sort {
        // A relevance page takes several statements; one snapshot keeps them in agreement.
        Sort::Relevance => read_snapshot(conn, |conn| {
            let ids = relevance_page(
                conn,
                reader_org,
                (&other_filters, &labels),
                relevance_window,
                offset,
                fetch,
            )?;
            // By id alone: the ids passed the reader's filters in this same snapshot. Filtering
            // again in SQL makes SQLite walk the `state` index over every published listing
            // instead of reading these by id.
            let mut found: Vec<(ListingShown, String)> = listings::table
                .inner_join(organizations::table)
                .filter(listings::id.eq_any(&ids))
                .select((ListingShown::as_select(), organizations::name))
                .load(conn)?;
            found.sort_by_cached_key(|(l, _)| ids.iter().position(|id| *id == l.id));
            Ok(found)
        })?,
        _ => {
            let mut q = visible_listings!(
                listings::table.inner_join(organizations::table),
                reader_org,
                other_filters
            );
            if !query.terms.is_empty() {
                q = q.filter(schema::search::matches(conn, &query.terms, &labels));
            }
            q = match (&query.sort, &query.cursor) {
                (Sort::Newest, cursor) => {
                    let q = q.order((listings::published_at.desc(), listings::id.desc()));
                    match cursor {
                        Some(CatalogCursor::Newest { micros, id }) => {
                            // Checked when the query was read.
                            let at = cursor_instant(*micros).unwrap_or(NaiveDateTime::MIN);
                            q.filter(
                                listings::published_at.lt(at).or(listings::published_at
                                    .eq(at)
                                    .and(listings::id.lt(id.clone()))),
                            )
                        }
                        _ => q,
                    }
                }
                (_, cursor) => {
                    // Sort::Title (relevance is ranked above).
                    let q = q.order((listings::title.asc(), listings::id.asc()));
                    match cursor {
                        Some(CatalogCursor::Title { title, id }) => q.filter(
                            listings::title.gt(title.clone()).or(listings::title
                                .eq(title.clone())
                                .and(listings::id.gt(id.clone()))),
                        ),
                        _ => q,
                    }
                }
            };
            q.limit(fetch).load(conn)?
        }
    };
    let more = rows.len() as i64 > query.limit;
    rows.truncate(query.limit as usize);
    let next_cursor = match (more, rows.last()) {
        (true, Some((last, _))) => Some(encode_cursor(&match query.sort {
            Sort::Relevance => CatalogCursor::Offset(offset.saturating_add(query.limit)),
            Sort::Newest => CatalogCursor::Newest {
                micros: last
                    .published_at
                    .map(|t| t.and_utc().timestamp_micros())
                    .unwrap_or(0),
                id: last.id.clone(),
            },
            Sort::Title => CatalogCursor::Title {
                title: last.title.clone(),
                id: last.id.clone(),
            },
        })),
        _ => None,
    };
    let data = rows
        .into_iter()
        .map(|(l, name)| view(conn, reader_org, l, name))
        .collect::<Result<Vec<_>>>()?;
    Ok(Page { data, next_cursor })
}

/// A query's filters as the database applies them: with search words, the category and tag
/// are left out of the filters and matched by the full-text index with the words
/// ([`labels_apart`]).
type Filters<'a> = (&'a CatalogQuery, &'a [(LabelKind, &'a str)]);

/// The ids of relevance positions `offset..offset + fetch`: the `window` most recently
/// created matches ranked (best first, ties by id), then the older matches, most recently
/// created first. "Created" is the order of insertion on SQLite (the rowid of
/// `listings_fts`) and `(created_at, id)` on PostgreSQL: the same order but for listings
/// created within the same instant.
fn relevance_page(
    conn: &mut DbConnection,
    reader_org: Option<&str>,
    filters: Filters,
    window: i64,
    offset: i64,
    fetch: i64,
) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    if offset < window {
        let mut ranked = ranked_window(conn, reader_org, filters, window)?;
        let full = ranked.len() as i64 == window;
        ranked.sort_by(|(a, rank_a), (b, rank_b)| rank_b.total_cmp(rank_a).then_with(|| a.cmp(b)));
        ids.extend(
            ranked
                .into_iter()
                .skip(offset as usize)
                .take(fetch as usize)
                .map(|(id, _)| id),
        );
        if !full {
            return Ok(ids);
        }
    }
    let skip = offset.max(window);
    let take = offset.saturating_add(fetch) - skip;
    if take > 0 {
        ids.extend(latest_created_match_ids(
            conn, reader_org, filters, skip, take,
        )?);
    }
    Ok(ids)
}

/// The `window` most recently created matches the reader may see, with their text rank,
/// computed in the same query: SQLite's bm25 for the rows the walk returns, PostgreSQL's
/// `ts_rank` over the vector in the row it reads (kept in the row: migration 000011).
fn ranked_window(
    conn: &mut DbConnection,
    reader_org: Option<&str>,
    filters: Filters,
    window: i64,
) -> Result<Vec<(String, f64)>> {
    use schema::search::{joined_rank, rank};
    Ok(latest_created_matches!(
        conn,
        reader_org,
        filters,
        (listings::id, joined_rank()),
        (listings::id, rank(&filters.0.terms)),
        0,
        window
    ))
}

/// The ids of the matches the reader may see, most recently created first, from `skip` on.
fn latest_created_match_ids(
    conn: &mut DbConnection,
    reader_org: Option<&str>,
    filters: Filters,
    skip: i64,
    take: i64,
) -> Result<Vec<String>> {
    Ok(latest_created_matches!(
        conn,
        reader_org,
        filters,
        listings::id,
        listings::id,
        skip,
        take
    ))
}

/// The query without its category and tag when it has search words, and those labels, for
/// the full-text index to match with the words: one index lookup finds the listings with
/// both, where testing each match's labels would walk every match of a common word.
fn labels_apart(query: &CatalogQuery) -> (CatalogQuery, Vec<(LabelKind, &str)>) {
    if query.terms.is_empty() {
        return (query.clone(), Vec::new());
    }
    let labels = [
        (LabelKind::Category, &query.category),
        (LabelKind::Tag, &query.tag),
    ]
    .into_iter()
    .filter_map(|(kind, value)| value.as_deref().map(|v| (kind, v)))
    .collect();
    let rest = CatalogQuery {
        category: None,
        tag: None,
        ..query.clone()
    };
    (rest, labels)
}

fn encode_cursor(c: &CatalogCursor) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(c).unwrap_or_default())
}

/// The caller's own listings in every state (`?mine=true`).
pub fn mine(
    conn: &mut DbConnection,
    caller: &Caller,
    page: &PageRequest,
) -> Result<Page<ListingView>> {
    caller.require(Capability::Read)?;
    let rows: Vec<ListingShown> = after_cursor!(
        listings::table.filter(listings::organization_id.eq(&caller.organization_id)),
        page,
        listings::created_at,
        listings::id
    )
    .select(ListingShown::as_select())
    .load(conn)?;
    Page::try_from_rows(
        page,
        rows,
        |l| (l.created_at, l.id.clone()),
        |l| {
            view(
                conn,
                Some(&caller.organization_id),
                l,
                caller.organization_name.clone(),
            )
        },
    )
}
