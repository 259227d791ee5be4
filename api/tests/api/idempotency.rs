//! Idempotency keys: one effect per key, byte-for-byte replays, secrets never stored.

use std::sync::Arc;

use reqwest::Method;
use serde_json::json;

use crate::helpers::{TestApp, PASSWORD};

#[test]
fn twenty_concurrent_retries_add_one_member_and_replay_the_first_answer() {
    let app = Arc::new(TestApp::spawn());
    let ada = app.signup();
    let body = json!({"email": "idem@example.com", "name": "Idem", "password": PASSWORD, "role": "member"});
    let replies: Vec<_> = (0..20)
        .map(|_| {
            let (app, token, body) = (app.clone(), ada.token.clone(), body.clone());
            std::thread::spawn(move || {
                app.send(
                    Method::POST,
                    "/v1/organization/members",
                    Some(&token),
                    Some(&body),
                    &[("idempotency-key", "k-1")],
                )
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    for r in &replies {
        assert!(
            r.status == 201 || r.status == 409,
            "{} {}",
            r.status,
            r.text
        );
    }
    let created: Vec<_> = replies
        .iter()
        .filter(|r| r.status == 201)
        .map(|r| r.text.clone())
        .collect();
    assert!(!created.is_empty());
    assert!(
        created.iter().all(|t| t == &created[0]),
        "every 201 is the same answer"
    );
    let members = app.all_pages("/v1/organization/members", &ada.token, 200);
    assert_eq!(
        members
            .iter()
            .filter(|m| m["email"] == "idem@example.com")
            .count(),
        1
    );

    let replay = app.send(
        Method::POST,
        "/v1/organization/members",
        Some(&ada.token),
        Some(&body),
        &[("idempotency-key", "k-1")],
    );
    assert_eq!(replay.status, 201);
    assert_eq!(replay.text, created[0], "byte for byte");
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));

    let other = json!({"email": "other@example.com", "name": "Other", "password": PASSWORD, "role": "member"});
    let r = app.send(
        Method::POST,
        "/v1/organization/members",
        Some(&ada.token),
        Some(&other),
        &[("idempotency-key", "k-1")],
    );
    assert_eq!(r.problem(422), "idempotency_key_reused");
    assert_eq!(
        app.all_pages("/v1/organization/members", &ada.token, 200)
            .len(),
        2
    );
}

#[test]
fn a_retry_that_spells_the_same_json_otherwise_is_replayed() {
    let app = TestApp::spawn();
    let ada = app.signup();
    let post = |body: &str, key: &str| {
        app.raw_as(
            Method::POST,
            "/v1/organization/members",
            Some(&ada.token),
            &[
                ("content-type", "application/json"),
                ("idempotency-key", key),
            ],
            body.as_bytes().to_vec(),
        )
    };
    let first = post(
        &format!(
            r#"{{"email":"spelled@example.com","name":"S","password":"{PASSWORD}","role":"member"}}"#
        ),
        "k-spelled",
    );
    assert_eq!(first.status, 201, "{}", first.text);
    // Keys in another order, with spaces and a line break: the same request.
    let again = post(
        &format!(
            "{{ \"role\": \"member\",\n  \"password\": \"{PASSWORD}\", \"name\": \"S\", \"email\": \"spelled@example.com\" }}"
        ),
        "k-spelled",
    );
    assert_eq!(again.status, 201, "{}", again.text);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.text, first.text);
    // A value that differs is another request.
    let other = post(
        &format!(
            r#"{{"email":"spelled@example.com","name":"T","password":"{PASSWORD}","role":"member"}}"#
        ),
        "k-spelled",
    );
    assert_eq!(other.problem(422), "idempotency_key_reused");
    // Of the password the key remembers only the length (no fast hash of it is kept):
    // another of the same length is the same request; none at all is another.
    let other_password = post(
        &format!(
            r#"{{"email":"spelled@example.com","name":"S","password":"{}","role":"member"}}"#,
            "x".repeat(PASSWORD.chars().count())
        ),
        "k-spelled",
    );
    assert_eq!(other_password.status, 201, "{}", other_password.text);
    assert_eq!(other_password.header("idempotent-replayed"), Some("true"));
    let no_password = post(
        r#"{"email":"spelled@example.com","name":"S","role":"member"}"#,
        "k-spelled",
    );
    assert_eq!(no_password.problem(422), "idempotency_key_reused");
    let members = app.all_pages("/v1/organization/members", &ada.token, 200);
    assert_eq!(
        members
            .iter()
            .filter(|m| m["email"] == "spelled@example.com")
            .count(),
        1
    );
}

#[test]
fn keys_belong_to_their_caller_and_failures_release_them() {
    let app = TestApp::spawn();
    let ada = app.signup();
    let eve = app.signup();
    let body =
        json!({"email": "shared@example.com", "name": "S", "password": PASSWORD, "role": "member"});
    let first = app.send(
        Method::POST,
        "/v1/organization/members",
        Some(&ada.token),
        Some(&body),
        &[("idempotency-key", "same")],
    );
    assert_eq!(first.status, 201);
    // Another caller's identical key is a different key: it runs, and the e-mail is taken.
    let r = app.send(
        Method::POST,
        "/v1/organization/members",
        Some(&eve.token),
        Some(&body),
        &[("idempotency-key", "same")],
    );
    assert_eq!(r.problem(409), "email_taken");
    // A failed request released its key: a corrected retry under the same key works.
    let bad = json!({"email": "bad", "name": "B", "password": PASSWORD, "role": "member"});
    let r = app.send(
        Method::POST,
        "/v1/organization/members",
        Some(&eve.token),
        Some(&bad),
        &[("idempotency-key", "fix-me")],
    );
    assert_eq!(r.status, 422);
    let good =
        json!({"email": "good@example.com", "name": "G", "password": PASSWORD, "role": "member"});
    let r = app.send(
        Method::POST,
        "/v1/organization/members",
        Some(&eve.token),
        Some(&good),
        &[("idempotency-key", "fix-me")],
    );
    assert_eq!(r.status, 201, "{}", r.text);
}

#[test]
fn responses_with_secrets_are_never_replayed() {
    let app = TestApp::spawn();
    let ada = app.signup();
    let body = json!({"name": "once"});
    let first = app.send(
        Method::POST,
        "/v1/api-keys",
        Some(&ada.token),
        Some(&body),
        &[("idempotency-key", "key-1")],
    );
    assert_eq!(first.status, 201);
    let secret = first.json["key"].as_str().unwrap();
    let second = app.send(
        Method::POST,
        "/v1/api-keys",
        Some(&ada.token),
        Some(&body),
        &[("idempotency-key", "key-1")],
    );
    assert_eq!(second.problem(409), "idempotency_key_used");
    assert!(!second.text.contains(secret));
    assert_eq!(
        app.get("/v1/api-keys", Some(&ada.token)).json["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Anonymous sign-ups too: the token is not stored.
    let signup = json!({"email": "anon@example.com", "password": PASSWORD, "name": "A", "organization_name": "A"});
    let a = app.send(
        Method::POST,
        "/v1/auth/signup",
        None,
        Some(&signup),
        &[("idempotency-key", "s-1")],
    );
    assert_eq!(a.status, 201);
    let b = app.send(
        Method::POST,
        "/v1/auth/signup",
        None,
        Some(&signup),
        &[("idempotency-key", "s-1")],
    );
    assert_eq!(b.status, 409);
    assert!(!b.text.contains(a.json["access_token"].as_str().unwrap()));
}

#[test]
fn a_bad_key_is_400() {
    let app = TestApp::spawn();
    let ada = app.signup();
    let long = "k".repeat(256);
    let r = app.send(
        Method::POST,
        "/v1/api-keys",
        Some(&ada.token),
        Some(&json!({"name": "x"})),
        &[("idempotency-key", &long)],
    );
    assert_eq!(r.problem(400), "invalid_idempotency_key");
}
