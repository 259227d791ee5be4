//! Access tokens: only the server's own, unexpired, for this issuer and audience.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use schema::diesel::prelude::*;
use schema::schema::server_secrets;
use serde_json::{json, Value};

use crate::helpers::{TestApp, User};

fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// The server's current signing key, read from the database as another instance would.
fn server_key(app: &TestApp) -> (String, Vec<u8>) {
    let mut conn = app.db.connect();
    let (id, secret): (String, String) = server_secrets::table
        .filter(server_secrets::purpose.eq("jwt"))
        .filter(server_secrets::retired_at.is_null())
        .select((server_secrets::id, server_secrets::secret))
        .first(&mut conn)
        .unwrap();
    (id, STANDARD.decode(secret).unwrap())
}

fn sign(app: &TestApp, claims: &Value) -> String {
    let (kid, secret) = server_key(app);
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid);
    encode(&header, claims, &EncodingKey::from_secret(&secret)).unwrap()
}

fn me_status(app: &TestApp, token: &str) -> u16 {
    app.get("/v1/me", Some(token)).status
}

fn setup() -> (TestApp, User) {
    let app = TestApp::spawn();
    let ada = app.signup();
    (app, ada)
}

#[test]
fn a_token_signed_by_the_server_with_its_claims_intact_works() {
    let (app, ada) = setup();
    // Re-signing the same claims with the server's key is accepted: the checks below fail
    // for the reason each names, not because the test signs differently.
    let resigned = sign(&app, &claims_of(&ada.token));
    assert_eq!(me_status(&app, &resigned), 200);
}

#[test]
fn alg_none_and_garbage_are_refused() {
    let (app, ada) = setup();
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = ada.token.split('.').nth(1).unwrap();
    assert_eq!(me_status(&app, &format!("{header}.{payload}.")), 401);
    assert_eq!(me_status(&app, "not-a-token"), 401);
    assert_eq!(me_status(&app, ""), 401);
    let basic = app.send(
        reqwest::Method::GET,
        "/v1/me",
        None,
        None,
        &[("authorization", "Basic YTpi")],
    );
    assert_eq!(basic.problem(401), "unauthorized");
    assert_eq!(app.get("/v1/me", None).problem(401), "unauthorized");
}

#[test]
fn a_token_signed_with_another_key_or_edited_is_refused() {
    let (app, ada) = setup();
    let (kid, _) = server_key(&app);
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid);
    let forged = encode(
        &header,
        &claims_of(&ada.token),
        &EncodingKey::from_secret(b"not the server's key"),
    )
    .unwrap();
    assert_eq!(me_status(&app, &forged), 401);

    // Claims changed under the real signature.
    let mut claims = claims_of(&ada.token);
    claims["exp"] = json!(claims["exp"].as_i64().unwrap() + 86_400);
    let parts: Vec<&str> = ada.token.split('.').collect();
    let edited = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        parts[2]
    );
    assert_eq!(me_status(&app, &edited), 401);

    // Another algorithm with the right key is refused too: the algorithm is pinned.
    let (kid, secret) = server_key(&app);
    let mut hs512 = Header::new(Algorithm::HS512);
    hs512.kid = Some(kid);
    let other_alg = encode(
        &hs512,
        &claims_of(&ada.token),
        &EncodingKey::from_secret(&secret),
    )
    .unwrap();
    assert_eq!(me_status(&app, &other_alg), 401);
}

#[test]
fn wrong_audience_or_issuer_is_refused() {
    let (app, ada) = setup();
    let mut claims = claims_of(&ada.token);
    claims["aud"] = json!("someone-else");
    assert_eq!(me_status(&app, &sign(&app, &claims)), 401);
    let mut claims = claims_of(&ada.token);
    claims["iss"] = json!("someone-else");
    assert_eq!(me_status(&app, &sign(&app, &claims)), 401);
    let mut claims = claims_of(&ada.token);
    claims.as_object_mut().unwrap().remove("exp");
    assert_eq!(me_status(&app, &sign(&app, &claims)), 401);
}

#[test]
fn an_expired_token_is_refused() {
    let (app, ada) = setup();
    assert_eq!(me_status(&app, &ada.token), 200);
    app.clock.advance(chrono::Duration::minutes(16));
    // Within a second of the first request: the caller is still cached under this token,
    // and the token's expiry still holds.
    let r = app.get("/v1/me", Some(&ada.token));
    assert_eq!(r.problem(401), "unauthorized");
    // The refresh token still gets a fresh access token.
    let renewed = app.post(
        "/v1/auth/refresh",
        None,
        json!({"refresh_token": ada.refresh}),
    );
    assert_eq!(renewed.status, 200);
    assert_eq!(
        me_status(&app, renewed.json["access_token"].as_str().unwrap()),
        200
    );
}

#[test]
fn sign_in_is_rate_limited_per_client_with_retry_after() {
    let app = TestApp::builder().auth_rate_limit(3).spawn();
    let statuses: Vec<Reply> = (0..6)
        .map(|_| app.sign_in("nobody@example.com", "wrong password entirely"))
        .collect();
    assert!(statuses[..3].iter().all(|r| r.status == 401));
    let limited = &statuses[3];
    assert_eq!(limited.problem(429), "rate_limited");
    let retry_after: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
}

use crate::helpers::Reply;
