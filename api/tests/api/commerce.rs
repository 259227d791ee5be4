//! Subscriptions, grants and usage, as subscribers and providers use them.

use std::sync::Arc;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{TestApp, User};

fn offer(name: &str, extra: Value) -> Value {
    let mut o = json!({"name": name, "currency": "USD", "billing_interval": "monthly", "recurring_amount": 50000,
        "term_months": 12, "usage_prices": [{"metric": "queries", "model": "per_unit", "unit_amount_decimal": "0.5"}],
        "free_metrics": ["rows_scanned"], "trial_days": 0, "requires_approval": false, "auto_renew_default": true});
    for (k, v) in extra.as_object().unwrap() {
        o[k] = v.clone();
    }
    o
}

/// A published listing with the given offers; returns (listing id, offer ids).
fn market(app: &TestApp, p: &User, offers: &[Value]) -> (String, Vec<String>) {
    let l = app.post(
        "/v1/listings",
        Some(&p.token),
        json!({"title": "Ships", "summary": "AIS", "visibility": "public"}),
    );
    let lid = l.json["id"].as_str().unwrap().to_string();
    let ids = offers
        .iter()
        .map(|o| {
            let r = app.post(
                &format!("/v1/listings/{lid}/offers"),
                Some(&p.token),
                o.clone(),
            );
            assert_eq!(r.status, 201, "{}", r.text);
            r.json["id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        app.post(
            &format!("/v1/listings/{lid}/publish"),
            Some(&p.token),
            json!({})
        )
        .status,
        200
    );
    (lid, ids)
}

fn subscribe(app: &TestApp, who: &User, offer_id: &str) -> crate::helpers::Reply {
    app.post(
        "/v1/subscriptions",
        Some(&who.token),
        json!({"offer_id": offer_id}),
    )
}

fn now_rfc3339(app: &TestApp) -> String {
    app.clock.now_for_tests().to_rfc3339()
}

#[test]
fn subscribing_activates_with_a_term_a_snapshot_and_a_grant() {
    let app = TestApp::spawn();
    let (p, b) = (app.signup(), app.signup());
    let (lid, offers) = market(&app, &p, &[offer("Open", json!({}))]);
    let s = subscribe(&app, &b, &offers[0]);
    assert_eq!(s.status, 201, "{}", s.text);
    assert_eq!(s.json["status"], "active");
    assert_eq!(s.json["listing_id"], lid.as_str());
    assert_eq!(s.json["subscriber"]["id"], b.org_id.as_str());
    assert_eq!(s.json["provider"]["id"], p.org_id.as_str());
    assert_eq!(s.json["prices"]["recurring_amount"], 50000);
    assert_eq!(s.json["term_start"], s.json["current_period_start"]);
    assert!(s.json["trial_end"].is_null());
    assert_eq!(s.json["auto_renew"], true);
    let sid = s.json["id"].as_str().unwrap();

    let grants = app.get("/v1/grants", Some(&b.token));
    let g = &grants.json["data"][0];
    assert_eq!(g["subscription_id"], sid);
    assert_eq!(g["valid_until"], s.json["term_end"]);
    assert_eq!(g["live"], true);

    assert_eq!(
        subscribe(&app, &b, &offers[0]).problem(409),
        "already_subscribed"
    );
    assert_eq!(subscribe(&app, &p, &offers[0]).problem(409), "own_listing");
    assert_eq!(subscribe(&app, &b, "ofr_nothing").problem(404), "not_found");
}

#[test]
fn a_trial_starts_the_term_after_it_and_cancelling_in_it_ends_with_it() {
    let app = TestApp::spawn();
    let (p, b) = (app.signup(), app.signup());
    let (_, offers) = market(
        &app,
        &p,
        &[offer("Trial", json!({"trial_days": 14, "term_months": 1}))],
    );
    let s = subscribe(&app, &b, &offers[0]);
    let trial_end = s.json["trial_end"].as_str().unwrap().to_string();
    assert_eq!(s.json["term_start"], trial_end.as_str());
    let sid = s.json["id"].as_str().unwrap();
    let c = app.post(
        &format!("/v1/subscriptions/{sid}/cancel"),
        Some(&b.token),
        json!({}),
    );
    assert_eq!(c.status, 200, "{}", c.text);
    assert_eq!(c.json["cancel_at"], trial_end.as_str());
    assert_eq!(
        app.get("/v1/grants", Some(&b.token)).json["data"][0]["valid_until"],
        trial_end.as_str()
    );
}

#[test]
fn approval_requests_are_answered_by_the_provider_only() {
    let app = TestApp::spawn();
    let (p, b, x) = (app.signup(), app.signup(), app.signup());
    let (_, offers) = market(
        &app,
        &p,
        &[offer("Approval", json!({"requires_approval": true}))],
    );
    let r = app.post(
        "/v1/subscriptions",
        Some(&b.token),
        json!({"offer_id": offers[0], "message": "research"}),
    );
    assert_eq!(r.json["status"], "pending_approval");
    assert!(r.json["request_expires_at"].is_string());
    let sid = r.json["id"].as_str().unwrap().to_string();
    assert!(
        app.get("/v1/grants", Some(&b.token)).json["data"]
            .as_array()
            .unwrap()
            .is_empty(),
        "no grant while pending"
    );
    assert_eq!(
        app.post(
            &format!("/v1/subscriptions/{sid}/approve"),
            Some(&b.token),
            json!({})
        )
        .problem(403),
        "forbidden"
    );
    assert_eq!(
        app.post(
            &format!("/v1/subscriptions/{sid}/approve"),
            Some(&x.token),
            json!({})
        )
        .problem(404),
        "not_found"
    );
    let ok = app.post(
        &format!("/v1/subscriptions/{sid}/approve"),
        Some(&p.token),
        json!({}),
    );
    assert_eq!(ok.json["status"], "active", "{}", ok.text);
    assert_eq!(
        app.post(
            &format!("/v1/subscriptions/{sid}/approve"),
            Some(&p.token),
            json!({})
        )
        .problem(409),
        "invalid_state"
    );
    assert_eq!(
        app.get("/v1/grants", Some(&b.token)).json["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // A second request (after cancelling at once is impossible for a subscriber, withdraw a new one).
    let b2 = app.signup();
    let r2 = app.post(
        "/v1/subscriptions",
        Some(&b2.token),
        json!({"offer_id": offers[0]}),
    );
    let sid2 = r2.json["id"].as_str().unwrap();
    let no_reason = app.post(
        &format!("/v1/subscriptions/{sid2}/reject"),
        Some(&p.token),
        json!({}),
    );
    assert_eq!(no_reason.fields(), vec!["reason"]);
    let rejected = app.post(
        &format!("/v1/subscriptions/{sid2}/reject"),
        Some(&p.token),
        json!({"reason": "not a fit"}),
    );
    assert_eq!(rejected.json["status"], "rejected");
    assert_eq!(rejected.json["decision_reason"], "not a fit");
    assert!(
        app.get("/v1/grants", Some(&b2.token)).json["data"]
            .as_array()
            .unwrap()
            .is_empty(),
        "a rejected request never had a grant"
    );
    // After a rejection a new request may be made.
    assert_eq!(
        app.post(
            "/v1/subscriptions",
            Some(&b2.token),
            json!({"offer_id": offers[0]})
        )
        .status,
        201
    );
}

#[test]
fn private_and_archived_offers() {
    let app = TestApp::spawn();
    let (p, b, x) = (app.signup(), app.signup(), app.signup());
    let (_, offers) = market(
        &app,
        &p,
        &[
            offer("Open", json!({})),
            offer(
                "Private",
                json!({"private_to_organization_ids": [b.org_id]}),
            ),
        ],
    );
    assert_eq!(subscribe(&app, &x, &offers[1]).problem(404), "not_found");
    assert_eq!(subscribe(&app, &b, &offers[1]).status, 201);
    assert_eq!(
        app.post(
            &format!("/v1/offers/{}/archive", offers[0]),
            Some(&p.token),
            json!({})
        )
        .status,
        200
    );
    assert_eq!(
        subscribe(&app, &x, &offers[0]).problem(409),
        "offer_archived"
    );
}

#[test]
fn cancel_and_auto_renew() {
    let app = TestApp::spawn();
    let (p, b) = (app.signup(), app.signup());
    let (_, offers) = market(&app, &p, &[offer("Open", json!({}))]);
    let s = subscribe(&app, &b, &offers[0]);
    let sid = s.json["id"].as_str().unwrap();
    assert_eq!(
        app.post(
            &format!("/v1/subscriptions/{sid}/cancel"),
            Some(&p.token),
            json!({})
        )
        .problem(403),
        "forbidden"
    );
    let c = app.post(
        &format!("/v1/subscriptions/{sid}/cancel"),
        Some(&b.token),
        json!({}),
    );
    assert_eq!(c.json["status"], "active");
    assert_eq!(c.json["auto_renew"], false);
    assert_eq!(c.json["cancel_at"], s.json["term_end"]);
    let renew = app.patch(
        &format!("/v1/subscriptions/{sid}"),
        Some(&b.token),
        json!({"auto_renew": true}),
    );
    assert_eq!(renew.json["auto_renew"], true);
    assert!(renew.json["cancel_at"].is_null());
    let now = app.post(
        &format!("/v1/subscriptions/{sid}/cancel"),
        Some(&b.token),
        json!({"immediately": true}),
    );
    assert_eq!(
        now.problem(403),
        "forbidden",
        "only operators end a subscription at once"
    );
}

#[test]
fn subscriptions_grants_and_usage_are_invisible_to_outsiders() {
    let app = TestApp::spawn();
    let (p, b, x) = (app.signup(), app.signup(), app.signup());
    let (_, offers) = market(&app, &p, &[offer("Open", json!({}))]);
    let sid = subscribe(&app, &b, &offers[0]).json["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        app.get(&format!("/v1/subscriptions/{sid}"), Some(&x.token))
            .problem(404),
        "not_found"
    );
    assert_eq!(
        app.get(&format!("/v1/subscriptions/{sid}/usage"), Some(&x.token))
            .problem(404),
        "not_found"
    );
    assert_eq!(
        app.post(
            &format!("/v1/subscriptions/{sid}/cancel"),
            Some(&x.token),
            json!({})
        )
        .problem(404),
        "not_found"
    );
    for side in ["subscriber", "provider"] {
        assert!(app
            .get(&format!("/v1/subscriptions?as={side}"), Some(&x.token))
            .json["data"]
            .as_array()
            .unwrap()
            .is_empty());
    }
    assert!(app.get("/v1/grants", Some(&x.token)).json["data"]
        .as_array()
        .unwrap()
        .is_empty());
    let provider_view = app.get(
        "/v1/subscriptions?as=provider&status=active",
        Some(&p.token),
    );
    assert_eq!(provider_view.json["data"][0]["id"], sid.as_str());
    assert!(app
        .get(
            "/v1/subscriptions?as=provider&status=rejected",
            Some(&p.token)
        )
        .json["data"]
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(
        app.get("/v1/subscriptions?status=bogus", Some(&p.token))
            .fields(),
        vec!["status"]
    );
    assert_eq!(
        app.get("/v1/subscriptions?as=both", Some(&p.token))
            .fields(),
        vec!["as"]
    );
}

#[test]
fn fifty_concurrent_retries_create_one_subscription() {
    let app = Arc::new(TestApp::spawn());
    let (p, b) = (app.signup(), app.signup());
    let (_, offers) = market(&app, &p, &[offer("Open", json!({}))]);
    let handles: Vec<_> = (0..50)
        .map(|_| {
            let (app, token, offer) = (app.clone(), b.token.clone(), offers[0].clone());
            std::thread::spawn(move || {
                app.send(
                    Method::POST,
                    "/v1/subscriptions",
                    Some(&token),
                    Some(&json!({"offer_id": offer})),
                    &[("idempotency-key", "sub-1")],
                )
            })
        })
        .collect();
    let replies: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(
        replies.iter().all(|r| r.status == 201 || r.status == 409),
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    let subs = app.all_pages("/v1/subscriptions", &b.token, 200);
    assert_eq!(subs.len(), 1);
}

#[test]
fn answers_to_one_request_at_once_take_effect_once() {
    let app = Arc::new(TestApp::spawn());
    let p = app.signup();
    let (_, offers) = market(
        &app,
        &p,
        &[offer("Vetted", json!({"requires_approval": true}))],
    );
    for round in 0..4 {
        let b = app.signup();
        let request = subscribe(&app, &b, &offers[0]);
        assert_eq!(
            request.json["status"], "pending_approval",
            "{}",
            request.text
        );
        let id = request.json["id"].as_str().unwrap().to_string();
        // Two approvals, a rejection and the subscriber's withdrawal, all at once.
        let actions = [
            ("approve", p.token.clone(), json!({})),
            ("approve", p.token.clone(), json!({})),
            ("reject", p.token.clone(), json!({"reason": "No"})),
            ("cancel", b.token.clone(), json!({})),
        ];
        let replies: Vec<(&str, u16)> = actions
            .into_iter()
            .map(|(action, token, body)| {
                let (app, id) = (app.clone(), id.clone());
                let reply = std::thread::spawn(move || {
                    app.post(
                        &format!("/v1/subscriptions/{id}/{action}"),
                        Some(&token),
                        body,
                    )
                });
                (action, reply)
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|(action, h)| {
                let r = h.join().unwrap();
                assert!(
                    r.status == 200 || r.status == 409,
                    "{action}: {} {}",
                    r.status,
                    r.text
                );
                (action, r.status)
            })
            .collect();
        // The provider answers once; a withdrawal before the answer leaves nothing to
        // answer, and one after an approval cancels at the term's end (after a rejection,
        // there is nothing to withdraw).
        let answered: Vec<&str> = replies
            .iter()
            .filter(|(a, s)| *a != "cancel" && *s == 200)
            .map(|(a, _)| *a)
            .collect();
        let withdrawn = replies.iter().any(|(a, s)| *a == "cancel" && *s == 200);
        assert!(answered.len() <= 1, "round {round}: {replies:?}");
        let expected = match answered.first() {
            Some(&"approve") => "active",
            Some(_) => {
                assert!(!withdrawn, "round {round}: {replies:?}");
                "rejected"
            }
            None => {
                assert!(withdrawn, "round {round}: {replies:?}");
                "cancelled"
            }
        };
        let now = app.get(&format!("/v1/subscriptions/{id}"), Some(&b.token));
        assert_eq!(now.json["status"], expected, "round {round}: {replies:?}");
        let live_grants = app
            .all_pages("/v1/grants", &b.token, 200)
            .iter()
            .filter(|g| g["live"] == true)
            .count();
        assert_eq!(
            live_grants,
            usize::from(expected == "active"),
            "round {round}"
        );
    }
}

#[test]
fn usage_is_counted_once_and_refused_whole_when_any_event_is_bad() {
    let app = TestApp::spawn();
    let (p, b, x) = (app.signup(), app.signup(), app.signup());
    let (_, offers) = market(&app, &p, &[offer("Open", json!({}))]);
    let sid = subscribe(&app, &b, &offers[0]).json["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.clock.advance(chrono::Duration::seconds(5));
    let ts = now_rfc3339(&app);
    let events: Vec<Value> =
        (0..100).map(|i| json!({"id": format!("e{i}"), "subscription_id": sid, "metric": "queries", "quantity": 2, "timestamp": ts})).collect();
    let first = app.post(
        "/v1/usage-events",
        Some(&p.token),
        json!({"events": events}),
    );
    assert_eq!(
        first.json,
        json!({"accepted": 100, "duplicates": 0}),
        "{}",
        first.text
    );
    let mut again: Vec<Value> = events[..50].to_vec();
    again.extend((0..10).map(|i| json!({"id": format!("n{i}"), "subscription_id": sid, "metric": "rows_scanned", "quantity": 1000, "timestamp": ts})));
    let second = app.post("/v1/usage-events", Some(&p.token), json!({"events": again}));
    assert_eq!(second.json, json!({"accepted": 10, "duplicates": 50}));

    let mut changed = events[0].clone();
    changed["quantity"] = json!(7);
    let mut newcomer = events[0].clone();
    newcomer["id"] = json!("newcomer");
    let conflict = app.post(
        "/v1/usage-events",
        Some(&p.token),
        json!({"events": [newcomer.clone(), changed.clone()]}),
    );
    assert_eq!(conflict.problem(409), "usage_event_conflict");
    assert!(conflict.text.contains("events[1]"), "{}", conflict.text);
    // One id twice in a batch with different content is refused the same way.
    let mut twin = newcomer.clone();
    twin["quantity"] = json!(9);
    let twins = app.post(
        "/v1/usage-events",
        Some(&p.token),
        json!({"events": [newcomer.clone(), twin]}),
    );
    assert_eq!(twins.problem(409), "usage_event_conflict");
    assert!(twins.text.contains("events[1]"), "{}", twins.text);
    // Both kinds at once: the first conflicting event is named (events[0] differs from
    // what is stored, before events[1] differs from events[0]).
    let mut changed_again = events[0].clone();
    changed_again["quantity"] = json!(9);
    let both = app.post(
        "/v1/usage-events",
        Some(&p.token),
        json!({"events": [changed.clone(), changed_again]}),
    );
    assert_eq!(both.problem(409), "usage_event_conflict");
    assert!(both.text.contains("events[0]"), "{}", both.text);
    // The refused batches kept nothing: the newcomer is new still, and counted once when
    // it comes twice with the same content.
    let alone = app.post(
        "/v1/usage-events",
        Some(&p.token),
        json!({"events": [newcomer.clone(), newcomer]}),
    );
    assert_eq!(
        alone.json,
        json!({"accepted": 1, "duplicates": 1}),
        "{}",
        alone.text
    );

    let bad_cases = vec![
        (json!({"quantity": "lots"}), "events[1].quantity"),
        (json!({"quantity": -1}), "events[1].quantity"),
        (
            json!({"quantity": 1_000_000_000_001i64}),
            "events[1].quantity",
        ),
        (json!({"metric": "unpriced"}), "events[1].metric"),
        (
            json!({"timestamp": "2099-01-01T00:00:00Z"}),
            "events[1].timestamp",
        ),
        (json!({"timestamp": "yesterday"}), "events[1].timestamp"),
        (
            json!({"subscription_id": "sub_nope"}),
            "events[1].subscription_id",
        ),
        (json!({"id": ""}), "events[1].id"),
    ];
    for (change, field) in bad_cases {
        let mut bad = events[1].clone();
        bad["id"] = json!("fresh-1");
        for (k, v) in change.as_object().unwrap() {
            bad[k] = v.clone();
        }
        let mut ok = events[0].clone();
        ok["id"] = json!("fresh-0");
        let r = app.post(
            "/v1/usage-events",
            Some(&p.token),
            json!({"events": [ok, bad]}),
        );
        assert!(r.status == 422, "{change}: {} {}", r.status, r.text);
        assert!(
            r.fields().contains(&field.to_string()),
            "{change}: {:?}",
            r.fields()
        );
    }
    // Before the subscription began, the subscriber or an outsider sending: refused.
    let mut early = events[0].clone();
    early["id"] = json!("early");
    early["timestamp"] =
        json!((app.clock.now_for_tests() - chrono::Duration::hours(2)).to_rfc3339());
    assert_eq!(
        app.post(
            "/v1/usage-events",
            Some(&p.token),
            json!({"events": [early]})
        )
        .fields(),
        vec!["events[0].timestamp"]
    );
    let mut theirs = events[0].clone();
    theirs["id"] = json!("b1");
    assert_eq!(
        app.post(
            "/v1/usage-events",
            Some(&b.token),
            json!({"events": [theirs.clone()]})
        )
        .status,
        422
    );
    assert_eq!(
        app.post(
            "/v1/usage-events",
            Some(&x.token),
            json!({"events": [theirs]})
        )
        .status,
        422
    );
    assert_eq!(
        app.post("/v1/usage-events", Some(&p.token), json!({"events": []}))
            .fields(),
        vec!["events"]
    );

    // Nothing of the refused batches was written; totals are exact.
    let usage = app.get(&format!("/v1/subscriptions/{sid}/usage"), Some(&b.token));
    assert_eq!(usage.status, 200, "{}", usage.text);
    let rows = usage.json["data"].as_array().unwrap();
    let total = |metric: &str| {
        rows.iter()
            .filter(|r| r["metric"] == metric)
            .map(|r| r["quantity"].as_i64().unwrap())
            .sum::<i64>()
    };
    // 100 events of 2, and the newcomer once.
    assert_eq!(total("queries"), 202);
    assert_eq!(total("rows_scanned"), 10_000);
    assert_eq!(
        app.get(&format!("/v1/subscriptions/{sid}/usage"), Some(&p.token))
            .status,
        200
    );
    let old = app.get(
        &format!("/v1/subscriptions/{sid}/usage?from=2020-01-01&to=2020-01-31"),
        Some(&b.token),
    );
    assert_eq!(old.json["data"], json!([]));
    assert_eq!(
        app.get(
            &format!("/v1/subscriptions/{sid}/usage?from=2020-13-01"),
            Some(&b.token)
        )
        .fields(),
        vec!["from"]
    );
    // The window is inclusive: 2024 (a leap year) is 366 days, one more is too many.
    let window = |to: &str| {
        app.get(
            &format!("/v1/subscriptions/{sid}/usage?from=2024-01-01&to={to}"),
            Some(&b.token),
        )
    };
    assert_eq!(window("2024-12-31").status, 200);
    assert_eq!(window("2025-01-01").fields(), vec!["to"]);
}

#[test]
fn concurrent_overlapping_batches_give_exact_totals() {
    let app = Arc::new(TestApp::spawn());
    let (p, b) = (app.signup(), app.signup());
    let (_, offers) = market(&app, &p, &[offer("Open", json!({}))]);
    let sid = subscribe(&app, &b, &offers[0]).json["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.clock.advance(chrono::Duration::seconds(5));
    let ts = now_rfc3339(&app);
    // 16 senders; sender k sends ids k*50 .. k*50+100, so neighbours overlap by half.
    let handles: Vec<_> = (0..16)
        .map(|k| {
            let (app, token, sid, ts) = (app.clone(), p.token.clone(), sid.clone(), ts.clone());
            std::thread::spawn(move || {
                let events: Vec<Value> = (k * 50..k * 50 + 100)
                    .map(|i| json!({"id": format!("e{i}"), "subscription_id": sid, "metric": "queries", "quantity": 1, "timestamp": ts}))
                    .collect();
                app.post("/v1/usage-events", Some(&token), json!({"events": events}))
            })
        })
        .collect();
    let mut accepted = 0;
    for h in handles {
        let r = h.join().unwrap();
        assert_eq!(r.status, 200, "{}", r.text);
        accepted += r.json["accepted"].as_i64().unwrap();
    }
    assert_eq!(accepted, 15 * 50 + 100, "each id accepted exactly once");
    let usage = app.get(&format!("/v1/subscriptions/{sid}/usage"), Some(&b.token));
    assert_eq!(usage.json["data"][0]["quantity"], 850);
}

#[test]
fn a_request_for_an_offer_archived_since_cannot_be_approved() {
    let app = TestApp::spawn();
    let (p, b, c) = (app.signup(), app.signup(), app.signup());
    let (lid, offers) = market(
        &app,
        &p,
        &[
            offer("Approval", json!({"requires_approval": true})),
            offer("Other", json!({"requires_approval": true})),
        ],
    );
    let request = |who: &User, offer: &str| {
        let r = subscribe(&app, who, offer);
        assert_eq!(r.json["status"], "pending_approval", "{}", r.text);
        r.json["id"].as_str().unwrap().to_string()
    };
    let (first, second) = (request(&b, &offers[0]), request(&c, &offers[1]));
    app.post(
        &format!("/v1/offers/{}/archive", offers[0]),
        Some(&p.token),
        json!({}),
    );
    let approve = |sid: &str| {
        app.post(
            &format!("/v1/subscriptions/{sid}/approve"),
            Some(&p.token),
            json!({}),
        )
    };
    assert_eq!(approve(&first).problem(409), "offer_archived");
    app.post(
        &format!("/v1/listings/{lid}/archive"),
        Some(&p.token),
        json!({}),
    );
    assert_eq!(approve(&second).problem(409), "listing_not_published");
    assert!(
        app.get("/v1/grants", Some(&b.token)).json["data"]
            .as_array()
            .unwrap()
            .is_empty(),
        "no grant was made"
    );
}
