//! Billing through the API: worked examples to the minor unit, runs, numbering, credits.

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{json, Value};

use crate::helpers::{open_invoice, TestApp, User, PASSWORD};

/// A platform user (`operator` or `finance`), made as the CLI makes one, signed in.
fn platform(app: &TestApp, role: &str) -> User {
    let email = format!(
        "{role}-{}@example.com",
        api::domain::ids::random_token(6).to_lowercase()
    );
    api::domain::accounts::create_platform_user(
        &mut app.db.connect(),
        &app.clock,
        &email,
        "Platform",
        PASSWORD,
        role,
    )
    .unwrap();
    let t = app.sign_in(&email, PASSWORD);
    User {
        email,
        password: PASSWORD.into(),
        token: t.json["access_token"].as_str().unwrap().into(),
        refresh: t.json["refresh_token"].as_str().unwrap().into(),
        user_id: t.json["user"]["id"].as_str().unwrap().into(),
        org_id: t.json["organization"]["id"].as_str().unwrap().into(),
    }
}

fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 9, 0, 0).unwrap()
}

/// A published listing with one offer; returns the offer id.
fn offer(app: &TestApp, p: &User, body: Value) -> String {
    let l = app.post(
        "/v1/listings",
        Some(&p.token),
        json!({"title": "Prices", "summary": "EOD", "visibility": "public"}),
    );
    let lid = l.json["id"].as_str().unwrap().to_string();
    let mut o = json!({"name": "Pro", "currency": "USD", "billing_interval": "monthly", "recurring_amount": 50000,
        "term_months": 12, "trial_days": 0, "requires_approval": false, "auto_renew_default": true});
    for (k, v) in body.as_object().unwrap() {
        o[k] = v.clone();
    }
    let r = app.post(&format!("/v1/listings/{lid}/offers"), Some(&p.token), o);
    assert_eq!(r.status, 201, "{}", r.text);
    app.post(
        &format!("/v1/listings/{lid}/publish"),
        Some(&p.token),
        json!({}),
    );
    r.json["id"].as_str().unwrap().to_string()
}

fn graduated() -> Value {
    json!([{"metric": "queries", "model": "graduated", "tiers": [
        {"up_to": 100, "unit_amount_decimal": "10"}, {"up_to": null, "unit_amount_decimal": "2.5"}]}])
}

fn subscribe(app: &TestApp, b: &User, offer: &str) -> String {
    let s = app.post(
        "/v1/subscriptions",
        Some(&b.token),
        json!({"offer_id": offer}),
    );
    assert_eq!(s.status, 201, "{}", s.text);
    s.json["id"].as_str().unwrap().to_string()
}

fn usage(app: &TestApp, p: &User, sub: &str, prefix: &str, n: usize) {
    let ts = app.clock.now_for_tests().to_rfc3339();
    let events: Vec<Value> = (0..n)
        .map(|i| json!({"id": format!("{prefix}{i}"), "subscription_id": sub, "metric": "queries", "quantity": 1, "timestamp": ts}))
        .collect();
    let r = app.post(
        "/v1/usage-events",
        Some(&p.token),
        json!({"events": events}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
}

fn run(app: &TestApp, fin: &User, period: &str) -> Value {
    let r = app.post(
        "/v1/billing-runs",
        Some(&fin.token),
        json!({"period": period}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    r.json
}

/// Two runs of `period` started at once; both succeed and report no failed customer.
fn two_runs_at_once(app: &Arc<TestApp>, fin: &User, period: &str) {
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let (app, token, period) = (app.clone(), fin.token.clone(), period.to_string());
            std::thread::spawn(move || {
                app.post("/v1/billing-runs", Some(&token), json!({"period": period}))
            })
        })
        .collect();
    for r in runs {
        let r = r.join().unwrap();
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(r.json["failures"], json!([]));
    }
}

fn invoices(app: &TestApp, fin: &User, query: &str) -> Vec<Value> {
    app.all_pages(&format!("/v1/invoices?{query}"), &fin.token, 200)
}

fn invoice(app: &TestApp, fin: &User, id: &str) -> Value {
    app.get(&format!("/v1/invoices/{id}"), Some(&fin.token))
        .json
}

fn amount(v: &Value) -> i64 {
    v["amount"].as_i64().unwrap()
}

#[test]
fn a_worked_month_from_usage_to_revenue() {
    let app = TestApp::spawn();
    app.clock.set(at(2026, 11, 10));
    let (fin, op, p) = (
        platform(&app, "finance"),
        platform(&app, "operator"),
        app.signup(),
    );
    let (b0, b1) = (app.signup(), app.signup());
    let oid = offer(&app, &p, json!({"usage_prices": graduated()}));
    let (s0, s1) = (subscribe(&app, &b0, &oid), subscribe(&app, &b1, &oid));
    app.clock.advance(Duration::seconds(10));
    usage(&app, &p, &s0, "q", 150);
    usage(&app, &p, &s1, "r", 149);
    let tax = app.patch(
        &format!("/v1/organizations/{}/billing-settings", b0.org_id),
        Some(&op.token),
        json!({"tax_rate_bps": 1000}),
    );
    assert_eq!(tax.json["effective_tax_rate_bps"], 1000, "{}", tax.text);
    assert_eq!(
        app.patch(
            &format!("/v1/organizations/{}/billing-settings", b0.org_id),
            Some(&fin.token),
            json!({"tax_rate_bps": 0})
        )
        .status,
        403
    );

    let first = run(&app, &fin, "2026-11");
    assert_eq!(first["invoices_created"], 2);
    let again = run(&app, &fin, "2026-11");
    assert_eq!(
        (
            again["invoices_created"].as_i64(),
            again["invoices_updated"].as_i64()
        ),
        (Some(0), Some(2))
    );
    let all = invoices(&app, &fin, "period=2026-11");
    assert_eq!(all.len(), 2);
    let id_of = |org: &str| {
        all.iter().find(|i| i["customer"]["id"] == org).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (i0, i1) = (id_of(&b0.org_id), id_of(&b1.org_id));
    let inv0 = invoice(&app, &fin, &i0);
    assert_eq!(inv0["status"], "draft");
    assert!(inv0["number"].is_null());
    let lines: Vec<i64> = inv0["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| amount(&l["amount"]))
        .collect();
    assert_eq!(lines, vec![50000, 1125]);
    assert_eq!(
        (
            amount(&inv0["subtotal"]),
            amount(&inv0["tax"]),
            amount(&inv0["total"])
        ),
        (51125, 5112, 56237)
    );
    assert_eq!(inv0["lines"][1]["tiers"].as_array().unwrap().len(), 2);
    let inv1 = invoice(&app, &fin, &i1);
    assert_eq!(
        (amount(&inv1["subtotal"]), amount(&inv1["tax"])),
        (51122, 0),
        "122.5 rounds half-even to 122"
    );

    // Customers read their own invoices only; providers and members none.
    assert_eq!(
        app.get(&format!("/v1/invoices/{i1}"), Some(&b0.token))
            .status,
        404
    );
    assert_eq!(
        app.get(&format!("/v1/invoices/{i0}"), Some(&b0.token))
            .status,
        200
    );
    assert_eq!(invoices(&app, &b0, "").len(), 1);
    assert_eq!(
        app.get(&format!("/v1/invoices/{i0}"), Some(&p.token))
            .status,
        404
    );
    assert_eq!(
        app.post(
            "/v1/billing-runs",
            Some(&p.token),
            json!({"period": "2026-11"})
        )
        .status,
        403
    );
    assert_eq!(
        app.post(
            &format!("/v1/invoices/{i0}/finalize"),
            Some(&b0.token),
            json!({})
        )
        .status,
        403
    );

    // Finalize: consecutive numbers, then immutable.
    let f0 = app.post(
        &format!("/v1/invoices/{i0}/finalize"),
        Some(&fin.token),
        json!({}),
    );
    let f1 = app.post(
        &format!("/v1/invoices/{i1}/finalize"),
        Some(&fin.token),
        json!({}),
    );
    assert_eq!(
        (f0.json["status"].as_str(), f1.json["status"].as_str()),
        (Some("open"), Some("open"))
    );
    assert_eq!(f0.json["number"], "MKT-2026-000001");
    assert_eq!(f1.json["number"], "MKT-2026-000002");
    assert_eq!(
        app.post(
            &format!("/v1/invoices/{i0}/finalize"),
            Some(&fin.token),
            json!({})
        )
        .problem(409),
        "invalid_state"
    );

    // Pay, credit twice (tax 100 then 1), refuse over-credit, refuse voiding what is paid.
    let paid = app.post(
        &format!("/v1/invoices/{i0}/pay"),
        Some(&fin.token),
        json!({"method": "manual", "reference": "wire 123"}),
    );
    assert_eq!(paid.json["status"], "paid");
    let fee_line = inv0["lines"][0]["id"].as_str().unwrap();
    let usage_line = inv0["lines"][1]["id"].as_str().unwrap();
    let cn1 = app.post(
        &format!("/v1/invoices/{i0}/credit-notes"),
        Some(&fin.token),
        json!({"reason": "outage", "lines": [{"invoice_line_id": fee_line, "amount": 1000}]}),
    );
    let cn2 = app.post(
        &format!("/v1/invoices/{i0}/credit-notes"),
        Some(&fin.token),
        json!({"reason": "rerun", "lines": [{"invoice_line_id": usage_line, "amount": 15}]}),
    );
    assert_eq!(
        (amount(&cn1.json["tax"]), amount(&cn2.json["tax"])),
        (100, 1)
    );
    assert_eq!(amount(&cn1.json["total"]), 1100);
    let over = app.post(
        &format!("/v1/invoices/{i0}/credit-notes"),
        Some(&fin.token),
        json!({"reason": "x", "lines": [{"invoice_line_id": fee_line, "amount": 49001}]}),
    );
    assert_eq!(over.fields(), vec!["lines[0].amount"]);
    assert_eq!(
        app.post(
            &format!("/v1/invoices/{i0}/void"),
            Some(&fin.token),
            json!({})
        )
        .problem(409),
        "invalid_state"
    );

    // The export and the revenue report.
    let csv = app.get("/v1/invoices/export?period=2026-11", Some(&fin.token));
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    assert!(csv.text.lines().next().unwrap().contains("invoice_number"));
    assert!(
        csv.text.contains(",500.00\n")
            && csv.text.contains(",11.25\n")
            && csv.text.contains("MKT-2026-000002"),
        "{}",
        csv.text
    );
    let rev = app
        .get("/v1/reports/revenue?period=2026-11", Some(&fin.token))
        .json;
    let row = &rev["data"][0];
    assert_eq!(amount(&row["gross"]), 51125 + 51122 - 1000 - 15);
    assert_eq!(amount(&row["fee"]), 3037, "3% of 101232 = 3036.96");
    assert_eq!(amount(&row["net"]), 101232 - 3037);
    assert_eq!(
        app.get("/v1/reports/revenue?period=2026-11", Some(&p.token))
            .json["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(app
        .get("/v1/reports/revenue?period=2026-11", Some(&b1.token))
        .json["data"]
        .as_array()
        .unwrap()
        .is_empty());
    let payouts = app
        .get("/v1/payout-statements?period=2026-11", Some(&fin.token))
        .json;
    assert_eq!(
        amount(&payouts["data"][0]["gross"]),
        51125 - 1000 - 15,
        "payouts count paid invoices only"
    );

    // Late usage after finalization lands on December's draft as a late charge.
    usage(&app, &p, &s0, "late", 4);
    run(&app, &fin, "2026-11");
    assert_eq!(
        invoice(&app, &fin, &i0)["total"],
        f0.json["total"],
        "a finalized invoice never changes"
    );
    app.clock.set(at(2026, 12, 2));
    let fin = app.again(&fin);
    run(&app, &fin, "2026-12");
    let dec = invoices(
        &app,
        &fin,
        &format!("period=2026-12&customer={}", b0.org_id),
    );
    let dec = invoice(&app, &fin, dec[0]["id"].as_str().unwrap());
    let late: Vec<&Value> = dec["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["source"] == "late_usage")
        .collect();
    assert_eq!(late.len(), 1);
    assert_eq!(amount(&late[0]["amount"]), 10, "4 more queries at 2.5 = 10");

    // Void the open one: its period is billed again.
    assert_eq!(
        app.post(
            &format!("/v1/invoices/{i1}/void"),
            Some(&fin.token),
            json!({})
        )
        .json["status"],
        "void"
    );
    run(&app, &fin, "2026-11");
    let rebilled: Vec<Value> = invoices(
        &app,
        &fin,
        &format!("period=2026-11&customer={}", b1.org_id),
    )
    .into_iter()
    .filter(|i| i["status"] == "draft")
    .collect();
    assert_eq!(rebilled.len(), 1);
    assert_eq!(
        app.post(
            "/v1/billing-runs",
            Some(&fin.token),
            json!({"period": "2026-13"})
        )
        .fields(),
        vec!["period"]
    );
}

#[test]
fn trials_month_ends_one_time_and_volume_prices() {
    let app = TestApp::spawn();
    let (fin, p) = (platform(&app, "finance"), app.signup());
    // A trial: usage during it is free; the first fee starts with the term.
    app.clock.set(at(2026, 1, 10));
    let b = app.signup();
    let trial = offer(
        &app,
        &p,
        json!({"trial_days": 14, "usage_prices": graduated()}),
    );
    let s = subscribe(&app, &b, &trial);
    app.clock.advance(Duration::days(1));
    usage(&app, &p, &s, "t", 500);
    app.clock.set(at(2026, 1, 25));
    let p = app.again(&p);
    usage(&app, &p, &s, "u", 10);
    // Jan 31: periods step Feb 28, Mar 31.
    app.clock.set(at(2026, 1, 31));
    let (fin, p) = (app.again(&fin), app.again(&p));
    let b31 = app.signup();
    let monthly = offer(&app, &p, json!({}));
    subscribe(&app, &b31, &monthly);
    // One-time JPY, and volume tiers with a flat amount.
    let bj = app.signup();
    let jpy = offer(
        &app,
        &p,
        json!({"currency": "JPY", "billing_interval": "one_time", "recurring_amount": 120000}),
    );
    subscribe(&app, &bj, &jpy);
    let bv = app.signup();
    let volume = offer(
        &app,
        &p,
        json!({"recurring_amount": 0, "usage_prices": [{"metric": "queries", "model": "volume", "tiers": [
        {"up_to": 100, "unit_amount_decimal": "3", "flat_amount": 700}, {"up_to": null, "unit_amount_decimal": "1", "flat_amount": 200}]}]}),
    );
    let sv = subscribe(&app, &bv, &volume);
    app.clock.advance(Duration::seconds(5));
    usage(&app, &p, &sv, "v", 150);

    run(&app, &fin, "2026-01");
    let jan = |org: &str| {
        let list = invoices(&app, &fin, &format!("period=2026-01&customer={org}"));
        invoice(&app, &fin, list[0]["id"].as_str().unwrap())
    };
    let t = jan(&b.org_id);
    let amounts: Vec<i64> = t["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| amount(&l["amount"]))
        .collect();
    assert_eq!(
        amounts,
        vec![50000, 100],
        "fee from the term start on the 24th; only the 10 queries after the trial"
    );
    assert_eq!(amount(&jan(&bj.org_id)["total"]), 120000);
    assert_eq!(jan(&bj.org_id)["currency"], "JPY");
    assert_eq!(
        amount(&jan(&bv.org_id)["subtotal"]),
        350,
        "150 × 1 + the second tier's flat 200"
    );
    assert_eq!(amount(&jan(&b31.org_id)["subtotal"]), 50000);

    run(&app, &fin, "2026-02");
    let feb = invoices(
        &app,
        &fin,
        &format!("period=2026-02&customer={}", b31.org_id),
    );
    let feb = invoice(&app, &fin, feb[0]["id"].as_str().unwrap());
    assert!(feb["lines"][0]["service_period"]
        .as_str()
        .unwrap()
        .starts_with("2026-02-28T09:00:00Z/2026-03-31T09:00:00Z"));
    assert!(
        invoices(
            &app,
            &fin,
            &format!("period=2026-02&customer={}", bj.org_id)
        )
        .is_empty(),
        "one-time: nothing after the first month"
    );
}

#[test]
fn cancelling_during_a_trial_bills_nothing() {
    let app = TestApp::spawn();
    let (fin, p, b) = (platform(&app, "finance"), app.signup(), app.signup());
    app.clock.set(at(2026, 3, 1));
    let s = subscribe(&app, &b, &offer(&app, &p, json!({"trial_days": 30})));
    app.post(
        &format!("/v1/subscriptions/{s}/cancel"),
        Some(&b.token),
        json!({}),
    );
    run(&app, &fin, "2026-03");
    assert!(
        invoices(&app, &fin, "period=2026-03").is_empty(),
        "a customer with no lines gets no invoice"
    );
}

#[test]
fn a_trial_cancelled_after_its_first_period_was_invoiced_is_credited_by_the_next_run() {
    let app = TestApp::spawn();
    let (fin, p, b) = (platform(&app, "finance"), app.signup(), app.signup());
    app.clock.set(at(2026, 3, 1));
    let s = subscribe(&app, &b, &offer(&app, &p, json!({"trial_days": 7})));
    run(&app, &fin, "2026-03");
    let march = invoices(&app, &fin, "period=2026-03");
    let id = march[0]["id"].as_str().unwrap().to_string();
    let f = app.post(
        &format!("/v1/invoices/{id}/finalize"),
        Some(&fin.token),
        json!({}),
    );
    assert_eq!(
        amount(&f.json["total"]),
        50000,
        "the period after the trial: {}",
        f.text
    );
    // Cancelled in the trial: the period billed in advance will never start.
    app.clock.set(at(2026, 3, 3));
    let (fin, b) = (app.again(&fin), app.again(&b));
    let c = app.post(
        &format!("/v1/subscriptions/{s}/cancel"),
        Some(&b.token),
        json!({}),
    );
    assert_eq!(c.status, 200, "{}", c.text);
    app.clock.set(at(2026, 4, 2));
    let fin = app.again(&fin);
    run(&app, &fin, "2026-04");
    run(&app, &fin, "2026-04");
    let march = invoice(&app, &fin, &id);
    let notes = march["credit_notes"].as_array().unwrap();
    assert_eq!(notes.len(), 1, "credited once: {march}");
    assert_eq!(amount(&notes[0]["total"]), 50000);
    assert!(
        notes[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("No longer owed"),
        "{march}"
    );
    assert_eq!(amount(&march["amount_due"]), 0);
    assert_eq!(march["status"], "paid", "credited to nothing");
    assert!(invoices(&app, &fin, "period=2026-04").is_empty());
}

#[test]
fn a_voided_period_billed_again_keeps_what_a_later_invoice_billed_late() {
    let app = TestApp::spawn();
    app.clock.set(at(2026, 1, 5));
    let (fin, p, b) = (platform(&app, "finance"), app.signup(), app.signup());
    let per_unit = offer(
        &app,
        &p,
        json!({"recurring_amount": 0, "usage_prices": [{"metric": "queries", "model": "per_unit", "unit_amount_decimal": "10"}]}),
    );
    let s = subscribe(&app, &b, &per_unit);
    app.clock.advance(Duration::seconds(5));
    usage(&app, &p, &s, "q", 10);
    let january = open_invoice(&app, &fin, &b, "2026-01");
    assert_eq!(amount(&january["total"]), 100);
    // Ten more January queries arrive after January was finalized: February bills them late.
    usage(&app, &p, &s, "late", 10);
    app.clock.set(at(2026, 2, 2));
    let fin = app.again(&fin);
    let february = open_invoice(&app, &fin, &b, "2026-02");
    let late: Vec<&Value> = february["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["source"] == "late_usage")
        .collect();
    assert_eq!(late.len(), 1, "{february}");
    assert_eq!(amount(&late[0]["amount"]), 100);

    // January voided and billed again: its 20 queries cost 200, of which February holds 100.
    let jan_id = january["id"].as_str().unwrap();
    let void = app.post(
        &format!("/v1/invoices/{jan_id}/void"),
        Some(&fin.token),
        json!({}),
    );
    assert_eq!(void.status, 200, "{}", void.text);
    run(&app, &fin, "2026-01");
    run(&app, &fin, "2026-01");
    let rebilled: Vec<Value> = invoices(&app, &fin, "period=2026-01&status=draft");
    assert_eq!(rebilled.len(), 1);
    let rebilled = invoice(&app, &fin, rebilled[0]["id"].as_str().unwrap());
    let lines: Vec<&Value> = rebilled["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["source"] == "usage")
        .collect();
    assert_eq!(lines.len(), 1, "{rebilled}");
    assert_eq!(lines[0]["quantity"], 20);
    assert_eq!(
        amount(&lines[0]["amount"]),
        100,
        "200 rated − 100 billed late in February: {rebilled}"
    );
    assert_eq!(amount(&rebilled["total"]), 100);
}

#[test]
fn a_run_bills_no_period_after_the_current_term_and_reads_its_period_strictly() {
    let app = TestApp::spawn();
    app.clock.set(at(2026, 1, 5));
    let (fin, p, b) = (platform(&app, "finance"), app.signup(), app.signup());
    subscribe(&app, &b, &offer(&app, &p, json!({"term_months": 1})));
    run(&app, &fin, "2026-01");
    assert_eq!(invoices(&app, &fin, "period=2026-01").len(), 1);
    // The one-month term ends 2026-02-05 and has not been renewed: nothing to bill after it.
    for later in ["2026-02", "2026-03", "2999-12"] {
        let r = run(&app, &fin, later);
        assert_eq!(r["invoices_created"], 0, "{later}: {r}");
        assert!(
            invoices(&app, &fin, &format!("period={later}")).is_empty(),
            "{later}"
        );
    }
    // Once the term renews, its first period is billed.
    app.clock.set(at(2026, 2, 6));
    api::domain::commerce::lifecycle::run_once(&mut app.db.connect(), &app.clock).unwrap();
    let fin = app.again(&fin);
    run(&app, &fin, "2026-02");
    let february = invoices(&app, &fin, "period=2026-02");
    assert_eq!(february.len(), 1, "the renewed term is billed");
    assert_eq!(amount(&february[0]["total"]), 50000);
    for bad in ["2026-+1", "+026-01", "2026-1 "] {
        let r = app.post("/v1/billing-runs", Some(&fin.token), json!({"period": bad}));
        assert_eq!(r.status, 422, "{bad}: {}", r.text);
        assert_eq!(r.fields(), ["period"], "{bad}");
    }
}

#[test]
fn usage_beyond_the_largest_line_is_left_off_and_reported_and_the_rest_billed() {
    let app = TestApp::spawn();
    app.clock.set(at(2026, 1, 5));
    let (fin, p, other, b) = (
        platform(&app, "finance"),
        app.signup(),
        app.signup(),
        app.signup(),
    );
    let huge = offer(
        &app,
        &p,
        json!({"recurring_amount": 0, "usage_prices": [{"metric": "queries", "model": "per_unit", "unit_amount_decimal": "999999999999"}]}),
    );
    let s = subscribe(&app, &b, &huge);
    subscribe(&app, &b, &offer(&app, &other, json!({})));
    app.clock.advance(Duration::seconds(5));
    let ts = app.clock.now_for_tests().to_rfc3339();
    let r = app.post(
        "/v1/usage-events",
        Some(&p.token),
        json!({"events": [{"id": "big", "subscription_id": s, "metric": "queries", "quantity": 1_000_000, "timestamp": ts}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let r = run(&app, &fin, "2026-01");
    let failures = r["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{r}");
    assert_eq!(failures[0]["customer_id"], b.org_id.as_str());
    let error = failures[0]["error"].as_str().unwrap();
    assert!(
        error.contains(&s) && error.contains("largest a line may carry"),
        "{error}"
    );
    // The other provider's fee is billed; the usage that cannot be is not.
    let drafts = invoices(&app, &fin, "period=2026-01");
    assert_eq!(drafts.len(), 1);
    let draft = invoice(&app, &fin, drafts[0]["id"].as_str().unwrap());
    assert_eq!(amount(&draft["total"]), 50000, "{draft}");
    assert!(
        draft["lines"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["source"] != "usage"),
        "{draft}"
    );
    let report = app.get("/v1/reports/revenue?period=2026-01", Some(&fin.token));
    assert_eq!(report.status, 200, "{}", report.text);
}

#[test]
fn revenue_takes_each_lines_fee_rate_and_a_credit_the_rate_of_its_line() {
    let app = TestApp::spawn();
    app.clock.set(at(2026, 5, 4));
    let (fin, op, p, b0, b1) = (
        platform(&app, "finance"),
        platform(&app, "operator"),
        app.signup(),
        app.signup(),
        app.signup(),
    );
    let o = offer(&app, &p, json!({"recurring_amount": 10000}));
    subscribe(&app, &b0, &o);
    run(&app, &fin, "2026-05");
    let finalize = |customer: &User| {
        let inv = &invoices(
            &app,
            &fin,
            &format!("period=2026-05&customer={}", customer.org_id),
        )[0];
        let id = inv["id"].as_str().unwrap().to_string();
        let r = app.post(
            &format!("/v1/invoices/{id}/finalize"),
            Some(&fin.token),
            json!({}),
        );
        assert_eq!(r.status, 200, "{}", r.text);
        invoice(&app, &fin, &id)
    };
    let first = finalize(&b0);
    // The provider's fee changes between the two customers' drafts.
    let r = app.patch(
        &format!("/v1/organizations/{}/billing-settings", p.org_id),
        Some(&op.token),
        json!({"fee_bps": 1000}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    subscribe(&app, &b1, &o);
    run(&app, &fin, "2026-05");
    let second = finalize(&b1);
    let report = |period: &str, provider: &User| {
        let rows = app
            .get(
                &format!("/v1/reports/revenue?period={period}"),
                Some(&provider.token),
            )
            .json;
        assert_eq!(rows["data"].as_array().map(Vec::len), Some(1), "{rows}");
        rows["data"][0].clone()
    };
    let may = report("2026-05", &p);
    assert_eq!(amount(&may["gross"]), 20000);
    assert_eq!(
        amount(&may["fee"]),
        300 + 1000,
        "3 % of one line, 10 % of the other"
    );
    assert_eq!(amount(&may["net"]), 20000 - 1300);
    assert_eq!(
        may["fee_bps"],
        Value::Null,
        "two rates: no one rate to show"
    );

    // June: only credits, each at the rate of the line it credits: first the line billed
    // at 10 % (the provider's rate now is 10 % too, the default 3 %).
    app.clock.set(at(2026, 6, 3));
    let (fin, op, p) = (app.again(&fin), app.again(&op), app.again(&p));
    let credit = |invoice: &Value, amount: i64| {
        let r = app.post(
            &format!(
                "/v1/invoices/{}/credit-notes",
                invoice["id"].as_str().unwrap()
            ),
            Some(&fin.token),
            json!({"reason": "outage", "lines": [
                {"invoice_line_id": invoice["lines"][0]["id"], "amount": amount}]}),
        );
        assert_eq!(r.status, 201, "{}", r.text);
    };
    credit(&second, 5000);
    let june = report("2026-06", &p);
    assert_eq!(amount(&june["gross"]), -5000);
    assert_eq!(amount(&june["fee"]), -500);
    assert_eq!(amount(&june["net"]), -4500);
    assert_eq!(june["fee_bps"], 1000);
    // Then 20.00 of the line billed at 3 %, after the provider's rate went to 0.
    let r = app.patch(
        &format!("/v1/organizations/{}/billing-settings", p.org_id),
        Some(&op.token),
        json!({"fee_bps": 0}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    credit(&first, 2000);
    let june = report("2026-06", &p);
    assert_eq!(amount(&june["gross"]), -7000);
    assert_eq!(amount(&june["fee"]), -500 - 60);
    assert_eq!(amount(&june["net"]), -7000 + 560);
    assert_eq!(june["fee_bps"], Value::Null);
}

#[test]
fn concurrent_runs_and_finalizations_stay_exact() {
    let app = Arc::new(TestApp::spawn());
    app.clock.set(at(2026, 5, 5));
    let (fin, p) = (platform(&app, "finance"), app.signup());
    let oid = offer(&app, &p, json!({"usage_prices": graduated()}));
    for _ in 0..50 {
        let b = app.signup();
        subscribe(&app, &b, &oid);
    }
    two_runs_at_once(&app, &fin, "2026-05");
    let all = invoices(&app, &fin, "period=2026-05");
    assert_eq!(all.len(), 50, "one invoice per customer");
    assert!(
        all.iter().all(|i| amount(&i["subtotal"]) == 50000),
        "no doubled line"
    );
    let finals: Vec<_> = all
        .iter()
        .map(|i| {
            let (app, token, id) = (
                app.clone(),
                fin.token.clone(),
                i["id"].as_str().unwrap().to_string(),
            );
            std::thread::spawn(move || {
                app.post(
                    &format!("/v1/invoices/{id}/finalize"),
                    Some(&token),
                    json!({}),
                )
            })
        })
        .collect();
    let mut numbers: Vec<String> = finals
        .into_iter()
        .map(|h| {
            let r = h.join().unwrap();
            assert_eq!(r.status, 200, "{}", r.text);
            r.json["number"].as_str().unwrap().to_string()
        })
        .collect();
    numbers.sort();
    let expected: Vec<String> = (1..=50).map(|n| format!("MKT-2026-{n:06}")).collect();
    assert_eq!(numbers, expected, "gap-free, no duplicate");
}

/// Late usage that moves a finalized month's volume price to a cheaper tier lowers what the
/// month owes: the next run credits the difference back on that invoice, once, whatever
/// finance credited by hand, and however many runs see it at once.
#[test]
fn late_usage_that_lowers_a_volume_charge_is_credited_once() {
    let app = Arc::new(TestApp::builder().webhook_allow_private(true).spawn());
    app.clock.set(at(2026, 1, 5));
    let (fin, op, p, b) = (
        platform(&app, "finance"),
        platform(&app, "operator"),
        app.signup(),
        app.signup(),
    );
    let volume = offer(
        &app,
        &p,
        json!({"recurring_amount": 0, "usage_prices": [{"metric": "queries", "model": "volume", "tiers": [
        {"up_to": 100, "unit_amount_decimal": "10"}, {"up_to": null, "unit_amount_decimal": "5"}]}]}),
    );
    let s = subscribe(&app, &b, &volume);
    let hook = app.post(
        "/v1/webhook-endpoints",
        Some(&b.token),
        json!({"url": "http://127.0.0.1:9/hooks", "events": ["credit_note.issued"]}),
    );
    assert_eq!(hook.status, 201, "{}", hook.text);
    app.patch(
        &format!("/v1/organizations/{}/billing-settings", b.org_id),
        Some(&op.token),
        json!({"tax_rate_bps": 1000}),
    );
    app.clock.advance(Duration::seconds(5));
    usage(&app, &p, &s, "q", 100);
    run(&app, &fin, "2026-01");
    let jan = invoices(&app, &fin, &format!("period=2026-01&customer={}", b.org_id));
    let jan_id = jan[0]["id"].as_str().unwrap().to_string();
    let finalized = app.post(
        &format!("/v1/invoices/{jan_id}/finalize"),
        Some(&fin.token),
        json!({}),
    );
    assert_eq!(
        (
            amount(&finalized.json["subtotal"]),
            amount(&finalized.json["tax"]),
            amount(&finalized.json["total"])
        ),
        (1000, 100, 1100),
        "100 queries at the first tier's 10, tax 10%"
    );
    let usage_line = finalized.json["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["source"] == "usage")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Finance credits 100 by hand (goodwill): that credit stays, it is never billed again.
    let goodwill = app.post(
        &format!("/v1/invoices/{jan_id}/credit-notes"),
        Some(&fin.token),
        json!({"reason": "goodwill", "lines": [{"invoice_line_id": usage_line, "amount": 100}]}),
    );
    assert_eq!(goodwill.status, 201, "{}", goodwill.text);
    assert_eq!(amount(&goodwill.json["tax"]), 10);

    // 20 more January queries arrive late: 120 at the second tier's 5 = 600, not 1,000.
    usage(&app, &p, &s, "late", 20);
    app.clock.set(at(2026, 2, 2));
    let fin = app.again(&fin);
    two_runs_at_once(&app, &fin, "2026-02");
    run(&app, &fin, "2026-02");
    let jan = invoice(&app, &fin, &jan_id);
    let notes = jan["credit_notes"].as_array().unwrap();
    assert_eq!(
        notes.len(),
        2,
        "the goodwill note and one adjustment: {jan}"
    );
    let adjustment = &notes[1];
    assert_eq!(
        (
            amount(&adjustment["subtotal"]),
            amount(&adjustment["tax"]),
            amount(&adjustment["total"])
        ),
        (400, 40, 440),
        "1,000 billed − 600 rated; tax round(100 × 500 / 1,000) − 10 already credited"
    );
    assert_eq!(adjustment["lines"][0]["invoice_line_id"], usage_line);
    assert_eq!(amount(&jan["amount_credited"]), 550);
    assert_eq!(amount(&jan["amount_due"]), 550);
    assert_eq!(jan["status"], "open");
    assert_eq!(
        amount(&jan["total"]),
        1100,
        "a finalized invoice never changes"
    );
    let late_lines: Vec<Value> = invoices(&app, &fin, &format!("customer={}", b.org_id))
        .iter()
        .map(|i| invoice(&app, &fin, i["id"].as_str().unwrap()))
        .flat_map(|i| i["lines"].as_array().unwrap().clone())
        .filter(|l| l["source"] == "late_usage")
        .collect();
    assert!(
        late_lines.is_empty(),
        "no negative late line: {late_lines:?}"
    );
    // The customer's endpoint is told of each note once: the goodwill and the adjustment.
    let told = app.webhook_events(&b.org_id);
    let mut noted: Vec<&str> = told
        .iter()
        .map(|e| {
            assert_eq!(e["type"], "credit_note.issued");
            e["data"]["credit_note"]["id"].as_str().unwrap()
        })
        .collect();
    noted.sort();
    let mut expected = vec![
        goodwill.json["id"].as_str().unwrap(),
        adjustment["id"].as_str().unwrap(),
    ];
    expected.sort();
    assert_eq!(noted, expected);
}

/// A run bills the month's usage from the sums kept as events are stored: concurrent
/// batches that share event ids, a refused batch and metered sums must still bill exactly
/// what the daily usage report (read from the events) shows.
#[test]
fn the_billed_quantity_matches_the_events_stored_under_concurrent_batches() {
    let app = Arc::new(TestApp::spawn());
    app.clock.set(at(2026, 5, 20));
    let (fin, p, b) = (platform(&app, "finance"), app.signup(), app.signup());
    let s = subscribe(
        &app,
        &b,
        &offer(&app, &p, json!({"usage_prices": graduated()})),
    );
    // Billed since May: June's usage is read from the month's sums, not from the events.
    app.clock.set(at(2026, 6, 3));
    let (fin, p) = (app.again(&fin), app.again(&p));
    let ts = app.clock.now_for_tests().to_rfc3339();
    // Four senders at once; each batch repeats half of the previous sender's ids.
    let senders: Vec<_> = (0..4)
        .map(|t| {
            let (app, token, s, ts) = (app.clone(), p.token.clone(), s.clone(), ts.clone());
            std::thread::spawn(move || {
                let events: Vec<Value> = (t * 50..t * 50 + 100)
                    .map(|i| {
                        json!({"id": format!("e{i}"), "subscription_id": s, "metric": "queries",
                        "quantity": 1 + i % 7, "timestamp": ts})
                    })
                    .collect();
                app.post("/v1/usage-events", Some(&token), json!({"events": events}))
            })
        })
        .collect();
    for sender in senders {
        let r = sender.join().unwrap();
        assert_eq!(r.status, 200, "{}", r.text);
    }
    // A batch refused for a conflicting resend keeps nothing, not even its new events.
    let refused = app.post(
        "/v1/usage-events",
        Some(&p.token),
        json!({"events": [
            {"id": "fresh", "subscription_id": s, "metric": "queries", "quantity": 1000, "timestamp": ts},
            {"id": "e0", "subscription_id": s, "metric": "queries", "quantity": 999, "timestamp": ts}]}),
    );
    assert_eq!(refused.status, 409, "{}", refused.text);
    let expected: i64 = (0..250).map(|i| 1 + i % 7).sum();
    let report = app.get(
        &format!("/v1/subscriptions/{s}/usage?from=2026-06-01&to=2026-06-30"),
        Some(&p.token),
    );
    assert_eq!(
        report.json["data"][0]["quantity"], expected,
        "{}",
        report.text
    );
    run(&app, &fin, "2026-06");
    let june = invoices(&app, &fin, &format!("period=2026-06&customer={}", b.org_id));
    let june = invoice(&app, &fin, june[0]["id"].as_str().unwrap());
    let billed = june["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["source"] == "usage")
        .unwrap();
    assert_eq!(billed["quantity"], expected, "{june}");
}

#[test]
fn two_settings_changed_at_once_both_take_effect() {
    let app = TestApp::spawn();
    let op = platform(&app, "operator");
    let b = app.signup();
    let path = format!("/v1/organizations/{}/billing-settings", b.org_id);
    for round in 1..=5 {
        let (tax, fee) = std::thread::scope(|s| {
            let patch = |body: Value| {
                let (app, op, path) = (&app, &op, &path);
                s.spawn(move || app.patch(path, Some(&op.token), body))
            };
            let tax = patch(json!({"tax_rate_bps": 100 * round}));
            let fee = patch(json!({"fee_bps": 10 * round}));
            (tax.join().unwrap(), fee.join().unwrap())
        });
        assert_eq!(
            (tax.status, fee.status),
            (200, 200),
            "{} {}",
            tax.text,
            fee.text
        );
        let now = app.patch(&path, Some(&op.token), json!({}));
        assert_eq!(
            (
                now.json["tax_rate_bps"].as_i64(),
                now.json["fee_bps"].as_i64()
            ),
            (Some(100 * round), Some(10 * round)),
            "round {round}: {}",
            now.text
        );
    }
    let missing = app.patch(
        "/v1/organizations/org_missing/billing-settings",
        Some(&op.token),
        json!({"fee_bps": 1}),
    );
    assert_eq!(missing.problem(404), "not_found");
}
