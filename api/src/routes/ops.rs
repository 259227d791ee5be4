//! Operations: liveness, readiness, metrics, the contract and its interactive reference.

use std::sync::{Arc, OnceLock};

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use diesel::RunQueryDsl;
use utoipa_swagger_ui::Config;

use crate::domain::{Error, Result};
use crate::state::State;

/// The contract, embedded at build time.
pub const OPENAPI_YAML: &str = include_str!("../../../openapi.yaml");

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

pub async fn readyz(state: State) -> Result<HttpResponse> {
    state
        .db(|conn| {
            diesel::sql_query("SELECT 1").execute(conn)?;
            Ok(())
        })
        .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "status": "ready" })))
}

pub async fn metrics(state: State) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        ))
        .body(state.metrics.render(&state.pool))
}

pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "application/yaml"))
        .body(OPENAPI_YAML)
}

pub async fn docs_index() -> HttpResponse {
    HttpResponse::Found()
        .insert_header((header::LOCATION, "/docs/"))
        .finish()
}

/// Swagger UI, shipped inside the binary, reading `/openapi.yaml`.
pub async fn docs_file(tail: web::Path<String>) -> Result<HttpResponse> {
    static CONFIG: OnceLock<Arc<Config<'static>>> = OnceLock::new();
    let config = CONFIG
        .get_or_init(|| Arc::new(Config::from("/openapi.yaml")))
        .clone();
    let path = if tail.is_empty() {
        "index.html".to_string()
    } else {
        tail.into_inner()
    };
    match utoipa_swagger_ui::serve(&path, config) {
        Ok(Some(file)) => Ok(HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, file.content_type))
            .body(file.bytes.into_owned())),
        Ok(None) => Err(Error::NotFound("documentation file")),
        Err(e) => Err(Error::internal(e)),
    }
}
