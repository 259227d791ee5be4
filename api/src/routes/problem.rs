//! Errors as RFC 9457 problem responses; causes of unexpected failures are logged, never sent.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::domain::{Error, FieldError};

pub const PROBLEM_JSON: &str = "application/problem+json";

#[derive(Debug, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    pub code: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

impl Problem {
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Problem {
        Problem {
            kind: format!("urn:marketplace:problem:{code}"),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail: detail.into(),
            code: code.to_string(),
            errors: Vec::new(),
        }
    }

    pub fn response(&self) -> HttpResponse {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(self).unwrap_or_default();
        HttpResponse::build(status)
            .insert_header((header::CONTENT_TYPE, PROBLEM_JSON))
            .body(body)
    }

    /// A problem for a status the framework produced (unknown route, wrong method...).
    pub fn for_status(status: StatusCode) -> Problem {
        let (code, detail) = match status.as_u16() {
            400 => ("bad_request", "the request is malformed"),
            401 => ("unauthorized", "authentication is required"),
            404 => ("not_found", "no such resource"),
            405 => (
                "method_not_allowed",
                "this method is not allowed on this resource",
            ),
            406 => ("not_acceptable", "no acceptable representation"),
            413 => ("payload_too_large", "the request body is too large"),
            415 => ("unsupported_media_type", "unsupported content type"),
            s if s >= 500 => (
                "internal_error",
                "an unexpected error occurred; it has been logged",
            ),
            _ => ("error", "the request failed"),
        };
        Problem::new(status, code, detail)
    }
}

fn status_and_code(error: &Error) -> (StatusCode, &'static str) {
    match error {
        Error::MalformedBody(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
        Error::Validation(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
        Error::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
        Error::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
        Error::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
        Error::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        Error::Conflict { code, .. } => (StatusCode::CONFLICT, code),
        Error::IdempotencyMismatch(_) => {
            (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
        }
        Error::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        Error::UnsupportedMediaType(_) => {
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
        }
        Error::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        Error::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "service_unavailable"),
        Error::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
    }
}

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        status_and_code(self).0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, code) = status_and_code(self);
        let detail = match self {
            Error::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                "an unexpected error occurred; it has been logged".to_string()
            }
            Error::Unavailable(cause) => {
                tracing::warn!(%cause, "service unavailable");
                "the service is temporarily unavailable; retry shortly".to_string()
            }
            Error::Validation(errors) => {
                let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
                format!("invalid fields: {}", fields.join(", "))
            }
            Error::MalformedBody(why) => format!("the body is not valid JSON: {why}"),
            other => other.to_string(),
        };
        let mut problem = Problem::new(status, code, detail);
        if let Error::Validation(errors) = self {
            problem.errors = errors.clone();
        }
        let mut response = problem.response();
        if let Error::Unauthorized(_) = self {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Error::RateLimited { retry_after_secs } = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
        }
        if let Error::Unavailable(_) = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(1u32));
        }
        response
    }
}
