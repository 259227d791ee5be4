//! The lifecycle worker, driven by the test's clock: renewals, expiries, periods, exactly once.

use std::sync::Arc;

use api::domain::commerce::lifecycle::{self, Report};
use chrono::Duration;
use serde_json::{json, Value};

use crate::helpers::{TestApp, User};

fn offer(extra: Value) -> Value {
    let mut o = json!({"name": "Plan", "currency": "USD", "billing_interval": "monthly", "recurring_amount": 1000,
        "term_months": 1, "trial_days": 0, "requires_approval": false, "auto_renew_default": true});
    for (k, v) in extra.as_object().unwrap() {
        o[k] = v.clone();
    }
    o
}

/// A published listing with one offer; a subscriber's subscription to it (id) or request.
fn subscription(app: &TestApp, p: &User, b: &User, extra: Value) -> (String, String) {
    let l = app.post(
        "/v1/listings",
        Some(&p.token),
        json!({"title": "T", "summary": "S", "visibility": "public"}),
    );
    let lid = l.json["id"].as_str().unwrap().to_string();
    let o = app.post(
        &format!("/v1/listings/{lid}/offers"),
        Some(&p.token),
        offer(extra),
    );
    let oid = o.json["id"].as_str().unwrap().to_string();
    app.post(
        &format!("/v1/listings/{lid}/publish"),
        Some(&p.token),
        json!({}),
    );
    let s = app.post(
        "/v1/subscriptions",
        Some(&b.token),
        json!({"offer_id": oid}),
    );
    assert_eq!(s.status, 201, "{}", s.text);
    (s.json["id"].as_str().unwrap().to_string(), oid)
}

fn run(app: &TestApp) -> Report {
    lifecycle::run_once(&mut app.db.connect(), &app.clock).expect("lifecycle pass")
}

#[test]
fn an_auto_renewing_subscription_renews_at_term_end_with_its_snapshot() {
    let app = TestApp::spawn();
    let (p, b) = (app.signup(), app.signup());
    let (sid, _) = subscription(&app, &p, &b, json!({}));
    let before = app
        .get(&format!("/v1/subscriptions/{sid}"), Some(&b.token))
        .json;
    assert_eq!(run(&app), Report::default(), "nothing is due yet");
    app.clock.advance(Duration::days(32));
    let report = run(&app);
    assert_eq!(report.renewed, 1, "{report:?}");
    let b = app.again(&b);
    let after = app
        .get(&format!("/v1/subscriptions/{sid}"), Some(&b.token))
        .json;
    assert_eq!(after["status"], "active");
    assert_eq!(after["term_start"], before["term_end"]);
    assert_eq!(after["current_period_start"], before["term_end"]);
    assert_eq!(after["prices"], before["prices"]);
    let grant = &app.get("/v1/grants", Some(&b.token)).json["data"][0];
    assert_eq!(grant["valid_until"], after["term_end"]);
    assert_eq!(grant["live"], true);
    assert_eq!(run(&app), Report::default(), "a second pass does nothing");
}

#[test]
fn cancelled_and_archived_subscriptions_end_with_their_term() {
    let app = TestApp::spawn();
    let (p, b) = (app.signup(), app.signup());
    let (cancelled, _) = subscription(&app, &p, &b, json!({}));
    app.post(
        &format!("/v1/subscriptions/{cancelled}/cancel"),
        Some(&b.token),
        json!({}),
    );
    let (archived, offer) = subscription(&app, &p, &b, json!({}));
    app.post(
        &format!("/v1/offers/{offer}/archive"),
        Some(&p.token),
        json!({}),
    );
    app.clock.advance(Duration::days(32));
    let report = run(&app);
    assert_eq!(report.expired, 2, "{report:?}");
    let b = app.again(&b);
    assert_eq!(
        app.get(&format!("/v1/subscriptions/{cancelled}"), Some(&b.token))
            .json["status"],
        "cancelled"
    );
    assert_eq!(
        app.get(&format!("/v1/subscriptions/{archived}"), Some(&b.token))
            .json["status"],
        "expired"
    );
    let grants = app.get("/v1/grants", Some(&b.token)).json;
    assert!(grants["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|g| g["live"] == false));
}

#[test]
fn unanswered_requests_expire_and_periods_move_monthly() {
    let app = TestApp::spawn();
    let (p, b) = (app.signup(), app.signup());
    let (request, _) = subscription(&app, &p, &b, json!({"requires_approval": true}));
    let (yearly, _) = subscription(&app, &p, &b, json!({"term_months": 12}));
    let first = app
        .get(&format!("/v1/subscriptions/{yearly}"), Some(&b.token))
        .json;
    app.clock.advance(Duration::days(15));
    let report = run(&app);
    assert_eq!(report.requests_expired, 1, "{report:?}");
    let b = app.again(&b);
    assert_eq!(
        app.get(&format!("/v1/subscriptions/{request}"), Some(&b.token))
            .json["status"],
        "expired"
    );
    app.clock.advance(Duration::days(20));
    assert_eq!(run(&app).periods_advanced, 1);
    let b = app.again(&b);
    let second = app
        .get(&format!("/v1/subscriptions/{yearly}"), Some(&b.token))
        .json;
    assert_eq!(second["current_period_start"], first["current_period_end"]);
    assert_eq!(second["term_end"], first["term_end"]);
}

#[test]
fn two_workers_at_once_renew_each_subscription_exactly_once() {
    let app = Arc::new(TestApp::spawn());
    let p = app.signup();
    let mut ids = Vec::new();
    for _ in 0..12 {
        let b = app.signup();
        ids.push(subscription(&app, &p, &b, json!({})).0);
    }
    app.clock.advance(Duration::days(32));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let app = app.clone();
            std::thread::spawn(move || run(&app))
        })
        .collect();
    let reports: Vec<Report> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    assert_eq!(
        reports.iter().map(|r| r.renewed).sum::<usize>(),
        12,
        "{reports:?}"
    );
    // Every subscription moved exactly one term: its audit trail says renewed once.
    use schema::diesel::prelude::*;
    use schema::schema::audit_events;
    let mut conn = app.db.connect();
    for id in &ids {
        let renewals: i64 = audit_events::table
            .filter(audit_events::subject.eq(id))
            .filter(audit_events::action.eq("subscription.renewed"))
            .count()
            .get_result(&mut conn)
            .unwrap();
        assert_eq!(renewals, 1, "{id}");
    }
}

#[test]
fn subscribers_hear_a_week_before_the_term_ends_once() {
    let app = TestApp::spawn();
    let (p, b) = (app.signup(), app.signup());
    subscription(&app, &p, &b, json!({}));
    app.clock.advance(Duration::days(20));
    assert_eq!(run(&app).reminders, 0, "not yet");
    app.clock.advance(Duration::days(5));
    assert_eq!(run(&app).reminders, 1);
    assert_eq!(run(&app).reminders, 0, "once per term");
    app.deliver_outbox();
    let mail: Vec<_> = std::fs::read_dir(app.data_dir().join("mail"))
        .unwrap()
        .collect();
    assert!(!mail.is_empty(), "the reminder went out as an e-mail");
}

#[test]
fn the_reminder_of_an_archived_listings_subscription_says_it_ends() {
    let app = TestApp::spawn();
    let (p, b) = (app.signup(), app.signup());
    let (sid, _) = subscription(&app, &p, &b, json!({}));
    let s = app
        .get(&format!("/v1/subscriptions/{sid}"), Some(&b.token))
        .json;
    assert_eq!(s["auto_renew"], true, "{s}");
    let listing = s["listing_id"].as_str().unwrap();
    let r = app.post(
        &format!("/v1/listings/{listing}/archive"),
        Some(&p.token),
        json!({}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    app.clock.advance(Duration::days(25));
    assert_eq!(run(&app).reminders, 1);
    app.deliver_outbox();
    let subjects: Vec<String> = std::fs::read_dir(app.data_dir().join("mail"))
        .unwrap()
        .map(|f| std::fs::read_to_string(f.unwrap().path()).unwrap())
        .filter_map(|m| {
            m.lines()
                .find(|l| l.starts_with("Subject:"))
                .map(str::to_string)
        })
        .collect();
    assert!(
        subjects.iter().any(|l| l.contains("ends on"))
            && !subjects.iter().any(|l| l.contains("renews on")),
        "{subjects:?}"
    );
    // Nor can the subscriber ask for a renewal that will not come.
    let b = app.again(&b);
    let renew = |on: bool| {
        app.patch(
            &format!("/v1/subscriptions/{sid}"),
            Some(&b.token),
            json!({"auto_renew": on}),
        )
    };
    assert_eq!(renew(true).problem(409), "not_renewable");
    assert_eq!(renew(false).status, 200);
}

#[test]
fn a_subscription_cancelled_in_its_trial_ends_with_the_trial_however_often_cancelled() {
    let app = TestApp::spawn();
    let (p, b) = (app.signup(), app.signup());
    let (sid, oid) = subscription(&app, &p, &b, json!({"trial_days": 1, "term_months": 3}));
    let cancel = |b: &User| {
        app.post(
            &format!("/v1/subscriptions/{sid}/cancel"),
            Some(&b.token),
            json!({}),
        )
    };
    let first = cancel(&b);
    assert_eq!(first.status, 200, "{}", first.text);
    let trial_end = first.json["trial_end"].clone();
    assert_eq!(first.json["cancel_at"], trial_end);
    // After the trial, before the worker's pass: cancelling again, or turning auto-renew
    // off, leaves the end at the trial's.
    app.clock.advance(Duration::days(2));
    let b = app.again(&b);
    assert_eq!(cancel(&b).json["cancel_at"], trial_end);
    let patched = app.patch(
        &format!("/v1/subscriptions/{sid}"),
        Some(&b.token),
        json!({"auto_renew": false}),
    );
    assert_eq!(patched.json["cancel_at"], trial_end, "{}", patched.text);
    assert_eq!(run(&app).expired, 1);
    let s = app
        .get(&format!("/v1/subscriptions/{sid}"), Some(&b.token))
        .json;
    assert_eq!(
        (s["status"].as_str(), &s["ended_at"]),
        (Some("cancelled"), &trial_end)
    );
    // Ended, so the same offer can be taken again.
    let again = app.post(
        "/v1/subscriptions",
        Some(&b.token),
        json!({"offer_id": oid}),
    );
    assert_eq!(again.status, 201, "{}", again.text);
}
