//! Listings, offers, datasets and revisions.

use actix_web::{web, HttpResponse};

use super::extract::{Authenticated, JsonBody, MaybeAuthenticated, PageQuery};
use super::respond::{created, json, json_body, json_bytes};
use crate::domain::catalog::data::{self, NewDataset, NewRevision, RevokeRevision};
use crate::domain::catalog::listing::{
    self, CatalogParams, CatalogQuery, ListingChanges, NewListing,
};
use crate::domain::catalog::offer::{self, NewOffer};
use crate::domain::pagination::PageRequest;
use crate::domain::{Error, Result};
use crate::state::State;
use schema::DbConnection;

type Id = web::Path<String>;

// ---------- listings ----------

pub async fn create_listing(
    state: State,
    Authenticated(caller): Authenticated,
    JsonBody(body): JsonBody<NewListing>,
) -> Result<HttpResponse> {
    let clock = state.clock.clone();
    let view = write_listing(&state, move |conn| {
        listing::create(conn, clock.as_ref(), &caller, body)
    })
    .await?;
    Ok(created(&view))
}

/// The catalog, or with `mine=true` the caller's own listings in every state.
pub async fn list_listings(
    state: State,
    who: MaybeAuthenticated,
    params: web::Query<CatalogParams>,
) -> Result<HttpResponse> {
    match params.mine.as_deref() {
        Some("true") => {
            let caller = who
                .0
                .ok_or(Error::Unauthorized("mine=true needs credentials"))?;
            let page = PageQuery {
                limit: params.limit.clone(),
                cursor: params.cursor.clone(),
            }
            .parse()?;
            let listings = state
                .db(move |conn| listing::mine(conn, &caller, &page))
                .await?;
            Ok(json(&listings))
        }
        None | Some("false") => {
            let reader = who.reader()?;
            let query = CatalogQuery::parse(&params)?;
            let search = || {
                let (state, reader, query) = (state.clone(), reader.clone(), query.clone());
                async move {
                    state.metrics.catalog_search();
                    let window = state.settings.catalog_relevance_window;
                    let listings = state
                        .db(move |conn| listing::search(conn, reader.as_deref(), &query, window))
                        .await?;
                    json_bytes(&listings)
                }
            };
            let (page, served) = state
                .catalog_pages
                .get_or_compute(reader.clone(), query.clone(), search)
                .await?;
            state.metrics.catalog_page(served);
            Ok(json_body(page))
        }
        Some(_) => Err(Error::validation("mine", "must be true or false")),
    }
}

pub async fn get_listing(state: State, who: MaybeAuthenticated, id: Id) -> Result<HttpResponse> {
    let reader = who.reader()?;
    let view = state
        .db(move |conn| listing::get(conn, reader.as_deref(), &id))
        .await?;
    Ok(json(&view))
}

pub async fn update_listing(
    state: State,
    Authenticated(caller): Authenticated,
    id: Id,
    JsonBody(body): JsonBody<ListingChanges>,
) -> Result<HttpResponse> {
    let clock = state.clock.clone();
    let view = write_listing(&state, move |conn| {
        listing::update(conn, clock.as_ref(), &caller, &id, body)
    })
    .await?;
    Ok(json(&view))
}

pub async fn publish_listing(
    state: State,
    Authenticated(caller): Authenticated,
    id: Id,
) -> Result<HttpResponse> {
    let clock = state.clock.clone();
    let view = write_listing(&state, move |conn| {
        listing::publish(conn, clock.as_ref(), &caller, &id)
    })
    .await?;
    Ok(json(&view))
}

pub async fn archive_listing(
    state: State,
    Authenticated(caller): Authenticated,
    id: Id,
) -> Result<HttpResponse> {
    let clock = state.clock.clone();
    let view = write_listing(&state, move |conn| {
        listing::archive(conn, clock.as_ref(), &caller, &id)
    })
    .await?;
    Ok(json(&view))
}

/// Runs a write to a listing; once it has committed, catalog pages are searched anew. Done
/// on the database's thread, so it happens even when the client has gone meanwhile.
async fn write_listing<T: Send + 'static>(
    state: &State,
    write: impl FnOnce(&mut DbConnection) -> Result<T> + Send + 'static,
) -> Result<T> {
    let written = state.clone();
    state
        .db(move |conn| {
            let view = write(conn)?;
            written.catalog_pages.listings_changed();
            Ok(view)
        })
        .await
}

// ---------- offers ----------

pub async fn create_offer(
    state: State,
    Authenticated(caller): Authenticated,
    id: Id,
    JsonBody(body): JsonBody<NewOffer>,
) -> Result<HttpResponse> {
    let clock = state.clock.clone();
    let view = state
        .db(move |conn| offer::create(conn, clock.as_ref(), &caller, &id, body))
        .await?;
    Ok(created(&view))
}

pub async fn list_offers(
    state: State,
    who: MaybeAuthenticated,
    id: Id,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse> {
    let (reader, page) = (who.reader()?, query.parse()?);
    let offers = state
        .db(move |conn| offer::list(conn, reader.as_deref(), &id, &page))
        .await?;
    Ok(json(&offers))
}

pub async fn archive_offer(
    state: State,
    Authenticated(caller): Authenticated,
    id: Id,
) -> Result<HttpResponse> {
    let clock = state.clock.clone();
    let view = state
        .db(move |conn| offer::archive(conn, clock.as_ref(), &caller, &id))
        .await?;
    Ok(json(&view))
}

// ---------- datasets and revisions ----------

pub async fn create_dataset(
    state: State,
    Authenticated(caller): Authenticated,
    id: Id,
    JsonBody(body): JsonBody<NewDataset>,
) -> Result<HttpResponse> {
    let clock = state.clock.clone();
    let view = state
        .db(move |conn| data::create_dataset(conn, clock.as_ref(), &caller, &id, body))
        .await?;
    Ok(created(&view))
}

pub async fn list_datasets(
    state: State,
    who: MaybeAuthenticated,
    id: Id,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse> {
    let (reader, page) = (who.reader()?, query.parse()?);
    let datasets = state
        .db(move |conn| data::list_datasets(conn, reader.as_deref(), &id, &page))
        .await?;
    Ok(json(&datasets))
}

pub async fn get_dataset(state: State, who: MaybeAuthenticated, id: Id) -> Result<HttpResponse> {
    let reader = who.reader()?;
    let view = state
        .db(move |conn| data::get_dataset(conn, reader.as_deref(), &id))
        .await?;
    Ok(json(&view))
}

pub async fn create_revision(
    state: State,
    Authenticated(caller): Authenticated,
    id: Id,
    JsonBody(body): JsonBody<NewRevision>,
) -> Result<HttpResponse> {
    let clock = state.clock.clone();
    let view = state
        .db(move |conn| data::create_revision(conn, clock.as_ref(), &caller, &id, body))
        .await?;
    Ok(created(&view))
}

pub async fn list_revisions(
    state: State,
    who: MaybeAuthenticated,
    id: Id,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse> {
    let (reader, page): (Option<String>, PageRequest) = (who.reader()?, query.parse()?);
    let revisions = state
        .db(move |conn| data::list_revisions(conn, reader.as_deref(), &id, &page))
        .await?;
    Ok(json(&revisions))
}

pub async fn get_revision(state: State, who: MaybeAuthenticated, id: Id) -> Result<HttpResponse> {
    let reader = who.reader()?;
    let view = state
        .db(move |conn| data::get_revision(conn, reader.as_deref(), &id))
        .await?;
    Ok(json(&view))
}

pub async fn finalize_revision(
    state: State,
    Authenticated(caller): Authenticated,
    id: Id,
) -> Result<HttpResponse> {
    let clock = state.clock.clone();
    let view = state
        .db(move |conn| data::finalize_revision(conn, clock.as_ref(), &caller, &id))
        .await?;
    Ok(json(&view))
}

pub async fn revoke_revision(
    state: State,
    Authenticated(caller): Authenticated,
    id: Id,
    JsonBody(body): JsonBody<RevokeRevision>,
) -> Result<HttpResponse> {
    let clock = state.clock.clone();
    let view = state
        .db(move |conn| data::revoke_revision(conn, clock.as_ref(), &caller, &id, body))
        .await?;
    Ok(json(&view))
}
