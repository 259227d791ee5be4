//! Cross-cutting request handling: request ids, logs and metrics; panics caught; every error
//! a problem document; idempotency keys on POST.

use std::borrow::Cow;
use std::panic::AssertUnwindSafe;
use std::time::Instant;

use actix_web::body::{to_bytes, BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::web::Bytes;
use actix_web::{HttpResponse, ResponseError};
use futures_util::{FutureExt, StreamExt};
use sha2::{Digest, Sha256};
use tracing::Instrument;

use crate::domain::idempotency::{self, Begin, RequestKey, StoredResponse};
use crate::domain::ids::new_id;
use crate::domain::validate::integral_numbers;
use crate::domain::Error;
use crate::routes::extract::{authenticate, client_address, JSON_LIMIT};
use crate::routes::problem::{Problem, PROBLEM_JSON};
use crate::routes::respond::CarriesSecret;
use crate::state::State;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

fn request_id(req: &ServiceRequest) -> String {
    req.headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        })
        .map(str::to_string)
        .unwrap_or_else(|| new_id("req"))
}

/// Gives each request an id (echoed in `X-Request-Id`), a log span, a log line and metrics.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let id = request_id(&req);
    let method = req.method().to_string();
    let path = req.path().to_string();
    let state = req.app_data::<State>().cloned();
    let span = tracing::info_span!("request", request_id = %id, %method, %path);
    let started = Instant::now();
    // No clone of the request may live across `next.call`: routing needs it unshared.
    let outcome = next.call(req).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let (status, route) = match &outcome {
        Ok(r) => (
            r.status().as_u16(),
            r.request()
                .match_pattern()
                .unwrap_or_else(|| "unmatched".into()),
        ),
        Err(e) => (
            e.as_response_error().status_code().as_u16(),
            "unmatched".into(),
        ),
    };
    if let Some(state) = state {
        state
            .metrics
            .observe(&method, &route, status, elapsed.as_secs_f64());
    }
    span.in_scope(
        || tracing::info!(status, micros = elapsed.as_micros() as u64, %route, "request handled"),
    );
    let mut response = outcome?.map_into_boxed_body();
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    Ok(response)
}

/// A panicking handler becomes an opaque, logged 500 instead of a dropped connection.
/// (The error is rendered by `Error`'s problem response; the request is gone by then.)
pub async fn catch_panic(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    match AssertUnwindSafe(next.call(req)).catch_unwind().await {
        Ok(outcome) => outcome.map(ServiceResponse::map_into_boxed_body),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(Error::internal(format!("handler panicked: {what}")).into())
        }
    }
}

/// Turns every error the framework answers by itself (unknown route, wrong method, bad path
/// or query) into a problem document; the handlers' own errors are problems already, and
/// the console's error pages (HTML) stay pages.
pub async fn problems_everywhere(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let response = next.call(req).await?.map_into_boxed_body();
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(PROBLEM_JSON) || v.starts_with("text/html"));
    if !status.is_client_error() && !status.is_server_error() || is_problem {
        return Ok(response);
    }
    let (req, old) = response.into_parts();
    let mut problem = Problem::for_status(status).response();
    for (name, value) in old.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            problem.headers_mut().insert(name.clone(), value.clone());
        }
    }
    Ok(ServiceResponse::new(req, problem))
}

/// Text in the database cannot hold the NUL character (PostgreSQL refuses it): in query
/// parameters it becomes U+FFFD (the replacement character), so a filter holding one
/// matches nothing, and a path holding one names nothing (404). JSON bodies get the same
/// replacement as they are parsed.
pub async fn replace_nul_characters(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if req.path().contains("%00") {
        return Err(Error::NotFound("object").into());
    }
    if req.query_string().contains("%00") {
        let query = req.query_string().replace("%00", "%EF%BF%BD");
        let uri = format!("{}?{query}", req.path());
        match uri.parse() {
            Ok(uri) => req.head_mut().uri = uri,
            Err(_) => return Err(Error::NotFound("object").into()),
        }
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

/// `Idempotency-Key` on POST: the first response is stored and replayed to retries, keyed by
/// caller, method, path and key; see `domain::idempotency`.
pub async fn idempotency(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let key_header = req
        .headers()
        .get("idempotency-key")
        .map(|v| v.to_str().map(str::to_string));
    let (Method::POST, Some(raw_key)) = (req.method().clone(), key_header) else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    };
    let Some(state) = req.app_data::<State>().cloned() else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    };
    // Bad credentials count as no credentials here: a route that needs them answers 401
    // anyway, and a public one (sign-in) still gets its key honoured.
    let caller = match authenticate(req.request()).await {
        Ok(Some(caller)) => caller.principal(),
        Ok(None) | Err(_) => match client_address(req.request(), &state.settings.trusted_proxies) {
            Some(ip) => format!("anonymous:{ip}"),
            None => "anonymous".into(),
        },
    };
    let fail = |req: ServiceRequest, e: Error| Ok(req.into_response(e.error_response()));
    let key = match raw_key
        .map_err(|_| idempotency::invalid_key())
        .and_then(|k| RequestKey::new(caller, "POST".into(), req.path().to_string(), &k))
    {
        Ok(k) => k,
        Err(e) => return fail(req, e),
    };
    let target = match req.uri().query() {
        Some(q) => format!("{}?{q}", req.path()),
        None => req.path().to_string(),
    };

    // Read the body once to hash it, then hand it on to the handler.
    let (http_request, mut payload) = req.into_parts();
    let mut body = Vec::new();
    let mut too_large = false;
    while let Some(chunk) = payload.next().await {
        let Ok(chunk) = chunk else { break };
        if body.len() + chunk.len() > JSON_LIMIT {
            too_large = true;
            break;
        }
        body.extend_from_slice(&chunk);
    }
    let mut hasher = Sha256::new();
    hasher.update(target.as_bytes());
    hasher.update([0]);
    hasher.update(canonical_body(&body));
    let request_hash = hex::encode(hasher.finalize());
    let req = ServiceRequest::from_parts(http_request, Payload::from(Bytes::from(body)));
    if too_large {
        return fail(req, Error::PayloadTooLarge { limit: JSON_LIMIT });
    }

    let (clock, begin_key) = (state.clock.clone(), key.clone());
    match state
        .db(move |conn| idempotency::begin(conn, clock.as_ref(), &begin_key, &request_hash))
        .await
    {
        Ok(Begin::Proceed) => {}
        Ok(Begin::Replay(stored)) => {
            let mut response =
                HttpResponse::build(StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK));
            if let Some(ct) = stored.content_type {
                response.insert_header((header::CONTENT_TYPE, ct));
            }
            response.insert_header(("Idempotent-Replayed", "true"));
            return Ok(req.into_response(response.body(stored.body)));
        }
        Err(e) => return fail(req, e),
    }

    let outcome = next.call(req).await;
    let response = match outcome {
        Ok(r) if r.status().is_success() => r.map_into_boxed_body(),
        other => {
            let k = key.clone();
            if let Err(e) = state.db(move |conn| idempotency::abandon(conn, &k)).await {
                tracing::warn!(error = %e, "could not release an idempotency key");
            }
            return other.map(ServiceResponse::map_into_boxed_body);
        }
    };
    if response
        .response()
        .extensions()
        .get::<CarriesSecret>()
        .is_some()
    {
        state
            .db(move |conn| idempotency::mark_not_stored(conn, &key))
            .await?;
        return Ok(response);
    }
    let status = response.status();
    let (req, res) = response.into_parts();
    let content_type = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (head, body) = res.into_parts();
    let bytes = to_bytes(body)
        .await
        .map_err(|_| Error::internal("response body could not be read"))?;
    let stored = StoredResponse {
        status: status.as_u16(),
        content_type,
        body: bytes.to_vec(),
    };
    state
        .db(move |conn| idempotency::complete(conn, &key, &stored))
        .await?;
    Ok(ServiceResponse::new(
        req,
        head.set_body(bytes).map_into_boxed_body(),
    ))
}

/// The body as an idempotency key's request hash reads it: JSON in one spelling (keys sorted,
/// no spaces, `1.0` and `1e0` as `1` as handlers read them; no body at all as `{}`), so a
/// retry that serializes the same request again matches; anything else as its bytes. A
/// `password` counts by its length only: the hash is kept 24 hours, and a fast hash of a
/// password would let whoever reads the database guess it far faster than its argon2id
/// hash allows (its presence and length still tell a retry from a request that breaks the
/// password's rules).
fn canonical_body(body: &[u8]) -> Cow<'_, [u8]> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Cow::Borrowed(b"{}");
    }
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(mut value) => {
            if let Some(serde_json::Value::String(password)) = value.get_mut("password") {
                *password = format!("<{} characters>", password.chars().count());
            }
            integral_numbers(&mut value);
            serde_json::to_vec(&value).map_or(Cow::Borrowed(body), Cow::Owned)
        }
        Err(_) => Cow::Borrowed(body),
    }
}

#[cfg(test)]
mod tests {
    use actix_web::middleware::from_fn;
    use actix_web::{test, web, App, HttpResponse};

    use super::*;

    async fn boom() -> HttpResponse {
        panic!("a bug in a handler")
    }

    #[actix_web::test]
    async fn a_panicking_handler_gives_an_opaque_problem_500() {
        let app = test::init_service(
            App::new()
                .route("/boom", web::get().to(boom))
                .wrap(from_fn(problems_everywhere))
                .wrap(from_fn(catch_panic)),
        )
        .await;
        let response =
            test::try_call_service(&app, test::TestRequest::get().uri("/boom").to_request()).await;
        let error = match response {
            Ok(r) => panic!("expected the panic as an error, got {}", r.status()),
            Err(e) => e,
        };
        let rendered = error.error_response();
        assert_eq!(rendered.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            rendered.headers().get(header::CONTENT_TYPE).unwrap(),
            PROBLEM_JSON
        );
        let body = to_bytes(rendered.into_body()).await.unwrap();
        let text = String::from_utf8_lossy(&body);
        assert!(
            text.contains("internal_error") && !text.contains("a bug in a handler"),
            "{text}"
        );
    }

    #[actix_web::test]
    async fn one_request_spelled_two_ways_hashes_alike() {
        let a = canonical_body(br#"{"b": [1, {"d": null, "c": "x"}], "a": true}"#);
        let b = canonical_body(b"{\"a\":true,\n \"b\":[1,{\"c\":\"x\",\"d\":null}]}");
        assert_eq!(a, b);
        assert_eq!(&*a, br#"{"a":true,"b":[1,{"c":"x","d":null}]}"#);
        assert_ne!(
            canonical_body(br#"{"a":1}"#),
            canonical_body(br#"{"a":"1"}"#)
        );
        assert_eq!(canonical_body(b""), canonical_body(b" {} "));
        assert_eq!(
            canonical_body(br#"{"n":100}"#),
            canonical_body(br#"{"n":1e2}"#)
        );
        assert_eq!(
            canonical_body(br#"{"n":100}"#),
            canonical_body(br#"{"n":100.0}"#)
        );
        assert_eq!(&*canonical_body(b"{not json"), b"{not json");
    }

    #[actix_web::test]
    async fn no_password_reaches_the_request_hash() {
        let body = canonical_body(br#"{"email":"a@example.com","password":"Summer2026!!x"}"#);
        assert_eq!(
            &*body,
            br#"{"email":"a@example.com","password":"<13 characters>"}"#
        );
        // A request without one, or with one of another kind, is another request.
        assert_ne!(body, canonical_body(br#"{"email":"a@example.com"}"#));
        assert_ne!(
            body,
            canonical_body(br#"{"email":"a@example.com","password":1}"#)
        );
    }
}
