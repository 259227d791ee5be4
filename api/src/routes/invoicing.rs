//! Billing runs, invoices, credit notes, payments, reports and billing settings.

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::extract::{Authenticated, JsonBody, PageQuery};
use super::respond::{created, json};
use crate::domain::invoicing::invoices::{self, CreditNoteRequest, InvoiceFilters, PaymentRequest};
use crate::domain::invoicing::reports::{self, Basis, SettingsChanges};
use crate::domain::invoicing::runs::{self, RunRequest};
use crate::domain::{Error, Result};
use crate::state::State;

type Id = web::Path<String>;

pub async fn start_run(
    state: State,
    Authenticated(caller): Authenticated,
    JsonBody(body): JsonBody<RunRequest>,
) -> Result<HttpResponse> {
    let (clock, defaults) = (state.clock.clone(), state.billing_defaults());
    let run = state
        .db(move |conn| {
            runs::run(
                conn,
                clock.as_ref(),
                defaults,
                &caller,
                body,
                &mut |_, _| {},
            )
        })
        .await?;
    Ok(created(&run))
}

#[derive(Debug, Deserialize)]
pub struct PeriodQuery {
    pub period: Option<String>,
}

pub async fn list_runs(
    state: State,
    Authenticated(caller): Authenticated,
    q: web::Query<PeriodQuery>,
) -> Result<HttpResponse> {
    let period = q.into_inner().period;
    let list = state
        .db(move |conn| runs::list_runs(conn, &caller, period.as_deref()))
        .await?;
    Ok(json(
        &serde_json::json!({ "data": list, "next_cursor": null }),
    ))
}

pub async fn list_invoices(
    state: State,
    Authenticated(caller): Authenticated,
    f: web::Query<InvoiceFilters>,
) -> Result<HttpResponse> {
    let page = PageQuery {
        limit: f.limit.clone(),
        cursor: f.cursor.clone(),
    }
    .parse()?;
    let f = f.into_inner();
    let list = state
        .db(move |conn| invoices::list(conn, &caller, &f, &page))
        .await?;
    Ok(json(&list))
}

pub async fn export(
    state: State,
    Authenticated(caller): Authenticated,
    f: web::Query<InvoiceFilters>,
) -> Result<HttpResponse> {
    let f = f.into_inner();
    let name = format!(
        "invoices-{}.csv",
        f.period.clone().unwrap_or_else(|| "all".into())
    );
    let body = state
        .db(move |conn| reports::export_csv(conn, &caller, &f))
        .await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/csv; charset=utf-8"))
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{name}\""),
        ))
        .body(body))
}

pub async fn get_invoice(
    state: State,
    Authenticated(caller): Authenticated,
    id: Id,
) -> Result<HttpResponse> {
    let view = state
        .db(move |conn| invoices::get(conn, &caller, &id))
        .await?;
    Ok(json(&view))
}

pub async fn finalize(
    state: State,
    Authenticated(caller): Authenticated,
    id: Id,
) -> Result<HttpResponse> {
    let clock = state.clock.clone();
    let view = state
        .db(move |conn| invoices::finalize(conn, clock.as_ref(), &caller, &id))
        .await?;
    Ok(json(&view))
}

pub async fn void(
    state: State,
    Authenticated(caller): Authenticated,
    id: Id,
) -> Result<HttpResponse> {
    let clock = state.clock.clone();
    let view = state
        .db(move |conn| invoices::void(conn, clock.as_ref(), &caller, &id))
        .await?;
    Ok(json(&view))
}

pub async fn pay(
    state: State,
    Authenticated(caller): Authenticated,
    id: Id,
    JsonBody(body): JsonBody<PaymentRequest>,
) -> Result<HttpResponse> {
    let clock = state.clock.clone();
    let view = state
        .db(move |conn| invoices::pay(conn, clock.as_ref(), &caller, &id, body))
        .await?;
    Ok(json(&view))
}

pub async fn credit(
    state: State,
    Authenticated(caller): Authenticated,
    id: Id,
    JsonBody(body): JsonBody<CreditNoteRequest>,
) -> Result<HttpResponse> {
    let clock = state.clock.clone();
    let note = state
        .db(move |conn| invoices::credit(conn, clock.as_ref(), &caller, &id, body))
        .await?;
    Ok(created(&note))
}

fn required_period(q: PeriodQuery) -> Result<String> {
    q.period
        .ok_or_else(|| Error::validation("period", "is required, YYYY-MM"))
}

pub async fn revenue(
    state: State,
    Authenticated(caller): Authenticated,
    q: web::Query<PeriodQuery>,
) -> Result<HttpResponse> {
    let period = required_period(q.into_inner())?;
    let report = state
        .db(move |conn| reports::provider_report(conn, &caller, &period, Basis::Revenue))
        .await?;
    Ok(json(&report))
}

pub async fn payouts(
    state: State,
    Authenticated(caller): Authenticated,
    q: web::Query<PeriodQuery>,
) -> Result<HttpResponse> {
    let period = required_period(q.into_inner())?;
    let report = state
        .db(move |conn| reports::provider_report(conn, &caller, &period, Basis::Payouts))
        .await?;
    Ok(json(&report))
}

pub async fn billing_settings(
    state: State,
    Authenticated(caller): Authenticated,
    id: Id,
    JsonBody(body): JsonBody<SettingsChanges>,
) -> Result<HttpResponse> {
    let (clock, defaults) = (state.clock.clone(), state.billing_defaults());
    let settings = state
        .db(move |conn| {
            reports::update_settings(conn, clock.as_ref(), defaults, &caller, &id, body)
        })
        .await?;
    Ok(json(&settings))
}
