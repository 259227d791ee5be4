//! Building JSON responses, and marking those that carry secrets.

use actix_web::{HttpResponse, HttpResponseBuilder};
use bytes::Bytes;
use serde::Serialize;

use crate::domain::{Error, Result};

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

/// A body serialized ahead of the response, to be kept and served again.
pub fn json_bytes<T: Serialize>(body: &T) -> Result<Bytes> {
    serde_json::to_vec(body)
        .map(Bytes::from)
        .map_err(|e| Error::internal(format!("serializing a response: {e}")))
}

/// A 200 with a body from [`json_bytes`].
pub fn json_body(body: Bytes) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(mime::APPLICATION_JSON)
        .body(body)
}

pub fn no_content() -> HttpResponse {
    HttpResponse::NoContent().finish()
}
