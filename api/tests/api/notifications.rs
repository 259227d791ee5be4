//! Notifications through the outbox: webhook endpoints and their guard against internal
//! addresses, signed deliveries with retries, e-mails as files and over SMTP.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use reqwest::Method;
use schema::diesel::prelude::*;
use schema::models::{OutboxMessage, WebhookEndpoint};
use schema::schema::{outbox, webhook_endpoints};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::helpers::{Reply, TestApp, User};

// ---------- a local HTTP receiver ----------

#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Received {
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// An HTTP server on 127.0.0.1 that records each request and answers with the next status
/// of `statuses` (200 once they run out).
pub(crate) struct Receiver {
    port: u16,
    requests: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    pub(crate) fn start(statuses: &[u16]) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (seen, mut statuses) = (requests.clone(), statuses.to_vec());
        statuses.reverse();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let status = statuses.pop().unwrap_or(200);
                if let Some(request) = serve_one(stream, status) {
                    seen.lock().unwrap().push(request);
                }
            }
        });
        Receiver { port, requests }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub(crate) fn requests(&self) -> Vec<Received> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve_one(stream: TcpStream, status: u16) -> Option<Received> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_string();
    let mut headers = HashMap::new();
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    let request = Received {
        path,
        headers,
        body,
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status} Whatever\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    Some(request)
}

/// An HTTP server on 127.0.0.1 that reads each request and answers 200 only once the
/// test opens its gate: a receiver that hangs.
struct GatedReceiver {
    port: u16,
    open: Arc<(Mutex<bool>, std::sync::Condvar)>,
    waiting: Arc<Mutex<usize>>,
}

impl GatedReceiver {
    fn start() -> GatedReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let waiting = Arc::new(Mutex::new(0));
        let (gate, count) = (open.clone(), waiting.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let (gate, count) = (gate.clone(), count.clone());
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    let _ = stream.read(&mut buf);
                    *count.lock().unwrap() += 1;
                    let (lock, opened) = &*gate;
                    let mut is_open = lock.lock().unwrap();
                    while !*is_open {
                        is_open = opened.wait(is_open).unwrap();
                    }
                    let _ = write!(
                        stream,
                        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                });
            }
        });
        GatedReceiver {
            port,
            open,
            waiting,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Requests read and held so far.
    fn held(&self) -> usize {
        *self.waiting.lock().unwrap()
    }

    fn open(&self) {
        let (lock, opened) = &*self.open;
        *lock.lock().unwrap() = true;
        opened.notify_all();
    }
}

// ---------- a local SMTP server ----------

#[derive(Debug, Clone, Default)]
struct Mail {
    from: String,
    to: Vec<String>,
    data: String,
}

/// Speaks just enough SMTP to take messages: 220, EHLO/HELO 250, MAIL/RCPT 250,
/// DATA 354 … `.` 250, QUIT 221.
struct SmtpServer {
    port: u16,
    mails: Arc<Mutex<Vec<Mail>>>,
}

impl SmtpServer {
    fn start() -> SmtpServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mails = Arc::new(Mutex::new(Vec::new()));
        let seen = mails.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let seen = seen.clone();
                std::thread::spawn(move || smtp_session(stream, &seen));
            }
        });
        SmtpServer { port, mails }
    }

    fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }
}

fn smtp_session(stream: TcpStream, mails: &Mutex<Vec<Mail>>) -> Option<()> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut out = stream;
    out.write_all(b"220 test-smtp ready\r\n").ok()?;
    let mut mail = Mail::default();
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 {
            return Some(());
        }
        let command = line.trim_end().to_string();
        let upper = command.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            b"250 test-smtp\r\n"
        } else if upper.starts_with("MAIL FROM:") {
            mail = Mail {
                from: command[10..].trim().to_string(),
                ..Mail::default()
            };
            b"250 OK\r\n"
        } else if upper.starts_with("RCPT TO:") {
            mail.to.push(command[8..].trim().to_string());
            b"250 OK\r\n"
        } else if upper == "DATA" {
            out.write_all(b"354 end with <CRLF>.<CRLF>\r\n").ok()?;
            loop {
                line.clear();
                if reader.read_line(&mut line).ok()? == 0 {
                    return Some(());
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                mail.data.push_str(&line);
            }
            mails.lock().unwrap().push(std::mem::take(&mut mail));
            b"250 queued\r\n"
        } else if upper == "QUIT" {
            out.write_all(b"221 bye\r\n").ok()?;
            return Some(());
        } else {
            b"250 OK\r\n"
        };
        out.write_all(reply).ok()?;
    }
}

// ---------- a market to notify about ----------

fn offer(name: &str, requires_approval: bool) -> Value {
    json!({"name": name, "currency": "USD", "billing_interval": "monthly", "recurring_amount": 50000,
        "term_months": 12, "usage_prices": [], "trial_days": 0,
        "requires_approval": requires_approval, "auto_renew_default": true})
}

struct Market {
    revision: String,
    /// Taken at once.
    open: String,
    /// Needs the provider's approval.
    approval: String,
}

/// A published listing "Ships" with a finalized revision and two offers.
fn market(app: &TestApp, p: &User) -> Market {
    let created = |r: Reply| {
        assert_eq!(r.status, 201, "{}", r.text);
        r.json["id"].as_str().unwrap().to_string()
    };
    let listing = created(app.post(
        "/v1/listings",
        Some(&p.token),
        json!({"title": "Ships", "summary": "AIS positions", "visibility": "public"}),
    ));
    let dataset = created(app.post(
        &format!("/v1/listings/{listing}/datasets"),
        Some(&p.token),
        json!({"name": "positions"}),
    ));
    let revision = created(app.post(
        &format!("/v1/datasets/{dataset}/revisions"),
        Some(&p.token),
        json!({"comment": "v1"}),
    ));
    let upload = reqwest::blocking::Client::new()
        .put(format!(
            "{}/v1/revisions/{revision}/assets/positions.csv",
            app.base
        ))
        .bearer_auth(&p.token)
        .header("content-type", "text/csv")
        .body("ship,lat,lon\n1,2,3\n")
        .send()
        .unwrap();
    assert_eq!(upload.status().as_u16(), 201);
    let fin = app.post(
        &format!("/v1/revisions/{revision}/finalize"),
        Some(&p.token),
        json!({}),
    );
    assert_eq!(fin.status, 200, "{}", fin.text);
    let open = created(app.post(
        &format!("/v1/listings/{listing}/offers"),
        Some(&p.token),
        offer("Open", false),
    ));
    let approval = created(app.post(
        &format!("/v1/listings/{listing}/offers"),
        Some(&p.token),
        offer("Approval", true),
    ));
    let publish = app.post(
        &format!("/v1/listings/{listing}/publish"),
        Some(&p.token),
        json!({}),
    );
    assert_eq!(publish.status, 200, "{}", publish.text);
    Market {
        revision,
        open,
        approval,
    }
}

fn subscribe(app: &TestApp, who: &User, offer_id: &str) -> String {
    let r = app.post(
        "/v1/subscriptions",
        Some(&who.token),
        json!({"offer_id": offer_id}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    r.json["id"].as_str().unwrap().to_string()
}

fn endpoint(app: &TestApp, admin: &User, url: &str, events: &[&str]) -> Reply {
    app.post(
        "/v1/webhook-endpoints",
        Some(&admin.token),
        json!({"url": url, "events": events}),
    )
}

/// The `.eml` files written under `<data dir>/mail`.
fn mail_files(app: &TestApp) -> Vec<String> {
    let dir = app.data_dir().join("mail");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect()
}

/// The files addressed to this e-mail address.
fn mails_to(app: &TestApp, address: &str) -> Vec<String> {
    let to = format!("<{address}>");
    mail_files(app)
        .into_iter()
        .filter(|m| m.lines().any(|l| l.starts_with("To:") && l.contains(&to)))
        .collect()
}

fn outbox_rows(app: &TestApp, kind: &str) -> Vec<OutboxMessage> {
    let mut conn = app.db.connect();
    outbox::table
        .filter(outbox::kind.eq(kind))
        .order((outbox::created_at.asc(), outbox::id.asc()))
        .select(OutboxMessage::as_select())
        .load(&mut conn)
        .unwrap()
}

/// Checks `Marketplace-Signature: t=…,v1=…` against the endpoint's secret; returns `t`.
pub(crate) fn verify_signature(request: &Received, secret: &str) -> i64 {
    let header = request.header("marketplace-signature");
    let mut t = None;
    let mut v1 = Vec::new();
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = value.parse::<i64>().ok(),
            Some(("v1", value)) => v1.push(value.to_string()),
            _ => {}
        }
    }
    let t = t.expect("the signature carries t");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&request.body);
    let expected = hex::encode(mac.finalize().into_bytes());
    assert!(
        v1.contains(&expected),
        "signature {header} does not match the body"
    );
    t
}

// ---------- endpoints ----------

#[test]
fn admins_manage_webhook_endpoints_and_nobody_else_does() {
    let app = TestApp::spawn();
    let (a, other) = (app.signup(), app.signup());
    let member = app.add_member(&a, "member");
    let (_, key) = app.api_key(&a, &["read", "write", "billing"]);

    let r = endpoint(
        &app,
        &a,
        "https://hooks.example.com/marketplace",
        &[
            "subscription.approved",
            "revision.revoked",
            "revision.revoked",
        ],
    );
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let id = r.json["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("whe_"));
    assert_eq!(r.json["url"], "https://hooks.example.com/marketplace");
    assert_eq!(
        r.json["events"],
        json!(["subscription.approved", "revision.revoked"])
    );
    assert!(r.json["secret"].as_str().unwrap().starts_with("whsec_"));
    assert!(r.json["created_at"].is_string());

    // The secret is shown once: a retry with the same Idempotency-Key is not replayed.
    app.clock.advance(chrono::Duration::seconds(1));
    let body = json!({"url": "https://hooks.example.com/b", "events": ["*"]});
    let send = || {
        app.send(
            Method::POST,
            "/v1/webhook-endpoints",
            Some(&a.token),
            Some(&body),
            &[("idempotency-key", "whe-1")],
        )
    };
    let first = send();
    assert_eq!(first.status, 201, "{}", first.text);
    let again = send();
    assert_eq!(again.problem(409), "idempotency_key_used");
    assert!(!again.text.contains(first.json["secret"].as_str().unwrap()));

    let listed = app.all_pages("/v1/webhook-endpoints", &a.token, 1);
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[1]["events"], json!(["*"]));
    assert!(listed.iter().all(|e| e.get("secret").is_none()));

    // Members, API keys (even an admin's) and other organizations cannot.
    let url = "https://hooks.example.com/x";
    assert_eq!(
        endpoint(&app, &member, url, &["*"]).problem(403),
        "forbidden"
    );
    assert_eq!(
        app.get("/v1/webhook-endpoints", Some(&member.token))
            .problem(403),
        "forbidden"
    );
    assert_eq!(
        app.delete(&format!("/v1/webhook-endpoints/{id}"), Some(&member.token))
            .problem(403),
        "forbidden"
    );
    let with_key = app.post(
        "/v1/webhook-endpoints",
        Some(&key),
        json!({"url": url, "events": ["*"]}),
    );
    assert_eq!(with_key.problem(403), "forbidden");
    assert_eq!(
        app.get("/v1/webhook-endpoints", Some(&key)).problem(403),
        "forbidden"
    );
    assert_eq!(
        app.delete(&format!("/v1/webhook-endpoints/{id}"), Some(&other.token))
            .problem(404),
        "not_found"
    );
    assert_eq!(
        app.get("/v1/webhook-endpoints", Some(&other.token)).json["data"],
        json!([])
    );
    assert_eq!(
        app.get("/v1/webhook-endpoints", None).problem(401),
        "unauthorized"
    );

    assert_eq!(
        app.delete(&format!("/v1/webhook-endpoints/{id}"), Some(&a.token))
            .status,
        204
    );
    assert_eq!(
        app.delete(&format!("/v1/webhook-endpoints/{id}"), Some(&a.token))
            .problem(404),
        "not_found"
    );
    assert_eq!(
        app.all_pages("/v1/webhook-endpoints", &a.token, 50).len(),
        1
    );
}

#[test]
fn endpoint_requests_that_break_a_rule_name_the_field() {
    let app = TestApp::spawn();
    let a = app.signup();
    let fields = |body: Value| {
        let r = app.post("/v1/webhook-endpoints", Some(&a.token), body);
        assert_eq!(r.problem(422), "validation_failed", "{}", r.text);
        r.fields()
    };
    let ok = "https://hooks.example.com/in";
    assert_eq!(
        fields(json!({"url": ok, "events": ["subscription.approved", "nope"]})),
        ["events[1]"]
    );
    assert_eq!(fields(json!({"url": ok, "events": []})), ["events"]);
    assert_eq!(fields(json!({"url": ok})), ["events"]);
    assert_eq!(fields(json!({"url": ok, "events": "*"})), ["events"]);
    assert_eq!(fields(json!({"url": ok, "events": [1]})), ["events[0]"]);
    for url in [
        "",
        "hooks.example.com/in",
        "ftp://hooks.example.com/in",
        "https://user:secret@hooks.example.com/in",
    ] {
        assert_eq!(
            fields(json!({"url": url, "events": ["*"]})),
            ["url"],
            "{url}"
        );
    }
    let long = format!("https://hooks.example.com/{}", "a".repeat(2048));
    assert_eq!(fields(json!({"url": long, "events": ["*"]})), ["url"]);
    assert_eq!(
        fields(json!({"url": "mailto:x@example.com", "events": ["bad"]})),
        ["url", "events[0]"]
    );
}

#[test]
fn endpoints_on_internal_addresses_are_refused_unless_allowed() {
    let app = TestApp::spawn();
    let a = app.signup();
    for url in [
        "http://127.0.0.1:9000/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost:8080/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://100.100.100.100/hook",
        "http://[::1]/hook",
        "http://[::ffff:169.254.169.254]/hook",
        "http://[fd00::1]/hook",
        "http://2130706433/hook",
        "http://0.0.0.0/hook",
    ] {
        let r = endpoint(&app, &a, url, &["*"]);
        assert_eq!(r.problem(422), "validation_failed", "{url}: {}", r.text);
        assert_eq!(r.fields(), ["url"], "{url}");
    }

    let allowed = TestApp::builder().webhook_allow_private(true).spawn();
    let b = allowed.signup();
    for url in [
        "http://127.0.0.1:9000/hook",
        "http://169.254.169.254/latest/meta-data/",
    ] {
        let r = endpoint(&allowed, &b, url, &["*"]);
        assert_eq!(r.status, 201, "{url}: {}", r.text);
    }
}

/// A name is checked again when a delivery is sent: one that resolves to loopback is refused
/// then, and nothing reaches the address.
#[test]
fn deliveries_to_names_that_resolve_to_internal_addresses_are_refused() {
    let app = TestApp::spawn();
    let (p, b) = (app.signup(), app.signup());
    let m = market(&app, &p);
    let receiver = Receiver::start(&[]);
    // Stored as if DNS had said something else when the endpoint was made.
    let mut conn = app.db.connect();
    schema::diesel::insert_into(webhook_endpoints::table)
        .values(WebhookEndpoint {
            id: "whe_rebinding".into(),
            organization_id: p.org_id.clone(),
            url: format!("http://localhost:{}/hook", receiver.port),
            events: r#"["*"]"#.into(),
            secret: "whsec_test".into(),
            created_at: app.clock.now_for_tests().naive_utc(),
            deleted_at: None,
        })
        .execute(&mut conn)
        .unwrap();
    subscribe(&app, &b, &m.approval);
    let report = app.deliver_outbox();
    assert_eq!(report.retrying, 1, "{report:?}");
    assert!(receiver.requests().is_empty());
    let hook = &outbox_rows(&app, "webhook")[0];
    assert_eq!(hook.status, "pending");
    let error = hook.last_error.as_deref().unwrap_or("");
    assert!(error.contains("loopback"), "{error}");
}

// ---------- deliveries ----------

#[test]
fn an_approval_reaches_the_subscribers_endpoint_signed_with_its_secret() {
    let app = TestApp::builder().webhook_allow_private(true).spawn();
    let (p, b) = (app.signup(), app.signup());
    let m = market(&app, &p);
    let receiver = Receiver::start(&[]);
    let created = endpoint(
        &app,
        &b,
        &receiver.url("/hooks/marketplace?source=test"),
        &["subscription.approved", "subscription.rejected"],
    );
    assert_eq!(created.status, 201, "{}", created.text);
    let secret = created.json["secret"].as_str().unwrap().to_string();

    let sid = subscribe(&app, &b, &m.approval);
    app.deliver_outbox();
    assert!(
        receiver.requests().is_empty(),
        "the subscriber's endpoint did not ask for requests"
    );
    let approved = app.post(
        &format!("/v1/subscriptions/{sid}/approve"),
        Some(&p.token),
        json!({}),
    );
    assert_eq!(approved.status, 200, "{}", approved.text);
    let report = app.deliver_outbox();
    assert_eq!(report.failed + report.retrying, 0, "{report:?}");

    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    let hook = &requests[0];
    assert_eq!(hook.path, "/hooks/marketplace?source=test");
    assert_eq!(hook.header("content-type"), "application/json");
    let t = verify_signature(hook, &secret);
    assert_eq!(t, app.clock.now_for_tests().timestamp());
    let event = hook.json();
    assert_eq!(event["type"], "subscription.approved");
    assert!(event["id"].as_str().unwrap().starts_with("evt_"));
    assert_eq!(
        hook.header("marketplace-event-id"),
        event["id"].as_str().unwrap()
    );
    assert!(event["created_at"].is_string());
    assert_eq!(event["data"]["subscription"]["id"], sid.as_str());
    assert_eq!(event["data"]["subscription"]["status"], "active");
    assert_eq!(
        event["data"]["subscription"]["subscriber"]["id"],
        b.org_id.as_str()
    );
    assert_eq!(event["data"]["listing"]["title"], "Ships");

    // A forged or altered body does not verify.
    let mut forged = hook.clone();
    forged.body = hook.body.replace_first(b"active", b"xctive");
    assert!(std::panic::catch_unwind(|| verify_signature(&forged, &secret)).is_err());
    assert!(std::panic::catch_unwind(|| verify_signature(hook, "whsec_wrong")).is_err());

    // Delivered once: nothing more is due.
    assert_eq!(app.deliver_outbox(), Default::default());
    assert_eq!(receiver.requests().len(), 1);
}

trait ReplaceFirst {
    fn replace_first(&self, from: &[u8], to: &[u8]) -> Vec<u8>;
}

impl ReplaceFirst for Vec<u8> {
    fn replace_first(&self, from: &[u8], to: &[u8]) -> Vec<u8> {
        let at = self
            .windows(from.len())
            .position(|w| w == from)
            .expect("the pattern occurs");
        [&self[..at], to, &self[at + from.len()..]].concat()
    }
}

#[test]
fn a_failing_receiver_gets_the_event_again_after_a_backoff_and_a_dead_one_is_given_up() {
    let app = TestApp::builder().webhook_allow_private(true).spawn();
    let (p, b) = (app.signup(), app.signup());
    let m = market(&app, &p);
    let flaky = Receiver::start(&[500]);
    let created = endpoint(&app, &p, &flaky.url("/in"), &["subscription.requested"]);
    assert_eq!(created.status, 201, "{}", created.text);
    let secret = created.json["secret"].as_str().unwrap().to_string();
    let dead_port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dead = endpoint(
        &app,
        &p,
        &format!("http://127.0.0.1:{dead_port}/in"),
        &["*"],
    );
    assert_eq!(dead.status, 201, "{}", dead.text);

    subscribe(&app, &b, &m.approval);
    let first = app.deliver_outbox();
    assert_eq!(first.retrying, 2, "{first:?}");
    assert_eq!(flaky.requests().len(), 1);
    let hooks = outbox_rows(&app, "webhook");
    assert!(hooks
        .iter()
        .all(|h| h.status == "pending" && h.attempts == 1));
    assert!(hooks
        .iter()
        .any(|h| h.last_error.as_deref().unwrap_or("").contains("HTTP 500")));

    // Not due before the backoff (30 s) has passed.
    app.clock.advance(chrono::Duration::seconds(29));
    assert_eq!(app.deliver_outbox(), Default::default());
    assert_eq!(flaky.requests().len(), 1);
    app.clock.advance(chrono::Duration::seconds(2));
    let second = app.deliver_outbox();
    assert_eq!((second.sent, second.retrying), (1, 1), "{second:?}");
    let requests = flaky.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[0].header("marketplace-event-id"),
        requests[1].header("marketplace-event-id")
    );
    assert_eq!(requests[0].body, requests[1].body);
    let t1 = verify_signature(&requests[0], &secret);
    let t2 = verify_signature(&requests[1], &secret);
    assert_eq!(t2 - t1, 31, "each try is signed when it is sent");

    // The dead endpoint backs off 30 s, 60 s, 120 s... (at most 6 h) and is given up after
    // 12 attempts.
    let mut waits = Vec::new();
    for _ in 0..20 {
        let row = outbox_rows(&app, "webhook")
            .into_iter()
            .find(|h| h.status != "sent")
            .unwrap();
        if row.status == "failed" {
            assert_eq!(row.attempts, 12);
            break;
        }
        let wait = row.next_attempt_at - app.clock.now_for_tests().naive_utc();
        waits.push(wait.num_seconds());
        app.clock.set(row.next_attempt_at.and_utc());
        app.deliver_outbox();
    }
    assert_eq!(&waits[..4], [60, 120, 240, 480], "{waits:?}");
    assert_eq!(waits.len(), 10, "{waits:?}");
    assert_eq!(*waits.last().unwrap(), 6 * 3600);
    let mut statuses: Vec<String> = outbox_rows(&app, "webhook")
        .into_iter()
        .map(|h| h.status)
        .collect();
    statuses.sort();
    assert_eq!(statuses, ["failed", "sent"]);
}

#[test]
fn deleted_endpoints_get_nothing_more() {
    let app = TestApp::builder().webhook_allow_private(true).spawn();
    let (p, b) = (app.signup(), app.signup());
    let m = market(&app, &p);
    let receiver = Receiver::start(&[]);
    let created = endpoint(&app, &p, &receiver.url("/in"), &["*"]);
    let id = created.json["id"].as_str().unwrap();
    subscribe(&app, &b, &m.approval);
    assert_eq!(
        app.delete(&format!("/v1/webhook-endpoints/{id}"), Some(&p.token))
            .status,
        204
    );
    let report = app.deliver_outbox();
    assert_eq!(report.failed, 1, "{report:?}");
    assert!(receiver.requests().is_empty());
    let row = &outbox_rows(&app, "webhook")[0];
    assert_eq!(row.status, "failed");
}

// ---------- e-mails ----------

#[test]
fn e_mails_for_requests_answers_and_revocations_are_written_to_the_data_dir() {
    let app = TestApp::spawn();
    let (p, b, b2) = (app.signup(), app.signup(), app.signup());
    let colleague = app.add_member(&p, "member");
    let accountant = app.add_member(&p, "finance");
    let m = market(&app, &p);

    // A new request: the provider's admin and member are told, not its finance user.
    let sid = subscribe(&app, &b, &m.approval);
    assert!(
        mail_files(&app).is_empty(),
        "nothing is sent before delivery"
    );
    let report = app.deliver_outbox();
    assert_eq!(report.sent, 2, "{report:?}");
    for who in [&p, &colleague] {
        let mails = mails_to(&app, &who.email);
        assert_eq!(mails.len(), 1, "{}", who.email);
        assert!(mails[0].contains("Subject: New subscription request for \"Ships\""));
        assert!(mails[0].contains(&sid), "{}", mails[0]);
        assert!(mails[0].contains("From: \"Data Marketplace\" <no-reply@marketplace.localhost>"));
    }
    assert!(mails_to(&app, &accountant.email).is_empty());

    // The answer goes to the subscriber.
    app.post(
        &format!("/v1/subscriptions/{sid}/approve"),
        Some(&p.token),
        json!({}),
    );
    app.deliver_outbox();
    let approved = mails_to(&app, &b.email);
    assert_eq!(approved.len(), 1);
    assert!(approved[0].contains("Subject: Your subscription to \"Ships\" is approved"));

    let sid2 = subscribe(&app, &b2, &m.approval);
    let rejected = app.post(
        &format!("/v1/subscriptions/{sid2}/reject"),
        Some(&p.token),
        json!({"reason": "Not for resale outside the EU"}),
    );
    assert_eq!(rejected.status, 200, "{}", rejected.text);
    app.deliver_outbox();
    let rejection = mails_to(&app, &b2.email);
    assert_eq!(rejection.len(), 1);
    assert!(rejection[0].contains("Subject: Your subscription request for \"Ships\" was rejected"));
    assert!(rejection[0].contains("Not for resale outside the EU"));

    // A revoked revision: every holder of a live grant is told; the rejected one is not.
    let b3 = app.signup();
    subscribe(&app, &b3, &m.open);
    let revoke = app.post(
        &format!("/v1/revisions/{}/revoke", m.revision),
        Some(&p.token),
        json!({"reason": "Wrong coordinates in March"}),
    );
    assert_eq!(revoke.status, 200, "{}", revoke.text);
    app.deliver_outbox();
    for who in [&b, &b3] {
        let revoked: Vec<_> = mails_to(&app, &who.email)
            .into_iter()
            .filter(|m| m.contains("Subject: A revision of \"Ships\" was revoked"))
            .collect();
        assert_eq!(revoked.len(), 1, "{}", who.email);
        assert!(revoked[0].contains("Wrong coordinates in March"));
        assert!(revoked[0].contains(&m.revision));
    }
    assert_eq!(mails_to(&app, &b2.email).len(), 1);
    assert!(outbox_rows(&app, "email")
        .iter()
        .all(|r| r.status == "sent" && r.sent_at.is_some()));
}

#[test]
fn a_refused_change_sends_nothing() {
    let app = TestApp::spawn();
    let (p, b) = (app.signup(), app.signup());
    let m = market(&app, &p);
    let sid = subscribe(&app, &b, &m.approval);
    app.deliver_outbox();
    let before = mail_files(&app).len();
    // Only the provider answers; a second answer is refused: neither tells anyone.
    assert_eq!(
        app.post(
            &format!("/v1/subscriptions/{sid}/approve"),
            Some(&b.token),
            json!({})
        )
        .problem(403),
        "forbidden"
    );
    let ok = app.post(
        &format!("/v1/subscriptions/{sid}/approve"),
        Some(&p.token),
        json!({}),
    );
    assert_eq!(ok.status, 200);
    let twice = app.post(
        &format!("/v1/subscriptions/{sid}/reject"),
        Some(&p.token),
        json!({"reason": "changed my mind"}),
    );
    assert_eq!(twice.problem(409), "invalid_state");
    app.deliver_outbox();
    assert_eq!(
        mail_files(&app).len(),
        before + 1,
        "one e-mail: the approval"
    );
}

#[test]
fn e_mails_go_over_smtp_when_a_server_is_configured() {
    let smtp = SmtpServer::start();
    let app = TestApp::builder()
        .smtp_url(&format!("smtp://127.0.0.1:{}", smtp.port))
        .spawn();
    let (p, b) = (app.signup(), app.signup());
    let m = market(&app, &p);
    let sid = subscribe(&app, &b, &m.approval);
    let report = app.deliver_outbox();
    assert_eq!(report.sent, 1, "{report:?}");
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].from, "<no-reply@marketplace.localhost>");
    assert_eq!(mails[0].to, [format!("<{}>", p.email)]);
    assert!(mails[0]
        .data
        .contains("Subject: New subscription request for \"Ships\""));
    assert!(mails[0].data.contains(&sid));
    assert!(
        mail_files(&app).is_empty(),
        "no files when SMTP is configured"
    );
}

#[test]
fn an_unreachable_smtp_server_is_retried_later() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let app = TestApp::builder()
        .smtp_url(&format!("smtp://127.0.0.1:{port}"))
        .spawn();
    let (p, b) = (app.signup(), app.signup());
    let m = market(&app, &p);
    subscribe(&app, &b, &m.approval);
    let report = app.deliver_outbox();
    assert_eq!(report.retrying, 1, "{report:?}");
    let row = &outbox_rows(&app, "email")[0];
    assert_eq!((row.status.as_str(), row.attempts), ("pending", 1));
    assert!(row.last_error.as_deref().unwrap_or("").contains("SMTP"));
}

#[test]
fn the_worker_in_serve_delivers_without_being_asked() {
    let app = TestApp::builder().outbox_poll_ms(50).spawn();
    let (p, b) = (app.signup(), app.signup());
    let m = market(&app, &p);
    subscribe(&app, &b, &m.approval);
    let deadline = Instant::now() + Duration::from_secs(20);
    while mails_to(&app, &p.email).is_empty() {
        assert!(Instant::now() < deadline, "the worker sent nothing");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn two_couriers_at_once_send_each_message_once() {
    let app = Arc::new(TestApp::spawn());
    let p = app.signup();
    let m = market(&app, &p);
    let buyers: Vec<User> = (0..12).map(|_| app.signup()).collect();
    for b in &buyers {
        subscribe(&app, b, &m.approval);
    }
    let couriers: Vec<_> = (0..3)
        .map(|_| {
            let app = app.clone();
            std::thread::spawn(move || app.deliver_outbox())
        })
        .collect();
    let sent: usize = couriers.into_iter().map(|c| c.join().unwrap().sent).sum();
    assert_eq!(sent, 12);
    assert_eq!(mails_to(&app, &p.email).len(), 12);
    assert_eq!(app.deliver_outbox(), Default::default());
}

/// The reminder the lifecycle worker sends 7 days before a term ends goes out once a term.
#[test]
fn the_term_ending_reminder_is_sent_once_per_term() {
    let app = TestApp::builder().webhook_allow_private(true).spawn();
    let (p, b) = (app.signup(), app.signup());
    let m = market(&app, &p);
    let receiver = Receiver::start(&[]);
    assert_eq!(
        endpoint(
            &app,
            &b,
            &receiver.url("/in"),
            &["subscription.term_ending"]
        )
        .status,
        201
    );
    let sid = subscribe(&app, &b, &m.open);
    let mut conn = app.db.connect();
    let s: schema::models::Subscription = schema::schema::subscriptions::table
        .find(&sid)
        .select(schema::models::Subscription::as_select())
        .first(&mut conn)
        .unwrap();
    let clock = app.clock.clone();
    assert!(api::domain::outbox::notify_term_ending(&mut conn, &clock, &s, true).unwrap());
    assert!(!api::domain::outbox::notify_term_ending(&mut conn, &clock, &s, true).unwrap());
    app.deliver_outbox();
    let reminders = mails_to(&app, &b.email);
    assert_eq!(reminders.len(), 1);
    assert!(reminders[0].contains("Subject: Your subscription to \"Ships\" renews on"));
    let hooks = receiver.requests();
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0].json()["type"], "subscription.term_ending");
}

#[test]
fn sent_messages_are_purged_after_30_days_and_pending_ones_kept() {
    let app = TestApp::spawn();
    let (p, b, b2) = (app.signup(), app.signup(), app.signup());
    let m = market(&app, &p);
    subscribe(&app, &b, &m.approval);
    app.deliver_outbox();
    subscribe(&app, &b2, &m.approval);
    let mut conn = app.db.connect();
    let clock = app.clock.clone();
    assert_eq!(api::domain::outbox::purge(&mut conn, &clock).unwrap(), 0);
    app.clock.advance(chrono::Duration::days(31));
    assert_eq!(api::domain::outbox::purge(&mut conn, &clock).unwrap(), 1);
    let left = outbox_rows(&app, "email");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].status, "pending");
}

#[test]
fn endpoints_created_at_once_stop_at_the_limit() {
    let app = TestApp::spawn();
    let a = app.signup();
    let replies: Vec<Reply> = std::thread::scope(|s| {
        let creations: Vec<_> = (0..24)
            .map(|i| {
                let (app, a) = (&app, &a);
                s.spawn(move || endpoint(app, a, &format!("https://hooks.example.com/{i}"), &["*"]))
            })
            .collect();
        creations.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let created = replies.iter().filter(|r| r.status == 201).count();
    assert_eq!(
        created,
        16,
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for refused in replies.iter().filter(|r| r.status != 201) {
        assert_eq!(refused.problem(409), "too_many_webhook_endpoints");
    }
    assert_eq!(
        app.all_pages("/v1/webhook-endpoints", &a.token, 50).len(),
        16
    );
}

/// `count` endpoints of `admin`'s organization on the receiver that hangs, for requests.
fn hanging_endpoints(app: &TestApp, admin: &User, hanging: &GatedReceiver, count: usize) {
    for i in 0..count {
        let created = endpoint(
            app,
            admin,
            &hanging.url(&format!("/in/{i}")),
            &["subscription.requested"],
        );
        assert_eq!(created.status, 201, "{}", created.text);
    }
}

#[test]
fn receivers_that_hang_delay_no_other_organizations_messages() {
    let app = Arc::new(TestApp::builder().webhook_allow_private(true).spawn());
    let (p, q) = (app.signup(), app.signup());
    let (mp, mq) = (market(&app, &p), market(&app, &q));
    // The provider p: four endpoints whose receiver hangs, and two requests to tell them of.
    let hanging = GatedReceiver::start();
    hanging_endpoints(&app, &p, &hanging, 4);
    for _ in 0..2 {
        subscribe(&app, &app.signup(), &mp.approval);
    }
    // Later, the provider q: one receiver that answers, and one request.
    app.clock.advance(chrono::Duration::seconds(1));
    let answering = Receiver::start(&[]);
    let created = endpoint(&app, &q, &answering.url("/in"), &["subscription.requested"]);
    assert_eq!(created.status, 201, "{}", created.text);
    subscribe(&app, &app.signup(), &mq.approval);

    let courier = {
        let app = app.clone();
        std::thread::spawn(move || app.deliver_outbox())
    };
    // Well before the 10 s a hanging delivery may take, q's webhook and both providers'
    // e-mails are out, while p's receiver holds some of its deliveries, not all eight.
    let deadline = Instant::now() + Duration::from_secs(8);
    while answering.requests().is_empty()
        || mails_to(&app, &p.email).len() < 2
        || mails_to(&app, &q.email).is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "held by hanging receivers: {} webhook(s), {} and {} e-mail(s)",
            answering.requests().len(),
            mails_to(&app, &p.email).len(),
            mails_to(&app, &q.email).len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let held = hanging.held();
    assert!((1..=4).contains(&held), "{held} deliveries held at once");
    // A request made while the pass waits on the receiver that hangs goes out in that pass,
    // without waiting for a send to end.
    subscribe(&app, &app.signup(), &mq.approval);
    let deadline = Instant::now() + Duration::from_secs(8);
    while answering.requests().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the new webhook waited for the hanging ones"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(hanging.held() <= 4);
    hanging.open();
    let report = courier.join().unwrap();
    // The last e-mail goes in this pass or, if the e-mails' lane had ended, the next.
    let rest = app.deliver_outbox();
    assert_eq!(
        (
            report.sent + rest.sent,
            report.retrying + rest.retrying,
            report.failed + rest.failed
        ),
        (8 + 2 + 4, 0, 0),
        "{report:?} {rest:?}"
    );
    assert_eq!(hanging.held(), 8);
    assert_eq!(app.deliver_outbox(), Default::default());
    // Deliveries handed back while their organization's share was taken did not count as
    // tries: each was sent on its first.
    let hooks = outbox_rows(&app, "webhook");
    assert_eq!(hooks.len(), 10);
    assert!(
        hooks.iter().all(|h| h.status == "sent" && h.attempts == 1),
        "{:?}",
        hooks
            .iter()
            .map(|h| (&h.status, h.attempts))
            .collect::<Vec<_>>()
    );
}

#[test]
fn the_worker_sends_e_mails_while_its_webhooks_wait_on_receivers_that_hang() {
    let app = TestApp::builder()
        .webhook_allow_private(true)
        .outbox_poll_ms(50)
        .spawn();
    let (p, q) = (app.signup(), app.signup());
    let (mp, mq) = (market(&app, &p), market(&app, &q));
    let hanging = GatedReceiver::start();
    hanging_endpoints(&app, &p, &hanging, 4);
    subscribe(&app, &app.signup(), &mp.approval);
    let deadline = Instant::now() + Duration::from_secs(8);
    while hanging.held() < 4 {
        assert!(Instant::now() < deadline, "the worker sent no webhook");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The webhooks' pass is waiting on the receiver; a request made now is e-mailed anyway.
    subscribe(&app, &app.signup(), &mq.approval);
    while mails_to(&app, &q.email).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the e-mail waited for the webhooks"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    hanging.open();
}
