//! Sign-up, sign-in, refresh and `/v1/me`.

use actix_web::HttpResponse;

use super::extract::{AuthRateLimit, Authenticated, JsonBody};
use super::respond::{json, secret};
use crate::domain::accounts::{self, Context, RefreshRequest, SignupRequest, TokenRequest};
use crate::domain::Result;
use crate::state::State;

pub async fn signup(
    _: AuthRateLimit,
    state: State,
    JsonBody(body): JsonBody<SignupRequest>,
) -> Result<HttpResponse> {
    let st = state.clone();
    let session = state
        .db(move |conn| {
            accounts::signup(
                conn,
                &Context {
                    clock: st.clock.as_ref(),
                    tokens: &st.tokens,
                },
                body,
            )
        })
        .await?;
    Ok(secret(HttpResponse::Created(), &session))
}

pub async fn token(
    _: AuthRateLimit,
    state: State,
    JsonBody(body): JsonBody<TokenRequest>,
) -> Result<HttpResponse> {
    let st = state.clone();
    let session = state
        .db(move |conn| {
            accounts::sign_in(
                conn,
                &Context {
                    clock: st.clock.as_ref(),
                    tokens: &st.tokens,
                },
                body,
            )
        })
        .await?;
    Ok(secret(HttpResponse::Ok(), &session))
}

pub async fn refresh(
    _: AuthRateLimit,
    state: State,
    JsonBody(body): JsonBody<RefreshRequest>,
) -> Result<HttpResponse> {
    let st = state.clone();
    let session = state
        .db(move |conn| {
            accounts::refresh(
                conn,
                &Context {
                    clock: st.clock.as_ref(),
                    tokens: &st.tokens,
                },
                body,
            )
        })
        .await?;
    Ok(secret(HttpResponse::Ok(), &session))
}

pub async fn me(Authenticated(caller): Authenticated) -> HttpResponse {
    json(&accounts::me(&caller))
}
