//! Subscriptions, grants and usage.

use actix_web::{web, HttpResponse};

use super::extract::{Authenticated, JsonBody, PageQuery};
use super::respond::{created, json};
use crate::domain::commerce::grants;
use crate::domain::commerce::subscriptions::{
    self, CancelRequest, Decision, ListParams, NewSubscription, SubscriptionChanges,
};
use crate::domain::commerce::usage::{self, UsageBatch, UsageWindow};
use crate::domain::Result;
use crate::state::State;

type Id = web::Path<String>;

pub async fn subscribe(
    state: State,
    Authenticated(caller): Authenticated,
    JsonBody(body): JsonBody<NewSubscription>,
) -> Result<HttpResponse> {
    let clock = state.clock.clone();
    let view = state
        .db(move |conn| subscriptions::create(conn, clock.as_ref(), &caller, body))
        .await?;
    Ok(created(&view))
}

pub async fn list_subscriptions(
    state: State,
    Authenticated(caller): Authenticated,
    params: web::Query<ListParams>,
) -> Result<HttpResponse> {
    let page = PageQuery {
        limit: params.limit.clone(),
        cursor: params.cursor.clone(),
    }
    .parse()?;
    let params = params.into_inner();
    let list = state
        .db(move |conn| subscriptions::list(conn, &caller, &params, &page))
        .await?;
    Ok(json(&list))
}

pub async fn get_subscription(
    state: State,
    Authenticated(caller): Authenticated,
    id: Id,
) -> Result<HttpResponse> {
    let view = state
        .db(move |conn| subscriptions::get(conn, &caller, &id))
        .await?;
    Ok(json(&view))
}

pub async fn update_subscription(
    state: State,
    Authenticated(caller): Authenticated,
    id: Id,
    JsonBody(body): JsonBody<SubscriptionChanges>,
) -> Result<HttpResponse> {
    let clock = state.clock.clone();
    let view = state
        .db(move |conn| subscriptions::update(conn, clock.as_ref(), &caller, &id, body))
        .await?;
    Ok(json(&view))
}

pub async fn approve(
    state: State,
    Authenticated(caller): Authenticated,
    id: Id,
) -> Result<HttpResponse> {
    let clock = state.clock.clone();
    let view = state
        .db(move |conn| subscriptions::approve(conn, clock.as_ref(), &caller, &id))
        .await?;
    Ok(json(&view))
}

pub async fn reject(
    state: State,
    Authenticated(caller): Authenticated,
    id: Id,
    JsonBody(body): JsonBody<Decision>,
) -> Result<HttpResponse> {
    let clock = state.clock.clone();
    let view = state
        .db(move |conn| subscriptions::reject(conn, clock.as_ref(), &caller, &id, body))
        .await?;
    Ok(json(&view))
}

pub async fn cancel(
    state: State,
    Authenticated(caller): Authenticated,
    id: Id,
    JsonBody(body): JsonBody<CancelRequest>,
) -> Result<HttpResponse> {
    let clock = state.clock.clone();
    let view = state
        .db(move |conn| subscriptions::cancel(conn, clock.as_ref(), &caller, &id, body))
        .await?;
    Ok(json(&view))
}

pub async fn list_grants(
    state: State,
    Authenticated(caller): Authenticated,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse> {
    let page = query.parse()?;
    let clock = state.clock.clone();
    let list = state
        .db(move |conn| grants::list(conn, clock.as_ref(), &caller, &page))
        .await?;
    Ok(json(&list))
}

pub async fn record_usage(
    state: State,
    Authenticated(caller): Authenticated,
    JsonBody(body): JsonBody<UsageBatch>,
) -> Result<HttpResponse> {
    let clock = state.clock.clone();
    let result = state
        .db(move |conn| usage::record(conn, clock.as_ref(), &caller, body))
        .await?;
    Ok(json(&result))
}

pub async fn usage_report(
    state: State,
    Authenticated(caller): Authenticated,
    id: Id,
    window: web::Query<UsageWindow>,
) -> Result<HttpResponse> {
    let clock = state.clock.clone();
    let window = window.into_inner();
    let report = state
        .db(move |conn| usage::report(conn, clock.as_ref(), &caller, &id, &window))
        .await?;
    Ok(json(&report))
}
