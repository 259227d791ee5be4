//! Sign-up, sign-in, refresh and `/v1/me`.

use actix_web::HttpResponse;

use super::extract::{AuthRateLimit, Authenticated, JsonBody};
use super::respond::{json, secret};
use crate::domain::accounts::{
    self, Context, RefreshRequest, Session, SignupRequest, TokenRequest,
};
use crate::domain::Result;
use crate::state::State;
use schema::DbConnection;

pub async fn signup(
    _: AuthRateLimit,
    state: State,
    JsonBody(body): JsonBody<SignupRequest>,
) -> Result<HttpResponse> {
    let session = with_session(state, body, accounts::signup).await?;
    Ok(secret(HttpResponse::Created(), &session))
}

pub async fn token(
    _: AuthRateLimit,
    state: State,
    JsonBody(body): JsonBody<TokenRequest>,
) -> Result<HttpResponse> {
    let session = with_session(state, body, accounts::sign_in).await?;
    Ok(secret(HttpResponse::Ok(), &session))
}

pub async fn refresh(
    _: AuthRateLimit,
    state: State,
    JsonBody(body): JsonBody<RefreshRequest>,
) -> Result<HttpResponse> {
    let session = with_session(state, body, accounts::refresh).await?;
    Ok(secret(HttpResponse::Ok(), &session))
}

/// Runs a use case that ends in a signed-in session.
async fn with_session<B: Send + 'static>(
    state: State,
    body: B,
    use_case: fn(&mut DbConnection, &Context<'_>, B) -> Result<Session>,
) -> Result<Session> {
    let shared = state.clone();
    state
        .db(move |conn| {
            use_case(
                conn,
                &Context {
                    clock: shared.clock.as_ref(),
                    tokens: &shared.tokens,
                },
                body,
            )
        })
        .await
}

pub async fn me(Authenticated(caller): Authenticated) -> HttpResponse {
    json(&accounts::me(&caller))
}
