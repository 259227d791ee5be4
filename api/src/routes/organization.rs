//! An organization's members and API keys (organization admins only).

use actix_web::{web, HttpResponse};

use super::extract::{Authenticated, JsonBody, PageQuery};
use super::respond::{created, json, no_content, secret};
use crate::domain::accounts::{self, NewApiKeyRequest, NewMemberRequest};
use crate::domain::Result;
use crate::state::State;

pub async fn add_member(
    state: State,
    Authenticated(caller): Authenticated,
    JsonBody(body): JsonBody<NewMemberRequest>,
) -> Result<HttpResponse> {
    let clock = state.clock.clone();
    let member = state
        .db(move |conn| accounts::add_member(conn, clock.as_ref(), &caller, body))
        .await?;
    Ok(created(&member))
}

pub async fn list_members(
    state: State,
    Authenticated(caller): Authenticated,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse> {
    let page = query.parse()?;
    let members = state
        .db(move |conn| accounts::list_members(conn, &caller, &page))
        .await?;
    Ok(json(&members))
}

pub async fn remove_member(
    state: State,
    Authenticated(caller): Authenticated,
    id: web::Path<String>,
) -> Result<HttpResponse> {
    let clock = state.clock.clone();
    state
        .db(move |conn| accounts::remove_member(conn, clock.as_ref(), &caller, &id))
        .await?;
    state.callers.clear();
    Ok(no_content())
}

pub async fn create_api_key(
    state: State,
    Authenticated(caller): Authenticated,
    JsonBody(body): JsonBody<NewApiKeyRequest>,
) -> Result<HttpResponse> {
    let clock = state.clock.clone();
    let key = state
        .db(move |conn| accounts::create_api_key(conn, clock.as_ref(), &caller, body))
        .await?;
    Ok(secret(HttpResponse::Created(), &key))
}

pub async fn list_api_keys(
    state: State,
    Authenticated(caller): Authenticated,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse> {
    let page = query.parse()?;
    let keys = state
        .db(move |conn| accounts::list_api_keys(conn, &caller, &page))
        .await?;
    Ok(json(&keys))
}

pub async fn revoke_api_key(
    state: State,
    Authenticated(caller): Authenticated,
    id: web::Path<String>,
) -> Result<HttpResponse> {
    let clock = state.clock.clone();
    state
        .db(move |conn| accounts::revoke_api_key(conn, clock.as_ref(), &caller, &id))
        .await?;
    Ok(no_content())
}
