//! Outgoing webhook endpoints (organization admins only, never API keys).

use actix_web::{web, HttpResponse};

use super::extract::{Authenticated, JsonBody, PageQuery};
use super::respond::{json, no_content, secret};
use crate::domain::webhooks::{self, NewEndpoint};
use crate::domain::Result;
use crate::state::State;

pub async fn create_endpoint(
    state: State,
    Authenticated(caller): Authenticated,
    JsonBody(body): JsonBody<NewEndpoint>,
) -> Result<HttpResponse> {
    let clock = state.clock.clone();
    let allow_private = state.settings.webhook_allow_private;
    let endpoint = state
        .db(move |conn| {
            webhooks::create_endpoint(conn, clock.as_ref(), &caller, body, allow_private)
        })
        .await?;
    Ok(secret(HttpResponse::Created(), &endpoint))
}

pub async fn list_endpoints(
    state: State,
    Authenticated(caller): Authenticated,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse> {
    let page = query.parse()?;
    let endpoints = state
        .db(move |conn| webhooks::list_endpoints(conn, &caller, &page))
        .await?;
    Ok(json(&endpoints))
}

pub async fn delete_endpoint(
    state: State,
    Authenticated(caller): Authenticated,
    id: web::Path<String>,
) -> Result<HttpResponse> {
    let clock = state.clock.clone();
    state
        .db(move |conn| webhooks::delete_endpoint(conn, clock.as_ref(), &caller, &id))
        .await?;
    Ok(no_content())
}
