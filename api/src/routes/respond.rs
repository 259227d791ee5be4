//! Building JSON responses, and marking those that carry secrets.

use actix_web::{HttpResponse, HttpResponseBuilder};
use serde::Serialize;

/// Marks a response that carries a secret (tokens, a new API key): the idempotency layer
/// never stores it.
#[derive(Debug, Clone, Copy)]
pub struct CarriesSecret;

pub fn secret<T: Serialize>(mut builder: HttpResponseBuilder, body: &T) -> HttpResponse {
    let mut response = builder
        .insert_header(("Cache-Control", "no-store"))
        .json(body);
    response.extensions_mut().insert(CarriesSecret);
    response
}

pub fn created<T: Serialize>(body: &T) -> HttpResponse {
    HttpResponse::Created().json(body)
}

pub fn json<T: Serialize>(body: &T) -> HttpResponse {
    HttpResponse::Ok().json(body)
}

pub fn no_content() -> HttpResponse {
    HttpResponse::NoContent().finish()
}
