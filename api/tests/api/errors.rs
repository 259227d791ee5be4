//! Every class of bad input gets its 4xx problem document, naming the field where there is one.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{TestApp, PASSWORD};

#[test]
fn malformed_json_is_400() {
    let app = TestApp::spawn();
    let r = app.raw(
        Method::POST,
        "/v1/auth/signup",
        "application/json",
        b"{not json".to_vec(),
    );
    assert_eq!(r.problem(400), "malformed_json");
    let r = app.raw(
        Method::POST,
        "/v1/auth/signup",
        "application/json",
        Vec::new(),
    );
    // No body at all reads as `{}`: the missing fields are named.
    assert_eq!(r.problem(422), "validation_failed");
    assert!(r.fields().contains(&"email".to_string()));
    let r = app.raw(
        Method::POST,
        "/v1/auth/token",
        "application/json",
        b"{\"email\":\"a@b.co\",\"password\":\"x\"} trailing".to_vec(),
    );
    assert_eq!(r.problem(400), "malformed_json");
}

#[test]
fn wrong_types_and_missing_fields_name_the_field() {
    let app = TestApp::spawn();
    let r = app.post(
        "/v1/auth/signup",
        None,
        json!({"email": 12, "password": PASSWORD, "name": "n", "organization_name": "o"}),
    );
    assert_eq!(r.problem(422), "validation_failed");
    assert_eq!(r.fields(), vec!["email"]);
    let r = app.post(
        "/v1/auth/signup",
        None,
        json!({"email": "a@example.com", "name": "n", "organization_name": "o"}),
    );
    assert_eq!(r.fields(), vec!["password"]);
    let r = app.post("/v1/auth/signup", None, json!([1, 2]));
    assert_eq!(r.problem(422), "validation_failed");
    assert_eq!(r.fields(), vec!["body"]);
    let ada = app.signup();
    let r = app.post(
        "/v1/api-keys",
        Some(&ada.token),
        json!({"name": "k", "scopes": ["read", 7]}),
    );
    assert_eq!(r.fields(), vec!["scopes[1]"]);
}

#[test]
fn rule_breaking_values_name_every_broken_field_and_write_nothing() {
    let app = TestApp::spawn();
    let r = app.post(
        "/v1/auth/signup",
        None,
        json!({"email": "not-an-email", "password": "short", "name": " ", "organization_name": "x".repeat(201)}),
    );
    assert_eq!(r.problem(422), "validation_failed");
    let mut fields = r.fields();
    fields.sort();
    assert_eq!(
        fields,
        vec!["email", "name", "organization_name", "password"]
    );
    // Nothing was half-written: the e-mail is still free.
    let ok = app.post(
        "/v1/auth/signup",
        None,
        json!({"email": "not-an-email@example.com", "password": PASSWORD, "name": "n", "organization_name": "o"}),
    );
    assert_eq!(ok.status, 201);
}

#[test]
fn unknown_routes_wrong_methods_and_media_types() {
    let app = TestApp::spawn();
    assert_eq!(app.get("/v1/no-such-route", None).problem(404), "not_found");
    let r = app.send(Method::PUT, "/v1/me", None, None, &[]);
    assert_eq!(r.problem(405), "method_not_allowed");
    assert_eq!(r.header("allow"), Some("GET"));
    let r = app.raw(Method::POST, "/v1/auth/token", "text/plain", b"{}".to_vec());
    assert_eq!(r.problem(415), "unsupported_media_type");
}

#[test]
fn bodies_over_one_mebibyte_are_413() {
    let app = TestApp::spawn();
    let mut big = b"{\"email\":\"".to_vec();
    big.extend(std::iter::repeat_n(b'a', 1024 * 1024 + 10));
    big.extend(b"\",\"password\":\"x\"}");
    let r = app.raw(
        Method::POST,
        "/v1/auth/token",
        "application/json",
        big.clone(),
    );
    assert_eq!(r.problem(413), "payload_too_large");
    // The same through the idempotency layer, which reads the body first.
    let ada = app.signup();
    let client = reqwest::blocking::Client::new();
    let res = client
        .post(format!("{}/v1/api-keys", app.base))
        .bearer_auth(&ada.token)
        .header("content-type", "application/json")
        .header("idempotency-key", "big-2")
        .body(big)
        .send()
        .unwrap();
    assert_eq!(res.status().as_u16(), 413);
}

#[test]
fn every_response_carries_a_request_id() {
    let app = TestApp::spawn();
    let r = app.get("/healthz", None);
    assert!(r
        .header("x-request-id")
        .is_some_and(|v| v.starts_with("req_")));
    let r = app.send(
        Method::GET,
        "/v1/nothing",
        None,
        None,
        &[("x-request-id", "client-chosen-42")],
    );
    assert_eq!(r.header("x-request-id"), Some("client-chosen-42"));
}

#[test]
fn nul_characters_never_reach_the_database() {
    // Neither database's text may hold a NUL: it is replaced on the way in, so an id that
    // holds one names nothing and a filter that holds one matches nothing.
    let app = TestApp::spawn();
    let ada = app.signup();
    let r = app.post(
        "/v1/subscriptions",
        Some(&ada.token),
        json!({"offer_id": "ofr_\u{0}x", "note\u{0}": "ignored"}),
    );
    assert_eq!(r.problem(404), "not_found");
    let r = app.get("/v1/subscriptions?status=active%00", Some(&ada.token));
    assert_eq!(
        r.status, 422,
        "an unknown status is still refused: {}",
        r.text
    );
    let r = app.get("/v1/listings?q=weather%00&tag=a%00b", None);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["data"], json!([]));
    let r = app.get("/v1/listings/lst_%00x", Some(&ada.token));
    assert_eq!(r.problem(404), "not_found");
    // A name holding one is stored with the replacement character instead.
    let l = app.post(
        "/v1/listings",
        Some(&ada.token),
        json!({"title": "Tides", "summary": "Hourly\u{0}", "visibility": "public"}),
    );
    assert_eq!(l.status, 201, "{}", l.text);
    assert_eq!(l.json["summary"], "Hourly\u{FFFD}");
    // Nothing else was written on the way.
    let subs = app.get("/v1/subscriptions", Some(&ada.token));
    assert_eq!(subs.json["data"], json!([]), "{}", subs.text);
}
