//! Payments: collection through a local mock of Stripe's API (one PaymentIntent per invoice
//! whatever the retries), Stripe's webhooks with real signatures, failed payments, and the
//! grace period that suspends and restores grants.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use api::config::{PaymentSettings, Secret};
use api::domain::clock::SharedClock;
use api::domain::invoicing::payments::{self, Report};
use api::domain::invoicing::{grace, stripe::Stripe};
use chrono::{DateTime, Duration, TimeZone, Utc};
use hmac::{Hmac, Mac};
use reqwest::Method;
use schema::diesel::prelude::*;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::helpers::{open_invoice, TestApp, User, PASSWORD};

// ------------------------------------------------------------------ a mock of Stripe's API

/// One request the mock received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    authorization: Option<String>,
    idempotency_key: Option<String>,
    form: HashMap<String, String>,
}

#[derive(Default)]
struct MockState {
    seen: Vec<Seen>,
    customers: HashMap<String, Value>,
    /// Answers already given, by idempotency key (Stripe replays them to a retry).
    answers: HashMap<String, (u16, Value)>,
    payment_intents_created: usize,
    /// Create the next PaymentIntent, then drop the connection without answering: the
    /// answer is lost, as in a timeout.
    lose_next_payment_intent_answer: bool,
    /// Status of the PaymentIntents created (`processing`: the webhook settles them).
    payment_intent_status: String,
    /// Create the next PaymentIntent and refuse the card (402), as Stripe does on a decline.
    decline_next_payment_intent: bool,
}

/// The Stripe endpoints the server uses (`POST /v1/customers`, `GET /v1/customers/{id}`,
/// `POST /v1/payment_intents`), honouring `Idempotency-Key` as Stripe does, on 127.0.0.1:0.
#[derive(Clone)]
struct MockStripe {
    base: String,
    state: Arc<Mutex<MockState>>,
}

impl MockStripe {
    fn start() -> MockStripe {
        let listener = TcpListener::bind("127.0.0.1:0").expect("mock binds");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(MockState {
            payment_intent_status: "processing".into(),
            ..MockState::default()
        }));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = shared.clone();
                std::thread::spawn(move || serve(stream, &state));
            }
        });
        MockStripe { base, state }
    }

    fn lose_next_payment_intent_answer(&self) {
        self.state.lock().unwrap().lose_next_payment_intent_answer = true;
    }

    fn decline_next_payment_intent(&self) {
        self.state.lock().unwrap().decline_next_payment_intent = true;
    }

    fn payment_intent_status(&self, status: &str) {
        self.state.lock().unwrap().payment_intent_status = status.into();
    }

    fn seen(&self, method: &str, path_prefix: &str) -> Vec<Seen> {
        self.state
            .lock()
            .unwrap()
            .seen
            .iter()
            .filter(|s| s.method == method && s.path.starts_with(path_prefix))
            .cloned()
            .collect()
    }

    fn payment_intents_created(&self) -> usize {
        self.state.lock().unwrap().payment_intents_created
    }
}

fn serve(stream: TcpStream, state: &Mutex<MockState>) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok();
    let form = parse_form(&String::from_utf8_lossy(&body));
    let seen = Seen {
        method: method.clone(),
        path: path.clone(),
        authorization: headers.get("authorization").cloned(),
        idempotency_key: headers.get("idempotency-key").cloned(),
        form: form.clone(),
    };
    let (status, answer) = {
        let mut st = state.lock().unwrap();
        st.seen.push(seen.clone());
        match (method.as_str(), path.as_str()) {
            ("POST", "/v1/customers") => replay_or(&mut st, &seen, |st| {
                let id = format!("cus_mock{}", st.customers.len() + 1);
                let customer = json!({
                    "id": id, "object": "customer", "created": 1_795_000_000, "livemode": false,
                    "name": form.get("name"), "metadata": metadata(&form),
                    "invoice_settings": {"default_payment_method": "pm_card_visa"},
                });
                st.customers.insert(id, customer.clone());
                (200, customer)
            }),
            ("GET", p) if p.starts_with("/v1/customers/") => {
                let id = p
                    .trim_start_matches("/v1/customers/")
                    .split('?')
                    .next()
                    .unwrap();
                match st.customers.get(id) {
                    Some(c) => (200, c.clone()),
                    None => (
                        404,
                        json!({"error": {"type": "invalid_request_error", "code": "resource_missing",
                                         "message": format!("No such customer: '{id}'")}}),
                    ),
                }
            }
            ("POST", "/v1/payment_intents") => {
                let lose = seen
                    .idempotency_key
                    .as_ref()
                    .is_some_and(|k| !st.answers.contains_key(k))
                    && std::mem::take(&mut st.lose_next_payment_intent_answer);
                let answer = replay_or(&mut st, &seen, |st| {
                    st.payment_intents_created += 1;
                    if std::mem::take(&mut st.decline_next_payment_intent) {
                        return (
                            402,
                            json!({"error": {"type": "card_error", "code": "card_declined",
                                             "decline_code": "generic_decline",
                                             "message": "Your card was declined."}}),
                        );
                    }
                    let amount: i64 = form["amount"].parse().unwrap();
                    let status = st.payment_intent_status.clone();
                    let received = if status == "succeeded" { amount } else { 0 };
                    (
                        200,
                        json!({
                            "id": format!("pi_mock{}", st.payment_intents_created),
                            "object": "payment_intent", "amount": amount, "amount_capturable": 0,
                            "amount_received": received, "capture_method": "automatic",
                            "confirmation_method": "automatic", "created": 1_795_000_000,
                            "currency": form["currency"], "customer": form.get("customer"),
                            "livemode": false, "metadata": metadata(&form),
                            "payment_method": form.get("payment_method"),
                            "payment_method_types": ["card"], "status": status,
                            "client_secret": "pi_secret",
                        }),
                    )
                });
                if lose {
                    // Created, but the answer never arrives.
                    return;
                }
                answer
            }
            _ => (
                404,
                json!({"error": {"type": "invalid_request_error", "message": "Unrecognized request URL"}}),
            ),
        }
    };
    let body = answer.to_string();
    let reason = match status {
        200 => "OK",
        402 => "Payment Required",
        _ => "Not Found",
    };
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// Stripe's idempotency: the first answer under a key (a refusal too) is the answer to every
/// retry.
fn replay_or(
    st: &mut MockState,
    seen: &Seen,
    create: impl FnOnce(&mut MockState) -> (u16, Value),
) -> (u16, Value) {
    if let Some(key) = &seen.idempotency_key {
        if let Some(answer) = st.answers.get(key) {
            return answer.clone();
        }
    }
    let answer = create(st);
    if let Some(key) = &seen.idempotency_key {
        st.answers.insert(key.clone(), answer.clone());
    }
    answer
}

fn parse_form(body: &str) -> HashMap<String, String> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    body.split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn metadata(form: &HashMap<String, String>) -> Value {
    let mut m = serde_json::Map::new();
    for (k, v) in form {
        if let Some(key) = k
            .strip_prefix("metadata[")
            .and_then(|k| k.strip_suffix(']'))
        {
            m.insert(key.to_string(), Value::String(v.clone()));
        }
    }
    Value::Object(m)
}

// ------------------------------------------------------------------ the marketplace side

const KEY: &str = "sk_test_mock";

fn settings(api_base: &str, webhook_secrets: &[&str]) -> PaymentSettings {
    PaymentSettings {
        stripe_secret_key: Some(Secret::new(KEY)),
        stripe_webhook_secrets: webhook_secrets.iter().map(|s| Secret::new(*s)).collect(),
        stripe_api_base: api_base.to_string(),
        grace_days: 14,
    }
}

/// Stripe webhooks verified with `webhook_secrets`, no Stripe key: payments stay manual.
fn webhooks_only(webhook_secrets: &[&str]) -> PaymentSettings {
    PaymentSettings {
        stripe_secret_key: None,
        ..settings("https://api.stripe.com", webhook_secrets)
    }
}

/// Runs the payment jobs due now, as the worker and `jobs run-once` do.
fn collect(app: &TestApp, stripe: &Stripe) -> Report {
    let pool = schema::connect(&app.db.url, 2, false, schema::FileReads::Copied).expect("pool");
    let clock: SharedClock = Arc::new(app.clock.clone());
    actix_web::rt::System::new()
        .block_on(payments::collect_due(&pool, clock, stripe))
        .expect("payment pass")
}

fn grace_pass(app: &TestApp) -> grace::Report {
    grace::run_once(&mut app.db.connect(), &app.clock, 14).expect("grace pass")
}

fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 9, 0, 0).unwrap()
}

/// A platform finance user, made as the CLI makes one, signed in.
fn finance(app: &TestApp) -> User {
    let email = format!(
        "finance-{}@example.com",
        api::domain::ids::random_token(6).to_lowercase()
    );
    api::domain::accounts::create_platform_user(
        &mut app.db.connect(),
        &app.clock,
        &email,
        "Finance",
        PASSWORD,
        "finance",
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

/// A provider's published listing with one dataset holding one file, and a monthly USD offer
/// of 500.00.
struct Shop {
    offer: String,
    listing: String,
    asset: String,
}

fn shop(app: &TestApp, p: &User) -> Shop {
    shop_in(app, p, "USD", 50000)
}

/// A published listing whose offer charges `recurring_amount` minor units of `currency` a
/// month, with a finalized revision holding one asset.
fn shop_in(app: &TestApp, p: &User, currency: &str, recurring_amount: i64) -> Shop {
    let l = app.post(
        "/v1/listings",
        Some(&p.token),
        json!({"title": "Prices", "summary": "EOD", "visibility": "public"}),
    );
    assert_eq!(l.status, 201, "{}", l.text);
    let lid = l.json["id"].as_str().unwrap().to_string();
    let o = app.post(
        &format!("/v1/listings/{lid}/offers"),
        Some(&p.token),
        json!({"name": "Pro", "currency": currency, "billing_interval": "monthly", "recurring_amount": recurring_amount,
               "term_months": 12, "usage_prices": [], "trial_days": 0, "requires_approval": false,
               "auto_renew_default": true}),
    );
    assert_eq!(o.status, 201, "{}", o.text);
    let d = app.post(
        &format!("/v1/listings/{lid}/datasets"),
        Some(&p.token),
        json!({"name": "eod"}),
    );
    assert_eq!(d.status, 201, "{}", d.text);
    let r = app.post(
        &format!("/v1/datasets/{}/revisions", d.json["id"].as_str().unwrap()),
        Some(&p.token),
        json!({"comment": "first"}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let rid = r.json["id"].as_str().unwrap().to_string();
    let up = reqwest::blocking::Client::new()
        .put(format!("{}/v1/revisions/{rid}/assets/prices.csv", app.base))
        .bearer_auth(&p.token)
        .header("content-type", "text/csv")
        .body("day,close\n2026-11-09,101.5\n")
        .send()
        .unwrap();
    assert_eq!(up.status().as_u16(), 201);
    let asset: Value = up.json().unwrap();
    let f = app.post(
        &format!("/v1/revisions/{rid}/finalize"),
        Some(&p.token),
        json!({}),
    );
    assert_eq!(f.status, 200, "{}", f.text);
    let publish = app.post(
        &format!("/v1/listings/{lid}/publish"),
        Some(&p.token),
        json!({}),
    );
    assert_eq!(publish.status, 200, "{}", publish.text);
    Shop {
        offer: o.json["id"].as_str().unwrap().to_string(),
        listing: lid,
        asset: asset["id"].as_str().unwrap().to_string(),
    }
}

fn subscribe(app: &TestApp, b: &User, offer: &str) {
    let s = app.post(
        "/v1/subscriptions",
        Some(&b.token),
        json!({"offer_id": offer}),
    );
    assert_eq!(s.status, 201, "{}", s.text);
}

fn invoice(app: &TestApp, fin: &User, id: &str) -> Value {
    app.get(&format!("/v1/invoices/{id}"), Some(&fin.token))
        .json
}

fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// POSTs an event to the Stripe webhook with this `Stripe-Signature` header (if any).
fn deliver(app: &TestApp, body: &[u8], signature: Option<&str>) -> crate::helpers::Reply {
    let mut req = reqwest::blocking::Client::new()
        .post(format!("{}/v1/webhooks/stripe", app.base))
        .header("content-type", "application/json; charset=utf-8")
        .body(body.to_vec());
    if let Some(s) = signature {
        req = req.header("Stripe-Signature", s);
    }
    let res = req.send().unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let text = res.text().unwrap();
    crate::helpers::Reply {
        status,
        headers,
        json: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    }
}

/// An event as Stripe sends it, for a PaymentIntent that collects `invoice`.
fn event(id: &str, kind: &str, pi: &str, invoice: &Value, extra: Value) -> Vec<u8> {
    let amount = invoice["amount_due"]["amount"].as_i64().unwrap();
    let mut object = json!({
        "id": pi, "object": "payment_intent", "amount": amount,
        "amount_received": if kind == "payment_intent.succeeded" { amount } else { 0 },
        "currency": invoice["currency"].as_str().unwrap().to_lowercase(),
        "status": if kind == "payment_intent.succeeded" { "succeeded" } else { "requires_payment_method" },
        "metadata": {"invoice_id": invoice["id"], "invoice_number": invoice["number"]},
        "livemode": false, "created": 1_795_000_000,
    });
    for (k, v) in extra.as_object().unwrap() {
        object[k] = v.clone();
    }
    // Stripe's own layout, spaces and all: the signature covers these exact bytes.
    serde_json::to_vec_pretty(&json!({
        "id": id, "object": "event", "api_version": "2024-06-20", "created": 1_795_000_000,
        "type": kind, "livemode": false, "pending_webhooks": 1,
        "data": {"object": object},
    }))
    .unwrap()
}

fn payment_jobs(app: &TestApp, invoice_id: &str) -> Vec<(String, i32, Option<String>)> {
    use schema::schema::payment_jobs::dsl as j;
    j::payment_jobs
        .filter(j::invoice_id.eq(invoice_id))
        .select((j::status, j::tries, j::payment_intent_id))
        .load(&mut app.db.connect())
        .unwrap()
}

/// A server collecting through a Stripe mock on 2026-11-10, finance, a provider's shop and
/// a customer subscribed to its offer.
struct Collecting {
    mock: MockStripe,
    app: TestApp,
    stripe: Stripe,
    fin: User,
    p: User,
    b: User,
    offer: String,
}

fn collecting() -> Collecting {
    let mock = MockStripe::start();
    let app = TestApp::builder()
        .payments(settings(&mock.base, &[]))
        .spawn();
    let stripe = Stripe::new(KEY, &mock.base).unwrap();
    app.clock.set(at(2026, 11, 10));
    let (fin, p, b) = (finance(&app), app.signup(), app.signup());
    let offer = shop(&app, &p).offer;
    subscribe(&app, &b, &offer);
    Collecting {
        mock,
        app,
        stripe,
        fin,
        p,
        b,
        offer,
    }
}

// ------------------------------------------------------------------ tests

#[test]
fn stripe_collects_each_invoice_once_across_retries() {
    let Collecting {
        mock,
        app,
        stripe,
        fin,
        b,
        offer,
        ..
    } = collecting();
    let inv = open_invoice(&app, &fin, &b, "2026-11");
    let id = inv["id"].as_str().unwrap();
    assert_eq!(payment_jobs(&app, id).len(), 1, "finalizing wrote the job");
    assert!(
        mock.seen("POST", "/").is_empty(),
        "Stripe is called after the commit, by the worker"
    );

    // The first run creates the PaymentIntent but its answer is lost: the job retries later.
    mock.lose_next_payment_intent_answer();
    let first = collect(&app, &stripe);
    assert_eq!(first.retrying, 1, "{first:?}");
    assert_eq!(
        collect(&app, &stripe),
        Report::default(),
        "not due again yet"
    );
    app.clock.advance(Duration::minutes(1));
    let second = collect(&app, &stripe);
    assert_eq!(second.submitted, 1, "{second:?}");
    assert_eq!(collect(&app, &stripe), Report::default(), "done is done");

    let intents = mock.seen("POST", "/v1/payment_intents");
    let key = format!("mkt-invoice-{id}-1");
    assert_eq!(intents.len(), 2, "two tries");
    assert!(intents
        .iter()
        .all(|s| s.idempotency_key.as_deref() == Some(key.as_str())));
    assert_eq!(mock.payment_intents_created(), 1, "one PaymentIntent");
    let form = &intents[0].form;
    assert_eq!(form["amount"], "50000");
    assert_eq!(form["currency"], "usd");
    assert_eq!(form["customer"], "cus_mock1");
    assert_eq!(form["metadata[invoice_id]"], id);
    assert_eq!(form["payment_method"], "pm_card_visa");
    assert_eq!(form["confirm"], "true");
    assert_eq!(form["off_session"], "true");
    assert_eq!(
        intents[0].authorization.as_deref(),
        Some(format!("Bearer {KEY}").as_str())
    );
    let customers = mock.seen("POST", "/v1/customers");
    assert_eq!(
        customers.len(),
        1,
        "the customer is created once, then reused"
    );
    let customer_key = format!("mkt-customer-{}", b.org_id);
    assert_eq!(
        customers[0].idempotency_key.as_deref(),
        Some(customer_key.as_str())
    );
    assert_eq!(
        payment_jobs(&app, id),
        vec![("done".to_string(), 2, Some("pi_mock1".to_string()))]
    );
    let now = invoice(&app, &fin, id);
    assert_eq!(
        now["status"], "open",
        "the webhook settles a processing payment"
    );
    assert!(now["payment_failure"].is_null());

    // Next month's invoice: the stored customer is reused, a new PaymentIntent made.
    app.clock.set(at(2026, 12, 10));
    let fin = app.again(&fin);
    let next = open_invoice(&app, &fin, &b, "2026-12");
    let next_id = next["id"].as_str().unwrap();
    assert_eq!(collect(&app, &stripe).submitted, 1);
    assert_eq!(mock.seen("POST", "/v1/customers").len(), 1);
    assert!(!mock.seen("GET", "/v1/customers/cus_mock1").is_empty());
    assert_eq!(mock.payment_intents_created(), 2, "one per invoice");
    let keys: Vec<String> = mock
        .seen("POST", "/v1/payment_intents")
        .into_iter()
        .filter_map(|s| s.idempotency_key)
        .collect();
    assert_eq!(keys.last().unwrap(), &format!("mkt-invoice-{next_id}-1"));

    // An invoice paid by hand before its job runs is not collected.
    let third_buyer = app.signup();
    subscribe(&app, &third_buyer, &offer);
    let manual = open_invoice(&app, &fin, &third_buyer, "2026-12");
    let paid = app.post(
        &format!("/v1/invoices/{}/pay", manual["id"].as_str().unwrap()),
        Some(&fin.token),
        json!({"method": "manual", "reference": "wire 7"}),
    );
    assert_eq!(paid.json["status"], "paid", "{}", paid.text);
    assert_eq!(collect(&app, &stripe).cancelled, 1);
    assert_eq!(mock.payment_intents_created(), 2);
}

#[test]
fn collection_charges_what_is_due_at_its_first_try_in_stripes_units() {
    let Collecting {
        mock,
        app,
        stripe,
        fin,
        p,
        b,
        ..
    } = collecting();
    mock.payment_intent_status("succeeded");
    let c = app.signup();

    // A credit note issued before the job first runs lowers what it charges.
    let usd = open_invoice(&app, &fin, &b, "2026-11");
    let id = usd["id"].as_str().unwrap();
    let cn = app.post(
        &format!("/v1/invoices/{id}/credit-notes"),
        Some(&fin.token),
        json!({"reason": "Outage", "lines": [{"invoice_line_id": usd["lines"][0]["id"], "amount": 10000}]}),
    );
    assert_eq!(cn.status, 201, "{}", cn.text);
    assert_eq!(collect(&app, &stripe).submitted, 1);
    let intents = mock.seen("POST", "/v1/payment_intents");
    assert_eq!(intents[0].form["amount"], "40000");
    let paid = invoice(&app, &fin, id);
    assert_eq!(paid["status"], "paid", "{paid}");
    assert_eq!(paid["amount_paid"]["amount"], 40000);

    // 1,500.00 ariary are 150000 ISO minor units, and 1500 to Stripe, which counts MGA whole.
    subscribe(&app, &c, &shop_in(&app, &p, "MGA", 150_000).offer);
    let mga = open_invoice(&app, &fin, &c, "2026-11");
    assert_eq!(mga["total"], json!({"amount": 150_000, "currency": "MGA"}));
    assert_eq!(collect(&app, &stripe).submitted, 1);
    let intents = mock.seen("POST", "/v1/payment_intents");
    assert_eq!(intents.len(), 2);
    assert_eq!(intents[1].form["amount"], "1500");
    assert_eq!(intents[1].form["currency"], "mga");
    let paid = invoice(&app, &fin, mga["id"].as_str().unwrap());
    assert_eq!(paid["status"], "paid", "{paid}");
    assert_eq!(paid["amount_paid"]["amount"], 150_000);
}

#[test]
fn an_open_invoice_credited_to_nothing_is_paid_and_never_collected() {
    let Collecting {
        mock,
        app,
        stripe,
        fin,
        b,
        ..
    } = collecting();
    let inv = open_invoice(&app, &fin, &b, "2026-11");
    let id = inv["id"].as_str().unwrap();
    let credit = |lines: Value| {
        app.post(
            &format!("/v1/invoices/{id}/credit-notes"),
            Some(&fin.token),
            json!({"reason": "Outage", "lines": lines}),
        )
    };

    // A part credited: still open, the rest due.
    let first_line = inv["lines"][0]["id"].as_str().unwrap();
    let part = credit(json!([{"invoice_line_id": first_line, "amount": 100}]));
    assert_eq!(part.status, 201, "{}", part.text);
    let now = invoice(&app, &fin, id);
    assert_eq!(now["status"], "open");
    let due = now["amount_due"]["amount"].as_i64().unwrap();
    assert!(due > 0, "{now}");

    // What every line has left: nothing is due, so the invoice is settled, with no payment.
    let rest: Vec<Value> = inv["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let left = l["amount"]["amount"].as_i64().unwrap()
                - if l["id"] == first_line { 100 } else { 0 };
            json!({"invoice_line_id": l["id"], "amount": left})
        })
        .filter(|l| l["amount"].as_i64() > Some(0))
        .collect();
    let all = credit(Value::Array(rest));
    assert_eq!(all.status, 201, "{}", all.text);
    let now = invoice(&app, &fin, id);
    assert_eq!(now["status"], "paid", "{now}");
    assert_eq!(now["amount_due"]["amount"], 0);
    assert_eq!(now["amount_paid"]["amount"], 0);
    assert_eq!(now["amount_credited"], now["total"]);
    assert!(now["paid_at"].is_string(), "{now}");
    assert_eq!(now["payments"], json!([]));

    // Nothing is left to pay, void or collect.
    let pay = app.post(
        &format!("/v1/invoices/{id}/pay"),
        Some(&fin.token),
        json!({"method": "manual", "reference": "wire 8"}),
    );
    assert_eq!(pay.status, 409, "{}", pay.text);
    let void = app.post(
        &format!("/v1/invoices/{id}/void"),
        Some(&fin.token),
        json!({}),
    );
    assert_eq!(void.status, 409, "{}", void.text);
    assert_eq!(collect(&app, &stripe).cancelled, 1);
    assert_eq!(mock.payment_intents_created(), 0);
    // Nothing was received: the provider's payout neither counts the invoice nor its credits.
    let payouts = app.get("/v1/payout-statements?period=2026-11", Some(&fin.token));
    assert_eq!(payouts.status, 200, "{}", payouts.text);
    assert_eq!(payouts.json["data"], json!([]), "{}", payouts.text);
    // Revenue counts the invoice and takes its credits back, in the same month.
    let revenue = app.get("/v1/reports/revenue?period=2026-11", Some(&fin.token));
    assert_eq!(
        revenue.json["data"][0]["gross"]["amount"], 0,
        "{}",
        revenue.text
    );
}

#[test]
fn stripe_webhooks_are_verified_and_applied_once() {
    // Two secrets: the old one and the one rotated in.
    let app = TestApp::builder()
        .payments(webhooks_only(&["whsec_old", "whsec_new"]))
        .spawn();
    app.clock.set(at(2026, 11, 10));
    let (fin, p, b) = (finance(&app), app.signup(), app.signup());
    let offer = shop(&app, &p).offer;
    subscribe(&app, &b, &offer);
    let inv = open_invoice(&app, &fin, &b, "2026-11");
    let id = inv["id"].as_str().unwrap();
    let now = app.clock.now_for_tests().timestamp();
    let body = event(
        "evt_paid_1",
        "payment_intent.succeeded",
        "pi_1",
        &inv,
        json!({}),
    );
    let unchanged = |why: &str| {
        let i = invoice(&app, &fin, id);
        assert_eq!(i["status"], "open", "{why}");
        assert!(i["payments"].as_array().unwrap().is_empty(), "{why}");
    };

    // Refused, changing nothing: a wrong secret, a stale timestamp, no header, a body
    // that is not the one signed.
    let wrong = deliver(
        &app,
        &body,
        Some(&format!("t={now},v1={}", sign("whsec_wrong", now, &body))),
    );
    assert_eq!(wrong.problem(400), "invalid_signature");
    unchanged("wrong secret");
    let stale = now - 301;
    let old = deliver(
        &app,
        &body,
        Some(&format!("t={stale},v1={}", sign("whsec_old", stale, &body))),
    );
    assert_eq!(old.problem(400), "invalid_signature");
    unchanged("stale timestamp");
    assert_eq!(deliver(&app, &body, None).problem(400), "invalid_signature");
    let tampered = event(
        "evt_paid_1",
        "payment_intent.succeeded",
        "pi_1",
        &inv,
        json!({"amount_received": 1}),
    );
    let sig = format!("t={now},v1={}", sign("whsec_old", now, &body));
    assert_eq!(
        deliver(&app, &tampered, Some(&sig)).problem(400),
        "invalid_signature"
    );
    unchanged("tampered body");

    // Signed, but JSON that is no event: the missing field is named.
    let no_id = br#"{"type": "payment_intent.succeeded"}"#;
    let signed = format!("t={now},v1={}", sign("whsec_new", now, no_id));
    let r = deliver(&app, no_id, Some(&signed));
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.fields(), ["id"]);
    unchanged("no event id");

    // Signed with the second secret (rotation), next to a signature that does not match.
    let good = format!(
        "t={now},v1={},v1={}",
        sign("whsec_retired", now, &body),
        sign("whsec_new", now, &body)
    );
    let ok = deliver(&app, &body, Some(&good));
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(ok.json["outcome"], "applied");
    let paid = invoice(&app, &fin, id);
    assert_eq!(paid["status"], "paid");
    assert_eq!(paid["amount_due"]["amount"], 0);
    assert_eq!(paid["amount_paid"]["amount"], 50000);
    assert_eq!(paid["payments"].as_array().unwrap().len(), 1);
    assert_eq!(paid["payments"][0]["method"], "stripe");
    assert_eq!(paid["payments"][0]["reference"], "pi_1");
    assert_eq!(paid["payments"][0]["status"], "succeeded");

    // A replay of the same delivery, and the same event signed afresh: 200, nothing more.
    let replay = deliver(&app, &body, Some(&good));
    assert_eq!(
        (replay.status, replay.json["outcome"].as_str()),
        (200, Some("duplicate"))
    );
    app.clock.advance(Duration::seconds(30));
    let later = app.clock.now_for_tests().timestamp();
    let again = deliver(
        &app,
        &body,
        Some(&format!("t={later},v1={}", sign("whsec_old", later, &body))),
    );
    assert_eq!(again.json["outcome"], "duplicate", "{}", again.text);
    let still = invoice(&app, &fin, id);
    assert_eq!(still["payments"].as_array().unwrap().len(), 1);
    assert_eq!(still["amount_paid"]["amount"], 50000);

    // A second success for an invoice already paid changes nothing either.
    let other = event(
        "evt_paid_2",
        "payment_intent.succeeded",
        "pi_2",
        &inv,
        json!({}),
    );
    let r = deliver(
        &app,
        &other,
        Some(&format!(
            "t={later},v1={}",
            sign("whsec_old", later, &other)
        )),
    );
    assert_eq!(r.json["outcome"], "ignored", "{}", r.text);
    assert_eq!(
        invoice(&app, &fin, id)["payments"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Types the marketplace does not act on: 200, ignored.
    let unknown = br#"{"id":"evt_x","object":"event","type":"customer.created","data":{"object":{"id":"cus_1"}}}"#;
    let r = deliver(
        &app,
        unknown,
        Some(&format!(
            "t={later},v1={}",
            sign("whsec_new", later, unknown)
        )),
    );
    assert_eq!(
        (r.status, r.json["outcome"].as_str()),
        (200, Some("ignored"))
    );
}

#[test]
fn a_failed_payment_is_recorded_and_told_to_admins_and_finance() {
    let secret = "whsec_failures";
    let app = TestApp::builder()
        .payments(webhooks_only(&[secret]))
        .spawn();
    app.clock.set(at(2026, 11, 10));
    let (fin, p, b) = (finance(&app), app.signup(), app.signup());
    let (b_finance, b_member) = finance_and_member(&app, &b);
    let offer = shop(&app, &p).offer;
    subscribe(&app, &b, &offer);
    let inv = open_invoice(&app, &fin, &b, "2026-11");
    let id = inv["id"].as_str().unwrap();
    let mails_before = outbox_emails(&app, &b.org_id);
    let now = app.clock.now_for_tests().timestamp();
    let body = event(
        "evt_failed_1",
        "payment_intent.payment_failed",
        "pi_9",
        &inv,
        json!({"last_payment_error": {"type": "card_error", "code": "card_declined",
               "decline_code": "insufficient_funds", "message": "Your card has insufficient funds."}}),
    );
    let sig = format!("t={now},v1={}", sign(secret, now, &body));
    let r = deliver(&app, &body, Some(&sig));
    assert_eq!(
        (r.status, r.json["outcome"].as_str()),
        (200, Some("applied")),
        "{}",
        r.text
    );
    let failed = invoice(&app, &fin, id);
    assert_eq!(failed["status"], "open", "the invoice stays open");
    assert_eq!(
        failed["payment_failure"],
        "Your card has insufficient funds."
    );
    assert_eq!(failed["amount_due"]["amount"], 50000);
    let rows = failed["payments"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (
            rows[0]["status"].as_str(),
            rows[0]["method"].as_str(),
            rows[0]["reference"].as_str()
        ),
        (Some("failed"), Some("stripe"), Some("pi_9"))
    );
    // The customer sees it on its own invoice too.
    let own = app.get(&format!("/v1/invoices/{id}"), Some(&b.token));
    assert_eq!(
        own.json["payment_failure"],
        "Your card has insufficient funds."
    );

    // One e-mail to each admin and finance user, none to plain members.
    let mails = billing_mails(&app, &b, &[&b, &b_finance], &b_member, "Payment of invoice");
    assert!(mails[0]["subject"]
        .as_str()
        .unwrap()
        .contains(inv["number"].as_str().unwrap()));
    assert!(mails[0]["text"]
        .as_str()
        .unwrap()
        .contains("insufficient funds"));

    // Replayed: nothing more recorded or sent.
    let replay = deliver(&app, &body, Some(&sig));
    assert_eq!(replay.json["outcome"], "duplicate");
    assert_eq!(
        invoice(&app, &fin, id)["payments"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(outbox_emails(&app, &b.org_id).len(), mails_before.len() + 2);

    // The customer pays with another card: paid, the failure cleared.
    let ok = event(
        "evt_paid_9",
        "payment_intent.succeeded",
        "pi_9",
        &inv,
        json!({}),
    );
    let r = deliver(
        &app,
        &ok,
        Some(&format!("t={now},v1={}", sign(secret, now, &ok))),
    );
    assert_eq!(r.json["outcome"], "applied", "{}", r.text);
    let paid = invoice(&app, &fin, id);
    assert_eq!(paid["status"], "paid");
    assert!(paid["payment_failure"].is_null());
}

#[test]
fn a_payment_confirmed_at_once_or_declined_is_recorded_once() {
    let secret = "whsec_sync";
    let mock = MockStripe::start();
    let app = TestApp::builder()
        .payments(settings(&mock.base, &[secret]))
        .spawn();
    let stripe = Stripe::new(KEY, &mock.base).unwrap();
    app.clock.set(at(2026, 11, 10));
    let (fin, p) = (finance(&app), app.signup());
    let (card_ok, card_declined) = (app.signup(), app.signup());
    let offer = shop(&app, &p).offer;
    subscribe(&app, &card_ok, &offer);
    subscribe(&app, &card_declined, &offer);
    let ok = open_invoice(&app, &fin, &card_ok, "2026-11");
    let ok_id = ok["id"].as_str().unwrap();

    // Confirmed off-session at once: the job settles the invoice itself.
    mock.payment_intent_status("succeeded");
    assert_eq!(collect(&app, &stripe).submitted, 1);
    let paid = invoice(&app, &fin, ok_id);
    assert_eq!(paid["status"], "paid", "{paid}");
    assert_eq!(paid["payments"][0]["reference"], "pi_mock1");
    // Stripe's webhook for the same payment then changes nothing.
    let now = app.clock.now_for_tests().timestamp();
    let body = event(
        "evt_sync_1",
        "payment_intent.succeeded",
        "pi_mock1",
        &ok,
        json!({}),
    );
    let r = deliver(
        &app,
        &body,
        Some(&format!("t={now},v1={}", sign(secret, now, &body))),
    );
    assert_eq!(r.json["outcome"], "ignored", "{}", r.text);
    let after = invoice(&app, &fin, ok_id);
    assert_eq!(after["payments"].as_array().unwrap().len(), 1);
    assert_eq!(after["amount_paid"]["amount"], 50000);

    // Declined: the job is done (a retry under the same key would be declined again), the
    // invoice stays open with the reason on it.
    let declined = open_invoice(&app, &fin, &card_declined, "2026-11");
    let declined_id = declined["id"].as_str().unwrap();
    mock.decline_next_payment_intent();
    assert_eq!(collect(&app, &stripe).declined, 1);
    let open = invoice(&app, &fin, declined_id);
    assert_eq!(open["status"], "open");
    assert_eq!(open["payment_failure"], "Your card was declined.");
    assert_eq!(
        payment_jobs(&app, declined_id)
            .into_iter()
            .map(|j| j.0)
            .collect::<Vec<_>>(),
        vec!["done".to_string()]
    );
    app.clock.advance(Duration::hours(1));
    assert_eq!(collect(&app, &stripe), Report::default());
    assert_eq!(mock.seen("POST", "/v1/payment_intents").len(), 2);
    // Stripe's webhook for the decline tells the customer; the job does not as well.
    let failure_mails = |who: &User| {
        outbox_emails(&app, &who.org_id)
            .into_iter()
            .filter(|m| {
                m["subject"]
                    .as_str()
                    .unwrap()
                    .starts_with("Payment of invoice")
            })
            .count()
    };
    assert_eq!(failure_mails(&card_declined), 0);

    // Waiting for the customer's action (no webhook until the customer acts): noted on the
    // invoice and told to the customer, once.
    let needs_action = app.signup();
    subscribe(&app, &needs_action, &offer);
    let (fin, needs_action) = (app.again(&fin), app.again(&needs_action));
    let waiting = open_invoice(&app, &fin, &needs_action, "2026-11");
    mock.payment_intent_status("requires_action");
    assert_eq!(collect(&app, &stripe).submitted, 1);
    let noted = invoice(&app, &fin, waiting["id"].as_str().unwrap());
    assert_eq!(noted["status"], "open");
    assert_eq!(
        noted["payment_failure"],
        "the payment needs the customer's action in Stripe (authentication)"
    );
    assert_eq!(failure_mails(&needs_action), 1);
    app.clock.advance(Duration::hours(1));
    assert_eq!(collect(&app, &stripe), Report::default());
    assert_eq!(failure_mails(&needs_action), 1);
}

#[test]
fn two_workers_at_once_create_one_payment_intent_per_invoice() {
    let mock = MockStripe::start();
    let app = TestApp::builder()
        .payments(settings(&mock.base, &[]))
        .spawn();
    app.clock.set(at(2026, 11, 10));
    let (fin, p) = (finance(&app), app.signup());
    let offer = shop(&app, &p).offer;
    let buyers: Vec<User> = (0..3).map(|_| app.signup()).collect();
    for b in &buyers {
        subscribe(&app, b, &offer);
    }
    for b in &buyers {
        open_invoice(&app, &fin, b, "2026-11");
    }
    let reports: Vec<Report> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let stripe = Stripe::new(KEY, &mock.base).unwrap();
                    collect(&app, &stripe)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let submitted: usize = reports.iter().map(|r| r.submitted).sum();
    assert_eq!(submitted, 3, "{reports:?}");
    assert_eq!(mock.payment_intents_created(), 3);
    assert_eq!(
        mock.seen("POST", "/v1/payment_intents").len(),
        3,
        "no job ran twice"
    );
}

/// The e-mails in an organization's outbox, oldest first.
fn outbox_emails(app: &TestApp, org: &str) -> Vec<Value> {
    use schema::schema::outbox::dsl as o;
    let rows: Vec<String> = o::outbox
        .filter(o::organization_id.eq(org))
        .filter(o::kind.eq("email"))
        .order((o::created_at.asc(), o::id.asc()))
        .select(o::payload)
        .load(&mut app.db.connect())
        .unwrap();
    rows.iter()
        .map(|p| serde_json::from_str(p).unwrap())
        .collect()
}

/// A finance user and a plain member added to the customer's organization.
fn finance_and_member(app: &TestApp, admin: &User) -> (User, User) {
    (
        app.add_member(admin, "finance"),
        app.add_member(admin, "member"),
    )
}

/// The customer's e-mails whose subject starts with `subject`: one to each of `to` (its
/// admins and finance users), none to `not_to`.
fn billing_mails(
    app: &TestApp,
    customer: &User,
    to: &[&User],
    not_to: &User,
    subject: &str,
) -> Vec<Value> {
    let mails: Vec<Value> = outbox_emails(app, &customer.org_id)
        .into_iter()
        .filter(|m| m["subject"].as_str().unwrap().starts_with(subject))
        .collect();
    let mut sent: Vec<&str> = mails.iter().map(|m| m["to"].as_str().unwrap()).collect();
    sent.sort();
    let mut expected: Vec<&str> = to.iter().map(|u| u.email.as_str()).collect();
    expected.sort();
    assert_eq!(sent, expected);
    assert!(!sent.contains(&not_to.email.as_str()));
    mails
}

/// The grants of a customer as it sees them: (suspended_at is set, live).
fn grants(app: &TestApp, who: &User) -> Vec<(bool, bool)> {
    let r = app.get("/v1/grants", Some(&who.token));
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (!g["suspended_at"].is_null(), g["live"].as_bool().unwrap()))
        .collect()
}

fn read_status(app: &TestApp, who: &User, asset: &str) -> u16 {
    app.get(&format!("/v1/assets/{asset}/content"), Some(&who.token))
        .status
}

/// Whether the read rule finds a live grant of the customer on the listing now.
fn may_read(app: &TestApp, who: &User, listing: &str) -> bool {
    api::domain::commerce::grants::live_grant(
        &mut app.db.connect(),
        &who.org_id,
        listing,
        app.clock.now_for_tests().naive_utc(),
    )
    .unwrap()
    .is_some()
}

#[test]
fn unpaid_past_the_grace_period_suspends_grants_until_paid() {
    let secret = "whsec_grace";
    let app = TestApp::builder()
        .webhook_allow_private(true)
        .payments(webhooks_only(&[secret]))
        .spawn();
    app.clock.set(at(2026, 11, 10));
    let (fin, p) = (finance(&app), app.signup());
    let (by_hand, by_card) = (app.signup(), app.signup());
    let Shop {
        offer,
        listing,
        asset,
    } = shop(&app, &p);
    subscribe(&app, &by_hand, &offer);
    subscribe(&app, &by_card, &offer);
    let hook = app.post(
        "/v1/webhook-endpoints",
        Some(&by_card.token),
        json!({"url": "http://127.0.0.1:9/hooks", "events": ["grants.suspended", "grants.restored"]}),
    );
    assert_eq!(hook.status, 201, "{}", hook.text);
    let hand = open_invoice(&app, &fin, &by_hand, "2026-11");
    let card = open_invoice(&app, &fin, &by_card, "2026-11");
    assert!(may_read(&app, &by_hand, &listing));

    // Within the grace period nothing happens.
    app.clock.advance(Duration::days(13));
    assert_eq!(grace_pass(&app), grace::Report::default());
    let (by_hand, by_card, fin) = (app.again(&by_hand), app.again(&by_card), app.again(&fin));
    assert_eq!(grants(&app, &by_hand), vec![(false, true)]);

    // Past it: both customers' grants are suspended and reading is refused.
    app.clock.advance(Duration::days(2));
    let report = grace_pass(&app);
    assert_eq!(
        (report.overdue, report.suspended, report.restored),
        (2, 2, 0),
        "{report:?}"
    );
    assert_eq!(
        grace_pass(&app),
        grace::Report::default(),
        "a second pass changes nothing"
    );
    let (by_hand, by_card, fin) = (app.again(&by_hand), app.again(&by_card), app.again(&fin));
    for who in [&by_hand, &by_card] {
        assert_eq!(grants(&app, who), vec![(true, false)]);
        assert!(!may_read(&app, who, &listing));
        assert_eq!(read_status(&app, who, &asset), 403);
    }
    let p = app.again(&p);
    assert_eq!(
        read_status(&app, &p, &asset),
        200,
        "the provider always reads"
    );
    // Each customer is told once, with its own overdue invoice.
    let access_mails = |who: &User, subject: &str| -> Vec<String> {
        outbox_emails(&app, &who.org_id)
            .into_iter()
            .filter(|m| m["subject"] == subject)
            .map(|m| m["text"].as_str().unwrap().to_string())
            .collect()
    };
    let suspended = "Access to your subscribed data is suspended";
    let restored = "Access to your subscribed data is restored";
    for (who, inv, other) in [(&by_hand, &hand, &card), (&by_card, &card, &hand)] {
        let told = access_mails(who, suspended);
        assert_eq!(told.len(), 1, "{told:?}");
        assert!(
            told[0].contains(inv["number"].as_str().unwrap()),
            "{}",
            told[0]
        );
        assert!(told[0].contains("500.00 USD due"), "{}", told[0]);
        assert!(
            !told[0].contains(other["number"].as_str().unwrap()),
            "{}",
            told[0]
        );
        assert!(access_mails(who, restored).is_empty());
    }
    // A grant made while suspended is suspended at the next pass, without a second notice.
    subscribe(&app, &by_hand, &shop(&app, &p).offer);
    assert_eq!(grants(&app, &by_hand).len(), 2);
    let report = grace_pass(&app);
    assert_eq!((report.overdue, report.suspended), (0, 1), "{report:?}");
    assert_eq!(grants(&app, &by_hand), vec![(true, false); 2]);
    assert_eq!(access_mails(&by_hand, suspended).len(), 1);

    // Paid by hand: restored at once, without waiting for the pass; the other stays suspended.
    let paid = app.post(
        &format!("/v1/invoices/{}/pay", hand["id"].as_str().unwrap()),
        Some(&fin.token),
        json!({"method": "manual", "reference": "wire 42"}),
    );
    assert_eq!(paid.json["status"], "paid", "{}", paid.text);
    assert_eq!(grants(&app, &by_hand), vec![(false, true); 2]);
    assert!(may_read(&app, &by_hand, &listing));
    assert_eq!(grants(&app, &by_card), vec![(true, false)]);

    // Paid through Stripe: the webhook restores too.
    let now = app.clock.now_for_tests().timestamp();
    let body = event(
        "evt_grace_paid",
        "payment_intent.succeeded",
        "pi_g",
        &card,
        json!({}),
    );
    let r = deliver(
        &app,
        &body,
        Some(&format!("t={now},v1={}", sign(secret, now, &body))),
    );
    assert_eq!(r.json["outcome"], "applied", "{}", r.text);
    assert_eq!(grants(&app, &by_card), vec![(false, true)]);
    assert!(may_read(&app, &by_card, &listing));
    assert_eq!(
        grace_pass(&app),
        grace::Report::default(),
        "nothing overdue is left"
    );
    for who in [&by_hand, &by_card] {
        assert_eq!(access_mails(who, restored).len(), 1);
        assert_eq!(access_mails(who, suspended).len(), 1);
    }
    let receipt = |who: &User| -> String {
        let mails: Vec<Value> = outbox_emails(&app, &who.org_id)
            .into_iter()
            .filter(|m| {
                m["subject"]
                    .as_str()
                    .unwrap()
                    .starts_with("Payment received")
            })
            .collect();
        assert_eq!(mails.len(), 1, "{mails:?}");
        mails[0]["text"].as_str().unwrap().to_string()
    };
    assert!(receipt(&by_card).contains("500.00 USD for invoice"));
    assert!(receipt(&by_card).contains("by card"));
    assert!(receipt(&by_hand).contains("reference wire 42"));
    // And its endpoint, once each: the suspension names the overdue invoice.
    let events = app.webhook_events(&by_card.org_id);
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.len(), 2, "{events:?}");
    let of = |kind: &str| {
        events
            .iter()
            .find(|e| e["type"] == kind)
            .expect(kind)
            .clone()
    };
    let suspension = of("grants.suspended");
    assert_eq!(suspension["data"]["grants"], 1);
    assert_eq!(suspension["data"]["overdue_invoices"][0]["id"], card["id"]);
    assert_eq!(
        suspension["data"]["overdue_invoices"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(of("grants.restored")["data"]["grants"], 1);
}

#[test]
fn voiding_the_overdue_invoice_restores_at_once() {
    let app = TestApp::spawn();
    app.clock.set(at(2026, 11, 10));
    let (fin, p, b) = (finance(&app), app.signup(), app.signup());
    let offer = shop(&app, &p).offer;
    subscribe(&app, &b, &offer);
    let inv = open_invoice(&app, &fin, &b, "2026-11");
    app.clock.advance(Duration::days(15));
    assert_eq!(grace_pass(&app).suspended, 1);
    let (b, fin) = (app.again(&b), app.again(&fin));
    assert_eq!(grants(&app, &b), vec![(true, false)]);
    let v = app.send(
        Method::POST,
        &format!("/v1/invoices/{}/void", inv["id"].as_str().unwrap()),
        Some(&fin.token),
        Some(&json!({})),
        &[],
    );
    assert_eq!(v.json["status"], "void", "{}", v.text);
    assert_eq!(grants(&app, &b), vec![(false, true)]);
    assert_eq!(grace_pass(&app), grace::Report::default());
}

#[test]
fn the_customer_hears_of_its_invoices_by_signed_webhook_and_its_billing_people_by_email() {
    use crate::notifications::{verify_signature, Receiver};
    let secret = "whsec_notices";
    let app = TestApp::builder()
        .webhook_allow_private(true)
        .payments(webhooks_only(&[secret]))
        .spawn();
    app.clock.set(at(2026, 11, 10));
    let (fin, p, b) = (finance(&app), app.signup(), app.signup());
    let (b_finance, b_member) = finance_and_member(&app, &b);
    let (customer_hooks, provider_hooks) = (Receiver::start(&[]), Receiver::start(&[]));
    let hook = |who: &User, receiver: &Receiver, events: Value| {
        let r = app.post(
            "/v1/webhook-endpoints",
            Some(&who.token),
            json!({"url": receiver.url("/hooks"), "events": events}),
        );
        assert_eq!(r.status, 201, "{}", r.text);
        r.json["secret"].as_str().unwrap().to_string()
    };
    let customer_secret = hook(
        &b,
        &customer_hooks,
        json!([
            "invoice.finalized",
            "invoice.paid",
            "invoice.payment_failed",
            "invoice.voided",
            "credit_note.issued"
        ]),
    );
    // The provider asks for everything, and hears nothing of its customer's invoices.
    hook(&p, &provider_hooks, json!(["*"]));
    let offer = shop(&app, &p).offer;
    subscribe(&app, &b, &offer);
    // What each step sends, delivered and verified: (type, data).
    let told = |seen: usize| -> Vec<(String, Value)> {
        let report = app.deliver_outbox();
        assert_eq!(report.failed + report.retrying, 0, "{report:?}");
        customer_hooks.requests()[seen..]
            .iter()
            .map(|r| {
                verify_signature(r, &customer_secret);
                let event = r.json();
                assert_eq!(
                    r.header("marketplace-event-id"),
                    event["id"].as_str().unwrap()
                );
                (
                    event["type"].as_str().unwrap().to_string(),
                    event["data"].clone(),
                )
            })
            .collect()
    };

    let inv = open_invoice(&app, &fin, &b, "2026-11");
    let (id, number) = (inv["id"].as_str().unwrap(), inv["number"].as_str().unwrap());
    let events = told(0);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].0, "invoice.finalized");
    let data = &events[0].1["invoice"];
    assert_eq!(
        (
            data["id"].as_str(),
            data["number"].as_str(),
            data["status"].as_str()
        ),
        (Some(id), Some(number), Some("open"))
    );
    assert_eq!(
        data["amount_due"],
        json!({"amount": 50000, "currency": "USD"})
    );
    assert_eq!(data["customer"]["id"], b.org_id.as_str());
    // The finalized invoice by e-mail to the customer's admins and finance users only.
    let mails = billing_mails(&app, &b, &[&b, &b_finance], &b_member, "Invoice ");
    let subject = mails[0]["subject"].as_str().unwrap();
    assert!(
        subject.contains(number) && subject.contains("500.00 USD"),
        "{subject}"
    );
    let text = mails[0]["text"].as_str().unwrap();
    assert!(
        text.contains("Total: 500.00 USD") && text.contains(id),
        "{text}"
    );

    // A failed payment: the provider's reason travels with the event.
    let now = app.clock.now_for_tests().timestamp();
    let body = event(
        "evt_declined_1",
        "payment_intent.payment_failed",
        "pi_1",
        &inv,
        json!({"last_payment_error": {"message": "Your card was declined."}}),
    );
    let r = deliver(
        &app,
        &body,
        Some(&format!("t={now},v1={}", sign(secret, now, &body))),
    );
    assert_eq!(r.json["outcome"], "applied", "{}", r.text);
    let events = told(1);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].0, "invoice.payment_failed");
    assert_eq!(events[0].1["reason"], "Your card was declined.");
    assert_eq!(events[0].1["invoice"]["id"], id);

    // A credit note of 100.00, then the rest paid by hand.
    let line = inv["lines"][0]["id"].as_str().unwrap();
    let cn = app.post(
        &format!("/v1/invoices/{id}/credit-notes"),
        Some(&fin.token),
        json!({"reason": "Outage", "lines": [{"invoice_line_id": line, "amount": 10000}]}),
    );
    assert_eq!(cn.status, 201, "{}", cn.text);
    let paid = app.post(
        &format!("/v1/invoices/{id}/pay"),
        Some(&fin.token),
        json!({"method": "manual", "reference": "wire 7"}),
    );
    assert_eq!(paid.status, 200, "{}", paid.text);
    let events = told(2);
    // (Delivered in any order: each event stands alone.)
    let of = |kind: &str| -> Value {
        let found: Vec<&Value> = events
            .iter()
            .filter(|(t, _)| t == kind)
            .map(|(_, d)| d)
            .collect();
        assert_eq!(found.len(), 1, "one {kind} in {events:?}");
        found[0].clone()
    };
    assert_eq!(events.len(), 2, "{events:?}");
    let credited = of("credit_note.issued");
    assert_eq!(credited["credit_note"]["id"], cn.json["id"]);
    assert_eq!(
        credited["credit_note"]["total"],
        json!({"amount": 10000, "currency": "USD"})
    );
    assert_eq!(credited["invoice"]["id"], id);
    assert_eq!(credited["invoice"]["amount_due"]["amount"], 40000);
    assert_eq!(of("invoice.paid")["invoice"]["status"], "paid");
    // The receipt: what settled the invoice, to the same people.
    let receipts = billing_mails(&app, &b, &[&b, &b_finance], &b_member, "Payment received");
    let text = receipts[0]["text"].as_str().unwrap();
    assert!(
        text.contains("We received 400.00 USD for invoice"),
        "{text}"
    );
    assert!(text.contains("reference wire 7"), "{text}");

    // The next month's invoice, voided.
    app.clock.set(at(2026, 12, 10));
    let (fin, b) = (app.again(&fin), app.again(&b));
    let december = open_invoice(&app, &fin, &b, "2026-12");
    let void = app.post(
        &format!("/v1/invoices/{}/void", december["id"].as_str().unwrap()),
        Some(&fin.token),
        json!({}),
    );
    assert_eq!(void.status, 200, "{}", void.text);
    let mut kinds: Vec<String> = told(4).into_iter().map(|(t, _)| t).collect();
    kinds.sort();
    assert_eq!(kinds, ["invoice.finalized", "invoice.voided"]);

    assert!(
        provider_hooks.requests().iter().all(|r| !r.json()["type"]
            .as_str()
            .unwrap()
            .starts_with("invoice")
            && !r.json()["type"]
                .as_str()
                .unwrap()
                .starts_with("credit_note")),
        "the provider is not told of its customer's invoices"
    );
}

#[test]
fn an_invoice_with_nothing_due_is_told_finalized_and_paid() {
    let app = TestApp::builder().webhook_allow_private(true).spawn();
    app.clock.set(at(2026, 11, 10));
    let (fin, p, b) = (finance(&app), app.signup(), app.signup());
    let listing = shop(&app, &p).listing;
    let free = app.post(
        &format!("/v1/listings/{listing}/offers"),
        Some(&p.token),
        json!({"name": "Free", "currency": "USD", "billing_interval": "monthly", "recurring_amount": 0,
               "term_months": 1, "usage_prices": [], "trial_days": 0, "requires_approval": false,
               "auto_renew_default": false}),
    );
    assert_eq!(free.status, 201, "{}", free.text);
    subscribe(&app, &b, free.json["id"].as_str().unwrap());
    let hook = app.post(
        "/v1/webhook-endpoints",
        Some(&b.token),
        json!({"url": "http://127.0.0.1:9/hooks", "events": ["*"]}),
    );
    assert_eq!(hook.status, 201, "{}", hook.text);
    let run = app.post(
        "/v1/billing-runs",
        Some(&fin.token),
        json!({"period": "2026-11"}),
    );
    assert_eq!(run.status, 201, "{}", run.text);
    let list = app.get(
        &format!("/v1/invoices?period=2026-11&customer={}", b.org_id),
        Some(&fin.token),
    );
    let id = list.json["data"][0]["id"].as_str().expect("an invoice");
    let done = app.post(
        &format!("/v1/invoices/{id}/finalize"),
        Some(&fin.token),
        json!({}),
    );
    assert_eq!(done.json["status"], "paid", "{}", done.text);

    let events = app.webhook_events(&b.org_id);
    let mut kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    kinds.sort();
    assert_eq!(kinds, ["invoice.finalized", "invoice.paid"], "{events:?}");
    for e in &events {
        assert_eq!(e["data"]["invoice"]["id"], id);
        assert_eq!(e["data"]["invoice"]["status"], "paid");
        assert_eq!(e["data"]["invoice"]["amount_due"]["amount"], 0);
    }
    let mails: Vec<Value> = outbox_emails(&app, &b.org_id)
        .into_iter()
        .filter(|m| m["subject"].as_str().unwrap().starts_with("Invoice "))
        .collect();
    assert_eq!(mails.len(), 1, "{mails:?}");
    let text = mails[0]["text"].as_str().unwrap();
    assert!(
        text.contains("Nothing is due: the invoice is paid."),
        "{text}"
    );
    assert!(
        outbox_emails(&app, &b.org_id).iter().all(|m| !m["subject"]
            .as_str()
            .unwrap()
            .starts_with("Payment received")),
        "no receipt when no payment was made"
    );
    assert!(mails[0]["subject"]
        .as_str()
        .unwrap()
        .contains("0.00 USD due"));
}
