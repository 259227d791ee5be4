//! Stripe's webhooks: called by Stripe, not by users, so no bearer token; the signature over
//! the raw body is the authentication.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;

use super::extract::JSON_LIMIT;
use super::respond::json;
use crate::domain::invoicing::payments;
use crate::domain::{Error, Result};
use crate::state::State;

pub async fn stripe_webhook(
    state: State,
    req: HttpRequest,
    mut payload: web::Payload,
) -> Result<HttpResponse> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > JSON_LIMIT) {
        return Err(Error::PayloadTooLarge { limit: JSON_LIMIT });
    }
    // The signature covers the bytes as sent: read them raw, parse only after verifying.
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| Error::MalformedBody(e.to_string()))?;
        if body.len() + chunk.len() > JSON_LIMIT {
            return Err(Error::PayloadTooLarge { limit: JSON_LIMIT });
        }
        body.extend_from_slice(&chunk);
    }
    let signature = req
        .headers()
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    payments::verify_signature(
        signature,
        &body,
        &state.settings.payments.webhook_secrets(),
        state.clock.now(),
    )?;
    let clock = state.clock.clone();
    let receipt = state
        .db(move |conn| payments::apply_event(conn, clock.as_ref(), &body))
        .await?;
    Ok(json(&receipt))
}
