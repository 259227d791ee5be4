//! Subscribers read data only while a grant is live, and every read is metered to it.

use api::domain::commerce::lifecycle;
use chrono::Duration;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{TestApp, User};

struct Shop {
    listing: String,
    revision: String,
    asset: String,
    offer: String,
    approval_offer: String,
}

/// A published listing with one finalized revision holding a 1000-byte asset, and two
/// offers (one needing approval), 1-month terms.
fn shop(app: &TestApp, p: &User) -> Shop {
    let l = app.post(
        "/v1/listings",
        Some(&p.token),
        json!({"title": "Ships", "summary": "AIS", "visibility": "public"}),
    );
    let listing = l.json["id"].as_str().unwrap().to_string();
    let ds = app.post(
        &format!("/v1/listings/{listing}/datasets"),
        Some(&p.token),
        json!({"name": "positions"}),
    );
    let ds = ds.json["id"].as_str().unwrap().to_string();
    let rev = app.post(
        &format!("/v1/datasets/{ds}/revisions"),
        Some(&p.token),
        json!({}),
    );
    let revision = rev.json["id"].as_str().unwrap().to_string();
    let client = reqwest::blocking::Client::new();
    let up = client
        .put(format!(
            "{}/v1/revisions/{revision}/assets/pos.bin",
            app.base
        ))
        .bearer_auth(&p.token)
        .header("content-type", "application/octet-stream")
        .body(vec![7u8; 1000])
        .send()
        .unwrap();
    assert_eq!(up.status().as_u16(), 201);
    let asset: Value = up.json().unwrap();
    app.post(
        &format!("/v1/revisions/{revision}/finalize"),
        Some(&p.token),
        json!({}),
    );
    let offer = |extra: Value| {
        let mut o = json!({"name": "Monthly", "currency": "USD", "billing_interval": "monthly", "recurring_amount": 100,
            "term_months": 1, "trial_days": 0, "requires_approval": false, "auto_renew_default": false});
        for (k, v) in extra.as_object().unwrap() {
            o[k] = v.clone();
        }
        app.post(&format!("/v1/listings/{listing}/offers"), Some(&p.token), o)
            .json["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (offer, approval_offer) = (offer(json!({})), offer(json!({"requires_approval": true})));
    app.post(
        &format!("/v1/listings/{listing}/publish"),
        Some(&p.token),
        json!({}),
    );
    Shop {
        listing,
        revision,
        asset: asset["id"].as_str().unwrap().to_string(),
        offer,
        approval_offer,
    }
}

/// A subscription to `offer` that asks to renew; its id.
fn subscribe_renewing(app: &TestApp, b: &User, offer: &str) -> String {
    let sub = app.post(
        "/v1/subscriptions",
        Some(&b.token),
        json!({"offer_id": offer, "auto_renew": true}),
    );
    assert_eq!(sub.status, 201, "{}", sub.text);
    sub.json["id"].as_str().unwrap().to_string()
}

/// A month on (the shop's terms are a month), the subscription has expired, not renewed,
/// and its subscriber reads the asset no more.
fn expires_at_its_term_end(app: &TestApp, b: &User, sub: &str, asset: &str) {
    app.clock.advance(Duration::days(32));
    lifecycle::run_once(&mut app.db.connect(), &app.clock).unwrap();
    let b = app.again(b);
    let after = app.get(&format!("/v1/subscriptions/{sub}"), Some(&b.token));
    assert_eq!(after.json["status"], "expired", "{}", after.text);
    assert_eq!(read(app, &b.token, asset), 404);
}

fn read(app: &TestApp, token: &str, asset: &str) -> u16 {
    app.get(&format!("/v1/assets/{asset}/content"), Some(token))
        .status
}

/// The metered total, once it settles: a read is metered when its response body has been
/// sent, just after the client has the bytes.
fn usage_total(app: &TestApp, token: &str, sub: &str, metric: &str, expected: i64) -> i64 {
    let mut total = 0;
    for _ in 0..50 {
        total = usage_once(app, token, sub, metric);
        if total == expected {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    total
}

fn usage_once(app: &TestApp, token: &str, sub: &str, metric: &str) -> i64 {
    let r = app.get(&format!("/v1/subscriptions/{sub}/usage"), Some(token));
    r.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| row["metric"] == metric)
        .map(|row| row["quantity"].as_i64().unwrap())
        .sum()
}

#[test]
fn reads_follow_the_grant_from_request_to_term_end() {
    let app = TestApp::spawn();
    let (p, b, x) = (app.signup(), app.signup(), app.signup());
    let s = shop(&app, &p);
    assert_eq!(
        read(&app, &b.token, &s.asset),
        403,
        "no grant before subscribing"
    );
    let pending = app.post(
        "/v1/subscriptions",
        Some(&b.token),
        json!({"offer_id": s.approval_offer}),
    );
    assert_eq!(pending.json["status"], "pending_approval");
    assert_eq!(
        read(&app, &b.token, &s.asset),
        403,
        "a pending request reads nothing"
    );

    let sub = app
        .post(
            "/v1/subscriptions",
            Some(&b.token),
            json!({"offer_id": s.offer}),
        )
        .json["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(read(&app, &b.token, &s.asset), 200);
    let ranged = app.send(
        Method::GET,
        &format!("/v1/assets/{}/content", s.asset),
        Some(&b.token),
        None,
        &[("range", "bytes=0-99")],
    );
    assert_eq!(ranged.status, 206);
    let url = app
        .post(
            &format!("/v1/assets/{}/download-url", s.asset),
            Some(&b.token),
            json!({}),
        )
        .json["url"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        reqwest::blocking::get(&url).unwrap().status().as_u16(),
        200,
        "a signed URL works without a header"
    );
    // HEAD answers with GET's headers, by the same rule, and neither sends nor meters bytes.
    let head = |token: Option<&str>, path: &str, headers: &[(&str, &str)]| {
        app.send(Method::HEAD, path, token, None, headers)
    };
    let content = format!("/v1/assets/{}/content", s.asset);
    let whole = head(Some(&b.token), &content, &[]);
    assert_eq!(whole.status, 200);
    assert_eq!(whole.header("content-length"), Some("1000"));
    assert!(whole.header("etag").is_some_and(|e| e.len() == 66));
    assert_eq!(whole.text, "");
    let part = head(Some(&b.token), &content, &[("range", "bytes=0-99")]);
    assert_eq!(part.status, 206);
    assert_eq!(part.header("content-range"), Some("bytes 0-99/1000"));
    assert_eq!(part.header("content-length"), Some("100"));
    assert_eq!(head(None, &url.replacen(&app.base, "", 1), &[]).status, 200);
    assert_eq!(head(Some(&x.token), &content, &[]).status, 403);
    // Reads are metered: bytes actually sent (ranges included) and one call each.
    assert_eq!(
        usage_total(&app, &b.token, &sub, "bytes_downloaded", 2100),
        1000 + 100 + 1000
    );
    assert_eq!(usage_total(&app, &b.token, &sub, "api_calls", 3), 3);
    // Data is for the people who work with it: the customer's finance user reads its
    // invoices, not the data (DESIGN section 3); a key with `read` of a member reads it.
    let finance = app.add_member(&b, "finance");
    assert_eq!(read(&app, &finance.token, &s.asset), 403);
    let refused = app.post(
        &format!("/v1/assets/{}/download-url", s.asset),
        Some(&finance.token),
        json!({}),
    );
    assert_eq!(refused.status, 403, "{}", refused.text);
    let (_, read_key) = app.api_key(&b, &["read"]);
    assert_eq!(read(&app, &read_key, &s.asset), 200);
    assert_eq!(usage_total(&app, &b.token, &sub, "api_calls", 4), 4);
    assert_eq!(
        read(&app, &x.token, &s.asset),
        403,
        "an outsider who can see the public listing still holds no grant"
    );

    // Cancelled: access runs to the term's end, then stops; the signed URL re-checks too.
    app.post(
        &format!("/v1/subscriptions/{sub}/cancel"),
        Some(&b.token),
        json!({}),
    );
    assert_eq!(read(&app, &b.token, &s.asset), 200);
    app.clock.advance(Duration::days(32));
    lifecycle::run_once(&mut app.db.connect(), &app.clock).unwrap();
    let b = app.again(&b);
    assert_eq!(
        read(&app, &b.token, &s.asset),
        403,
        "after the term of a cancelled subscription"
    );
    let _ = s.listing;
}

#[test]
fn revoking_a_revision_cuts_access_at_once() {
    let app = TestApp::spawn();
    let (p, b) = (app.signup(), app.signup());
    let s = shop(&app, &p);
    app.post(
        "/v1/subscriptions",
        Some(&b.token),
        json!({"offer_id": s.offer}),
    );
    let url = app
        .post(
            &format!("/v1/assets/{}/download-url", s.asset),
            Some(&b.token),
            json!({}),
        )
        .json["url"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(read(&app, &b.token, &s.asset), 200);
    let revoked = app.post(
        &format!("/v1/revisions/{}/revoke", s.revision),
        Some(&p.token),
        json!({"reason": "wrong units"}),
    );
    assert_eq!(revoked.json["state"], "revoked");
    assert_eq!(read(&app, &b.token, &s.asset), 403);
    assert_eq!(
        reqwest::blocking::get(&url).unwrap().status().as_u16(),
        403,
        "a signed URL re-checks at each use"
    );
    assert_eq!(
        read(&app, &p.token, &s.asset),
        200,
        "the provider keeps its own data"
    );
}

#[test]
fn an_archived_listing_serves_its_subscribers_to_the_end_of_their_term_without_renewing() {
    let app = TestApp::spawn();
    let (p, b, x) = (app.signup(), app.signup(), app.signup());
    let s = shop(&app, &p);
    let sub = subscribe_renewing(&app, &b, &s.offer);
    let archived = app.post(
        &format!("/v1/listings/{}/archive", s.listing),
        Some(&p.token),
        json!({}),
    );
    assert_eq!(archived.status, 200, "{}", archived.text);
    assert_eq!(
        read(&app, &b.token, &s.asset),
        200,
        "the subscriber's term runs on"
    );
    let url = app.post(
        &format!("/v1/assets/{}/download-url", s.asset),
        Some(&b.token),
        json!({}),
    );
    assert_eq!(url.status, 200, "{}", url.text);
    let signed = reqwest::blocking::get(url.json["url"].as_str().unwrap()).unwrap();
    assert_eq!(signed.status().as_u16(), 200, "the signed URL reads too");
    // The subscriber still finds the listing, its datasets and their revisions.
    let listing = app.get(&format!("/v1/listings/{}", s.listing), Some(&b.token));
    assert_eq!(listing.json["state"], "archived", "{}", listing.text);
    let datasets = app.get(
        &format!("/v1/listings/{}/datasets", s.listing),
        Some(&b.token),
    );
    assert_eq!(datasets.status, 200, "{}", datasets.text);
    assert_eq!(
        app.get(&format!("/v1/listings/{}", s.listing), Some(&x.token))
            .status,
        404
    );
    assert_eq!(
        app.get(&format!("/v1/assets/{}/content", s.asset), Some(&x.token))
            .problem(404),
        "not_found",
        "to anyone else the archived listing's files are gone"
    );
    expires_at_its_term_end(&app, &b, &sub, &s.asset);
}

#[test]
fn a_private_listing_no_longer_shared_serves_its_subscriber_to_the_term_end_and_no_further() {
    let app = TestApp::spawn();
    let (p, b) = (app.signup(), app.signup());
    let s = shop(&app, &p);
    let listing = format!("/v1/listings/{}", s.listing);
    let shared = app.patch(
        &listing,
        Some(&p.token),
        json!({"visibility": "private", "allowed_organization_ids": [b.org_id]}),
    );
    assert_eq!(shared.status, 200, "{}", shared.text);
    let sub = subscribe_renewing(&app, &b, &s.offer);
    let pending = app.post(
        "/v1/subscriptions",
        Some(&b.token),
        json!({"offer_id": s.approval_offer}),
    );
    assert_eq!(
        pending.json["status"], "pending_approval",
        "{}",
        pending.text
    );
    let unshared = app.patch(
        &listing,
        Some(&p.token),
        json!({"allowed_organization_ids": []}),
    );
    assert_eq!(unshared.status, 200, "{}", unshared.text);
    let newer = app.post(
        &format!("{listing}/offers"),
        Some(&p.token),
        json!({"name": "Yearly", "currency": "USD", "billing_interval": "monthly", "recurring_amount": 50,
            "term_months": 12, "trial_days": 0, "requires_approval": false, "auto_renew_default": true}),
    );
    assert_eq!(newer.status, 201, "{}", newer.text);

    // The running term reads on; the listing shows only the offer held.
    assert_eq!(read(&app, &b.token, &s.asset), 200);
    let offers = app.get(&format!("{listing}/offers"), Some(&b.token));
    let held: Vec<&str> = offers.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(held, [s.offer.as_str()], "{}", offers.text);
    // No new subscription, and no renewal.
    for offer in [
        newer.json["id"].as_str().unwrap(),
        s.approval_offer.as_str(),
    ] {
        let again = app.post(
            "/v1/subscriptions",
            Some(&b.token),
            json!({"offer_id": offer}),
        );
        assert_eq!(again.problem(404), "not_found", "{offer}");
    }
    let renew = app.patch(
        &format!("/v1/subscriptions/{sub}"),
        Some(&b.token),
        json!({"auto_renew": true}),
    );
    assert_eq!(renew.problem(409), "not_renewable");
    // Nor does a request made while it was shared start a subscription now.
    let approve = app.post(
        &format!(
            "/v1/subscriptions/{}/approve",
            pending.json["id"].as_str().unwrap()
        ),
        Some(&p.token),
        json!({}),
    );
    assert_eq!(approve.problem(409), "listing_not_shared");
    expires_at_its_term_end(&app, &b, &sub, &s.asset);
}
