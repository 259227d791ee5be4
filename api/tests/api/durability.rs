//! Usage events survive a crash: every batch acknowledged before a SIGKILL is there after a
//! restart, and resending counts none twice.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::TestDb;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server process, killed (SIGKILL) when dropped: also when the test fails midway.
struct Server(Child);

impl Server {
    fn kill(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The real binary, as an operator runs it, on the test's database.
fn serve(db: &TestDb, data_dir: &std::path::Path, port: u16) -> Server {
    let child = Server(
        Command::new(env!("CARGO_BIN_EXE_marketplace"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("MARKETPLACE_DATABASE_URL", &db.url)
            .env("MARKETPLACE_DATA_DIR", data_dir)
            .env("MARKETPLACE_AUTH_RATE_LIMIT", "100000")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("marketplace starts"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::blocking::get(format!("http://127.0.0.1:{port}/healthz")).is_err() {
        assert!(Instant::now() < deadline, "server did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

fn post(base: &str, token: Option<&str>, path: &str, body: Value) -> (u16, Value) {
    let mut req = reqwest::blocking::Client::new()
        .post(format!("{base}{path}"))
        .json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    match req.send() {
        Ok(r) => (r.status().as_u16(), r.json().unwrap_or(Value::Null)),
        Err(_) => (0, Value::Null),
    }
}

fn token(base: &str) -> String {
    let tag = api::domain::ids::random_token(8).to_lowercase();
    let (_, j) = post(
        base,
        None,
        "/v1/auth/signup",
        json!({"email": format!("u-{tag}@example.com"),
        "password": "correct horse battery staple 9", "name": "U", "organization_name": format!("Org {tag}")}),
    );
    j["access_token"].as_str().unwrap().to_string()
}

#[test]
fn acknowledged_usage_survives_a_sigkill_and_counts_once() {
    let db = TestDb::new();
    let dir = std::env::temp_dir().join(format!("mkt-kill-{}", api::domain::ids::random_token(8)));
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = serve(&db, &dir, port);

    let (p, b) = (token(&base), token(&base));
    let (_, l) = post(
        &base,
        Some(&p),
        "/v1/listings",
        json!({"title": "T", "summary": "S", "visibility": "public"}),
    );
    let lid = l["id"].as_str().unwrap();
    let (_, o) = post(
        &base,
        Some(&p),
        &format!("/v1/listings/{lid}/offers"),
        json!({"name": "O", "currency": "USD",
        "billing_interval": "monthly", "recurring_amount": 1, "term_months": 1,
        "usage_prices": [{"metric": "queries", "model": "per_unit", "unit_amount_decimal": "1"}]}),
    );
    post(
        &base,
        Some(&p),
        &format!("/v1/listings/{lid}/publish"),
        json!({}),
    );
    let (_, s) = post(
        &base,
        Some(&b),
        "/v1/subscriptions",
        json!({"offer_id": o["id"]}),
    );
    let sub = s["id"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(1100));

    // Two senders stream batches of 200 until the server dies under them.
    let acked: Arc<Mutex<Vec<usize>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let subscription = sub.clone();
    let ts = chrono::Utc::now().to_rfc3339();
    let batch = move |n: usize| -> Value {
        json!({"events": (0..200).map(|i| json!({"id": format!("b{n}-{i}"), "subscription_id": subscription, "metric": "queries",
            "quantity": 1, "timestamp": ts})).collect::<Vec<_>>()})
    };
    let senders: Vec<_> = (0..2)
        .map(|k| {
            let (acked, stop, base, p, batch) = (
                acked.clone(),
                stop.clone(),
                base.clone(),
                p.clone(),
                batch.clone(),
            );
            std::thread::spawn(move || {
                let mut n = k;
                while !stop.load(Ordering::SeqCst) {
                    if post(&base, Some(&p), "/v1/usage-events", batch(n)).0 == 200 {
                        acked.lock().unwrap().push(n);
                    }
                    n += 2;
                }
                n
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    server.kill(); // SIGKILL
    stop.store(true, Ordering::SeqCst);
    let sent: usize = senders
        .into_iter()
        .map(|h| h.join().unwrap())
        .max()
        .unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 3,
        "some batches were acknowledged before the kill ({})",
        acked.len()
    );

    // Restart on the same database: every acknowledged batch is there, and a resend of
    // every batch ever sent finds the acknowledged ones as duplicates, whole.
    let mut server = serve(&db, &dir, port);
    let mut stored = 0;
    for n in 0..sent {
        let (status, r) = post(&base, Some(&p), "/v1/usage-events", batch(n));
        assert_eq!(status, 200, "{r}");
        let duplicates = r["duplicates"].as_u64().unwrap();
        if acked.contains(&n) {
            assert_eq!(duplicates, 200, "acknowledged batch {n} was lost");
        } else {
            assert!(
                duplicates == 0 || duplicates == 200,
                "batch {n} was half-written: {duplicates}"
            );
        }
        stored += 200;
    }
    let usage: Value = reqwest::blocking::Client::new()
        .get(format!("{base}/v1/subscriptions/{sub}/usage"))
        .bearer_auth(&b)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let total: i64 = usage["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["quantity"].as_i64().unwrap())
        .sum();
    assert_eq!(total, stored as i64, "each event counted exactly once");
    server.kill();
    let _ = std::fs::remove_dir_all(&dir);
}
