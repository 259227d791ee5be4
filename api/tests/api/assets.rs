//! Assets: streamed uploads, reads with ranges, signed URLs, the read rule and its audit.
//! With `TEST_S3_ENDPOINT` set (see helpers), every one of these runs against S3 storage.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use reqwest::blocking::{Body, Client};
use schema::diesel::prelude::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::helpers::{s3_settings, Reply, TestApp, User};

// ---------- fixtures ----------

/// Deterministic pseudo-random bytes (xorshift64*), readable as a stream of any length.
struct Noise {
    state: u64,
    left: u64,
}

impl Noise {
    fn new(seed: u64, len: u64) -> Noise {
        Noise {
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            left: len,
        }
    }

    fn bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        Noise::new(seed, len as u64).read_to_end(&mut out).unwrap();
        out
    }
}

impl Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        for chunk in buf[..n].chunks_mut(8) {
            self.state ^= self.state >> 12;
            self.state ^= self.state << 25;
            self.state ^= self.state >> 27;
            let word = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn client() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap()
}

fn reply(res: reqwest::blocking::Response) -> Reply {
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let text = res.text().unwrap_or_default();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        text,
        json,
    }
}

/// `PUT /v1/revisions/{revision}/assets/{name}` (the name as it goes into the path).
fn upload(
    app: &TestApp,
    token: &str,
    revision: &str,
    name: &str,
    content_type: Option<&str>,
    body: impl Into<Body>,
) -> reqwest::Result<Reply> {
    let mut req = client()
        .put(format!(
            "{}/v1/revisions/{revision}/assets/{name}",
            app.base
        ))
        .bearer_auth(token)
        .body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    req.send().map(reply)
}

fn put(app: &TestApp, token: &str, revision: &str, name: &str, data: &[u8]) -> Reply {
    upload(app, token, revision, name, Some("text/csv"), data.to_vec()).expect("upload sent")
}

/// GET with optional token and extra headers, the body as raw bytes.
fn fetch(
    app: &TestApp,
    path_or_url: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let url = if path_or_url.starts_with("http") {
        path_or_url.to_string()
    } else {
        format!("{}{path_or_url}", app.base)
    };
    let mut req = client().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = req.send().expect("request sent");
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    (status, headers, res.bytes().unwrap().to_vec())
}

fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn offer_body() -> Value {
    json!({"name": "Monthly", "currency": "USD", "billing_interval": "monthly", "recurring_amount": 10000,
           "term_months": 12, "usage_prices": [], "trial_days": 0, "requires_approval": false, "auto_renew_default": true})
}

/// A provider's draft listing (`visibility`, `allowed` orgs if private) with a dataset and
/// an open revision.
struct Shop {
    provider: User,
    listing: String,
    dataset: String,
    revision: String,
}

fn shop(app: &TestApp, visibility: &str, allowed: &[&str]) -> Shop {
    let provider = app.signup();
    let l = app.post(
        "/v1/listings",
        Some(&provider.token),
        json!({"title": "Weather", "summary": "Hourly", "categories": ["weather"], "tags": [],
               "visibility": visibility, "allowed_organization_ids": allowed}),
    );
    assert_eq!(l.status, 201, "{}", l.text);
    let listing = l.json["id"].as_str().unwrap().to_string();
    let o = app.post(
        &format!("/v1/listings/{listing}/offers"),
        Some(&provider.token),
        offer_body(),
    );
    assert_eq!(o.status, 201, "{}", o.text);
    let d = app.post(
        &format!("/v1/listings/{listing}/datasets"),
        Some(&provider.token),
        json!({"name": "observations"}),
    );
    assert_eq!(d.status, 201, "{}", d.text);
    let dataset = d.json["id"].as_str().unwrap().to_string();
    let revision = new_revision(app, &provider, &dataset);
    Shop {
        provider,
        listing,
        dataset,
        revision,
    }
}

fn new_revision(app: &TestApp, provider: &User, dataset: &str) -> String {
    let r = app.post(
        &format!("/v1/datasets/{dataset}/revisions"),
        Some(&provider.token),
        json!({"comment": "r"}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    r.json["id"].as_str().unwrap().to_string()
}

impl Shop {
    fn finalize_and_publish(&self, app: &TestApp) {
        let f = app.post(
            &format!("/v1/revisions/{}/finalize", self.revision),
            Some(&self.provider.token),
            json!({}),
        );
        assert_eq!(f.status, 200, "{}", f.text);
        let p = app.post(
            &format!("/v1/listings/{}/publish", self.listing),
            Some(&self.provider.token),
            json!({}),
        );
        assert_eq!(p.status, 200, "{}", p.text);
    }
}

/// Every stored object of an organization: local files under the data dir (staging files of
/// unfinished uploads included), or keys in the S3 bucket.
fn stored_objects(app: &TestApp, org_id: &str) -> Vec<String> {
    match s3_settings() {
        Some(s3) => {
            let storage =
                api::domain::storage::Storage::open(&api::domain::storage::StorageConfig::S3 {
                    bucket: s3.bucket,
                    endpoint: Some(s3.endpoint),
                    region: Some(s3.region),
                })
                .unwrap();
            actix_web::rt::System::new()
                .block_on(storage.list(org_id))
                .unwrap()
        }
        None => {
            fn walk(dir: &std::path::Path, out: &mut Vec<String>) {
                for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                    if e.path().is_dir() {
                        walk(&e.path(), out);
                    } else {
                        out.push(e.path().display().to_string());
                    }
                }
            }
            let mut out = Vec::new();
            walk(&app.data_dir().join("objects").join(org_id), &mut out);
            out
        }
    }
}

fn asset_rows(app: &TestApp, revision: &str) -> Vec<(String, String)> {
    use schema::schema::assets;
    let mut conn = app.db.connect();
    assets::table
        .filter(assets::revision_id.eq(revision))
        .select((assets::id, assets::name))
        .load(&mut conn)
        .unwrap()
}

/// An `asset.read` audit event.
#[derive(Debug)]
struct ReadEvent {
    organization_id: String,
    actor: String,
    grant_id: Option<String>,
    client_address: Option<String>,
    detail: Value,
}

type EventRow = (String, String, Option<String>, Option<String>, String);

/// Audit events `asset.read` of one asset, waiting for `count` of them (they are written
/// when the response stream ends, just after the client has the last byte).
fn read_events(app: &TestApp, asset: &str, count: usize) -> Vec<ReadEvent> {
    use schema::schema::audit_events as a;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut conn = app.db.connect();
        let rows: Vec<EventRow> = a::table
            .filter(a::action.eq("asset.read"))
            .filter(a::subject.eq(asset))
            .select((
                a::organization_id,
                a::actor,
                a::grant_id,
                a::client_address,
                a::detail,
            ))
            .load(&mut conn)
            .unwrap();
        if rows.len() >= count || Instant::now() > deadline {
            return rows
                .into_iter()
                .map(
                    |(organization_id, actor, grant_id, client_address, detail)| ReadEvent {
                        organization_id,
                        actor,
                        grant_id,
                        client_address,
                        detail: serde_json::from_str(&detail).unwrap(),
                    },
                )
                .collect();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------- uploads ----------

#[test]
fn a_provider_uploads_replaces_and_reads_assets() {
    let app = TestApp::spawn();
    let s = shop(&app, "public", &[]);
    let t = &s.provider.token;
    let data = Noise::bytes(1, 1024 * 1024 + 17);
    let up = put(&app, t, &s.revision, "obs.csv", &data);
    assert_eq!(up.status, 201, "{}", up.text);
    assert_eq!(up.json["sha256"], sha256_hex(&data));
    assert_eq!(up.json["size"], data.len() as u64);
    assert_eq!(up.json["name"], "obs.csv");
    assert_eq!(up.json["media_type"], "text/csv");
    assert_eq!(up.json["revision_id"], s.revision.as_str());
    let first = up.json["id"].as_str().unwrap().to_string();
    assert!(first.starts_with("ast_"));

    // The revision lists it.
    let rev = app.get(&format!("/v1/revisions/{}", s.revision), Some(t));
    assert_eq!(rev.json["assets"][0]["id"], first.as_str());

    // Re-uploading the name replaces the asset and its object.
    let newer = Noise::bytes(2, 3000);
    let again = upload(&app, t, &s.revision, "obs.csv", None, newer.clone()).unwrap();
    assert_eq!(again.status, 201, "{}", again.text);
    assert_eq!(again.json["sha256"], sha256_hex(&newer));
    assert_eq!(again.json["media_type"], "application/octet-stream");
    let second = again.json["id"].as_str().unwrap().to_string();
    assert_ne!(first, second);
    let rows = asset_rows(&app, &s.revision);
    assert_eq!(rows, vec![(second.clone(), "obs.csv".to_string())]);
    assert_eq!(
        fetch(&app, &format!("/v1/assets/{first}/content"), Some(t), &[]).0,
        404
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while stored_objects(&app, &s.provider.org_id).len() > 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let objects = stored_objects(&app, &s.provider.org_id);
    assert_eq!(
        objects.len(),
        1,
        "the replaced object is removed: {objects:?}"
    );
    assert!(objects[0].ends_with(&second), "{objects:?}");

    // Full read, with the safety headers.
    let (status, headers, body) =
        fetch(&app, &format!("/v1/assets/{second}/content"), Some(t), &[]);
    assert_eq!(status, 200);
    assert_eq!(body, newer);
    assert_eq!(header(&headers, "content-length"), "3000");
    assert_eq!(
        header(&headers, "etag"),
        format!("\"{}\"", sha256_hex(&newer))
    );
    assert_eq!(header(&headers, "content-type"), "application/octet-stream");
    assert_eq!(
        header(&headers, "content-disposition"),
        "attachment; filename=\"obs.csv\"; filename*=UTF-8''obs.csv"
    );
    assert_eq!(header(&headers, "x-content-type-options"), "nosniff");
    assert_eq!(header(&headers, "content-security-policy"), "sandbox");
    assert_eq!(header(&headers, "accept-ranges"), "bytes");

    // An awkward name is carried safely in Content-Disposition; media types are checked.
    let odd = put(
        &app,
        t,
        &s.revision,
        "r%C3%A9sum%C3%A9%20%22q%22.csv",
        b"a,b\n",
    );
    assert_eq!(odd.status, 201, "{}", odd.text);
    assert_eq!(odd.json["name"], "résumé \"q\".csv");
    let (_, headers, _) = fetch(
        &app,
        &format!("/v1/assets/{}/content", odd.json["id"].as_str().unwrap()),
        Some(t),
        &[],
    );
    assert_eq!(
        header(&headers, "content-disposition"),
        "attachment; filename=\"r_sum_ _q_.csv\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%22q%22.csv"
    );
    assert_eq!(header(&headers, "content-type"), "text/csv");
    let bad_type = upload(
        &app,
        t,
        &s.revision,
        "x.csv",
        Some("not a type"),
        b"x".to_vec(),
    )
    .unwrap();
    assert_eq!(bad_type.problem(422), "validation_failed");
    assert_eq!(bad_type.fields(), vec!["Content-Type"]);
    let typed = upload(
        &app,
        t,
        &s.revision,
        "x.json",
        Some("application/json; charset=utf-8"),
        b"{}".to_vec(),
    )
    .unwrap();
    assert_eq!(typed.json["media_type"], "application/json; charset=utf-8");

    // An empty file is a file.
    let empty = put(&app, t, &s.revision, "empty.csv", b"");
    assert_eq!(empty.status, 201, "{}", empty.text);
    assert_eq!(empty.json["size"], 0);
    assert_eq!(empty.json["sha256"], sha256_hex(b""));
    let (status, headers, body) = fetch(
        &app,
        &format!("/v1/assets/{}/content", empty.json["id"].as_str().unwrap()),
        Some(t),
        &[],
    );
    assert_eq!((status, body.len()), (200, 0));
    assert_eq!(header(&headers, "content-length"), "0");
}

/// Sends a request line as is (clients normalise `..` away), returning the status.
fn raw_put_status(app: &TestApp, path: &str, token: &str) -> u16 {
    let address = app.base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "PUT {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {response:?}"))
}

#[test]
fn an_upload_during_which_the_listing_is_archived_is_refused_and_leaves_nothing() {
    let app = TestApp::spawn();
    let s = shop(&app, "public", &[]);
    let t = &s.provider.token;
    let before = stored_objects(&app, &s.provider.org_id);
    let address = app.base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "PUT /v1/revisions/{}/assets/late.csv HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {t}\r\nContent-Type: text/csv\r\nContent-Length: 6\r\nConnection: close\r\n\r\nabc",
        s.revision
    )
    .unwrap();
    stream.flush().unwrap();
    // The upload has begun (its checks passed) when the listing is archived.
    std::thread::sleep(Duration::from_millis(500));
    let archived = app.post(
        &format!("/v1/listings/{}/archive", s.listing),
        Some(t),
        json!({}),
    );
    assert_eq!(archived.status, 200, "{}", archived.text);
    stream.write_all(b"def").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(
        response.starts_with("HTTP/1.1 409") && response.contains("listing_archived"),
        "{response}"
    );
    let revision = app.get(&format!("/v1/revisions/{}", s.revision), Some(t));
    assert_eq!(revision.json["assets"], json!([]), "{}", revision.text);
    assert_eq!(stored_objects(&app, &s.provider.org_id), before);
    // Nor does the archived listing's open revision become data for its subscribers.
    let f = app.post(
        &format!("/v1/revisions/{}/finalize", s.revision),
        Some(t),
        json!({}),
    );
    assert_eq!(f.problem(409), "listing_archived");
}

#[test]
fn asset_names_are_checked() {
    let app = TestApp::spawn();
    let s = shop(&app, "public", &[]);
    let t = &s.provider.token;
    for bad in [
        "bad%01name",
        "tab%09",
        "del%7F",
        "a%2Fb",
        "a%5Cb",
        "%FF",
        "%FE",
        "x%C3",
        &"n".repeat(256),
        &"%C3%A9".repeat(256),
    ] {
        let r = put(&app, t, &s.revision, bad, b"x");
        assert_eq!(r.status, 422, "{bad}: {}", r.text);
        assert_eq!(r.problem(422), "validation_failed", "{bad}");
        assert_eq!(r.fields(), vec!["name"], "{bad}");
    }
    // URL libraries resolve `.` and `..` segments (and their encodings) before sending.
    for raw in ["..", "%2e%2e", "%2E.", ".", "%2E"] {
        let status = raw_put_status(
            &app,
            &format!("/v1/revisions/{}/assets/{raw}", s.revision),
            t,
        );
        assert_eq!(status, 422, "{raw}");
    }
    for good in ["...", "a..b", &"n".repeat(255), "%C3%A9t%C3%A9"] {
        assert_eq!(put(&app, t, &s.revision, good, b"x").status, 201, "{good}");
    }
    assert!(asset_rows(&app, &s.revision)
        .iter()
        .all(|(_, n)| !n.contains('/') && n != ".."));
}

#[test]
fn uploads_follow_the_revision_state_and_the_provider_only() {
    let app = TestApp::spawn();
    let s = shop(&app, "public", &[]);
    let t = &s.provider.token;
    let outsider = app.signup();

    // An empty revision cannot be finalized.
    let empty = app.post(
        &format!("/v1/revisions/{}/finalize", s.revision),
        Some(t),
        json!({}),
    );
    assert_eq!(empty.problem(409), "empty_revision");

    // Others cannot upload: 404 while they cannot see the revision.
    let r = put(&app, &outsider.token, &s.revision, "mine.csv", b"a");
    assert_eq!(r.problem(404), "not_found");
    assert_eq!(
        put(&app, t, "rev_nope", "x.csv", b"a").problem(404),
        "not_found"
    );
    // Nor members without write rights, nor read-only keys.
    let admin_key = app.api_key(&s.provider, &["read"]).1;
    assert_eq!(
        put(&app, &admin_key, &s.revision, "k.csv", b"a").problem(403),
        "forbidden"
    );
    let finance = app.add_member(&s.provider, "finance");
    assert_eq!(
        put(&app, &finance.token, &s.revision, "f.csv", b"a").problem(403),
        "forbidden"
    );
    let member = app.add_member(&s.provider, "member");
    assert_eq!(
        put(&app, &member.token, &s.revision, "m.csv", b"a").status,
        201
    );
    // No credentials: 401.
    let anonymous = client()
        .put(format!(
            "{}/v1/revisions/{}/assets/a.csv",
            app.base, s.revision
        ))
        .body("a")
        .send()
        .map(reply)
        .unwrap();
    assert_eq!(anonymous.problem(401), "unauthorized");

    s.finalize_and_publish(&app);
    // Finalized: immutable, for the provider too (409); another organization: 403.
    let late = put(&app, t, &s.revision, "late.csv", b"a,b\n");
    assert_eq!(late.problem(409), "revision_not_open");
    let replace = put(&app, t, &s.revision, "m.csv", b"other");
    assert_eq!(replace.problem(409), "revision_not_open");
    assert_eq!(
        put(&app, &outsider.token, &s.revision, "x.csv", b"a").problem(403),
        "forbidden"
    );
    assert_eq!(asset_rows(&app, &s.revision).len(), 1);
}

#[test]
fn the_maximum_size_is_enforced_and_failed_uploads_leave_nothing() {
    let app = TestApp::builder().max_asset_bytes(10 * 1024 * 1024).spawn();
    let s = shop(&app, "public", &[]);
    let t = &s.provider.token;

    // Declared too large: refused before a byte is read.
    let declared = upload(
        &app,
        t,
        &s.revision,
        "big.bin",
        None,
        Body::sized(Noise::new(3, 11 << 20), 11 << 20),
    );
    if let Ok(r) = declared {
        assert_eq!(r.problem(413), "payload_too_large");
    }
    // Not declared (chunked): refused once the limit is passed, midway through the body.
    let streamed = upload(
        &app,
        t,
        &s.revision,
        "big.bin",
        None,
        Body::new(Noise::new(3, 20 << 20)),
    );
    if let Ok(r) = streamed {
        assert_eq!(r.problem(413), "payload_too_large");
    }
    // The client breaks off midway (its body fails after 9 MiB, more than one part).
    struct Breaks(Noise, u64);
    impl Read for Breaks {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.1 == 0 {
                return Err(std::io::Error::other("client gives up"));
            }
            let room = buf.len().min(self.1 as usize);
            let n = self.0.read(&mut buf[..room])?;
            self.1 -= n as u64;
            Ok(n)
        }
    }
    let broken = upload(
        &app,
        t,
        &s.revision,
        "cut.bin",
        None,
        Body::new(Breaks(Noise::new(4, 20 << 20), 9 << 20)),
    );
    assert!(broken.is_err() || broken.unwrap().status >= 400);

    // Exactly at the limit is fine.
    let at = upload(
        &app,
        t,
        &s.revision,
        "ten.bin",
        None,
        Body::sized(Noise::new(5, 10 << 20), 10 << 20),
    )
    .unwrap();
    assert_eq!(at.status, 201, "{}", at.text);
    let kept = at.json["id"].as_str().unwrap().to_string();

    // Nothing of the failed uploads stays: no row, no object, no staging file.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = asset_rows(&app, &s.revision);
        let objects = stored_objects(&app, &s.provider.org_id);
        let clean = rows.len() == 1
            && rows[0].0 == kept
            && objects.len() == 1
            && objects[0].ends_with(&kept);
        if clean {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: rows {rows:?}, objects {objects:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Resident memory of this process (the test server runs inside it), in bytes.
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

#[test]
fn a_200_mib_upload_keeps_resident_memory_flat() {
    // Other tests run in parallel in this process and would blur the measure: the test
    // runs itself again, alone, in a child process of the same binary.
    if std::env::var_os("ASSETS_MEMORY_CHILD").is_none() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "assets::a_200_mib_upload_keeps_resident_memory_flat",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("ASSETS_MEMORY_CHILD", "1")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && text.contains("1 passed"),
            "child run failed:\n{text}"
        );
        println!(
            "{}",
            text.lines()
                .filter(|l| l.contains("resident"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        return;
    }
    const SIZE: u64 = 200 * 1024 * 1024;
    let app = TestApp::spawn();
    let s = shop(&app, "public", &[]);
    let mut expected = Sha256::new();
    std::io::copy(&mut Noise::new(42, SIZE), &mut expected).unwrap();
    let expected = hex::encode(expected.finalize());

    let before = resident_bytes();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(before));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak.fetch_max(resident_bytes(), std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let r = upload(
        &app,
        &s.provider.token,
        &s.revision,
        "big.bin",
        None,
        Body::sized(Noise::new(42, SIZE), SIZE),
    )
    .unwrap();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    sampler.join().unwrap();
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["size"], SIZE);
    assert_eq!(r.json["sha256"], expected.as_str());
    let growth = peak
        .load(std::sync::atomic::Ordering::Relaxed)
        .saturating_sub(before);
    println!(
        "resident memory growth during a 200 MiB upload: {} MiB",
        growth >> 20
    );
    assert!(
        growth < 100 << 20,
        "resident memory grew by {} MiB",
        growth >> 20
    );

    // And the bytes read back are the bytes sent.
    let asset = r.json["id"].as_str().unwrap();
    let res = client()
        .get(format!("{}/v1/assets/{asset}/content", app.base))
        .bearer_auth(&s.provider.token)
        .send()
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut got = Sha256::new();
    let mut res = res;
    let n = std::io::copy(&mut res, &mut got).unwrap();
    assert_eq!((n, hex::encode(got.finalize())), (SIZE, expected));
}

// ---------- reading ----------

#[test]
fn range_requests_return_the_exact_bytes() {
    let app = TestApp::spawn();
    let s = shop(&app, "public", &[]);
    let t = &s.provider.token;
    let data = Noise::bytes(6, 100_000);
    let id = put(&app, t, &s.revision, "obs.csv", &data).json["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/v1/assets/{id}/content");
    let n = data.len();
    for (range, first, last) in [
        ("bytes=0-0", 0, 0),
        ("bytes=10-19", 10, 19),
        ("bytes=99990-", 99_990, n - 1),
        ("bytes=-7", n - 7, n - 1),
        ("bytes=50000-999999", 50_000, n - 1),
        ("bytes=-200000", 0, n - 1),
    ] {
        let (status, headers, body) = fetch(&app, &path, Some(t), &[("range", range)]);
        assert_eq!(status, 206, "{range}");
        assert_eq!(body, &data[first..=last], "{range}");
        assert_eq!(
            header(&headers, "content-range"),
            format!("bytes {first}-{last}/{n}")
        );
        assert_eq!(
            header(&headers, "content-length"),
            (last - first + 1).to_string()
        );
        assert_eq!(header(&headers, "content-security-policy"), "sandbox");
    }
    for range in [
        format!("bytes={n}-"),
        format!("bytes={}-{}", n + 5, n + 10),
        "bytes=-0".to_string(),
    ] {
        let r = client()
            .get(format!("{}{path}", app.base))
            .bearer_auth(t)
            .header("range", &range)
            .send()
            .map(reply)
            .unwrap();
        assert_eq!(r.problem(416), "range_not_satisfiable", "{range}");
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes */{n}").as_str())
        );
    }
    // Several ranges, a malformed one, or a stale If-Range: the whole asset.
    let etag = format!("\"{}\"", sha256_hex(&data));
    for headers in [
        vec![("range", "bytes=0-1,5-6")],
        vec![("range", "bytes=9-2")],
        vec![("range", "bytes=0-1"), ("if-range", "\"stale\"")],
    ] {
        let (status, _, body) = fetch(&app, &path, Some(t), &headers);
        assert_eq!((status, body.len()), (200, n), "{headers:?}");
    }
    let (status, _, body) = fetch(
        &app,
        &path,
        Some(t),
        &[("range", "bytes=0-1"), ("if-range", &etag)],
    );
    assert_eq!((status, body), (206, data[..2].to_vec()));
}

#[test]
fn signed_urls_work_without_a_header_and_refuse_any_change() {
    let app = TestApp::spawn();
    let s = shop(&app, "public", &[]);
    let t = &s.provider.token;
    let data = Noise::bytes(7, 5000);
    let id = put(&app, t, &s.revision, "obs.csv", &data).json["id"]
        .as_str()
        .unwrap()
        .to_string();
    let other = put(&app, t, &s.revision, "other.csv", b"x,y\n").json["id"]
        .as_str()
        .unwrap()
        .to_string();

    let du = app.post(&format!("/v1/assets/{id}/download-url"), Some(t), json!({}));
    assert_eq!(du.status, 200, "{}", du.text);
    assert_eq!(du.header("cache-control"), Some("no-store"));
    let url = du.json["url"].as_str().unwrap().to_string();
    assert!(
        url.starts_with(&format!("{}/v1/assets/{id}/content?", app.base)),
        "{url}"
    );
    let expires_at: chrono::DateTime<chrono::Utc> =
        du.json["expires_at"].as_str().unwrap().parse().unwrap();
    let lifetime = (expires_at - chrono::Utc::now()).num_seconds();
    assert!((290..=300).contains(&lifetime), "{lifetime}");
    assert!(url.contains(&format!("org={}", s.provider.org_id)));
    assert!(url.contains(&format!("by={}", s.provider.user_id)));

    let (status, headers, body) = fetch(&app, &url, None, &[]);
    assert_eq!(status, 200);
    assert_eq!(body, data);
    assert_eq!(header(&headers, "content-security-policy"), "sandbox");
    assert_eq!(header(&headers, "x-content-type-options"), "nosniff");
    assert!(header(&headers, "content-disposition").starts_with("attachment"));
    let (status, _, body) = fetch(&app, &url, None, &[("range", "bytes=1-3")]);
    assert_eq!((status, body), (206, data[1..4].to_vec()));

    // Any change is refused: the signature, the expiry, the organization, the key, the asset.
    let last = url.chars().last().unwrap();
    let flipped = format!(
        "{}{}",
        &url[..url.len() - 1],
        if last == '0' { '1' } else { '0' }
    );
    let query: Vec<(String, String)> = url::form_urlencoded_pairs(&url);
    let with = |name: &str, value: &str| {
        let q: Vec<String> = query
            .iter()
            .map(|(k, v)| {
                if k == name {
                    format!("{k}={value}")
                } else {
                    format!("{k}={v}")
                }
            })
            .collect();
        format!("{}?{}", url.split('?').next().unwrap(), q.join("&"))
    };
    let expires: i64 = query
        .iter()
        .find(|(k, _)| k == "expires")
        .unwrap()
        .1
        .parse()
        .unwrap();
    let outsider = app.signup();
    let tampered = [
        flipped,
        with("expires", &(expires + 3600).to_string()),
        with("expires", &format!("0{expires}")),
        with("org", &outsider.org_id),
        with("grant", "grt_x"),
        with("by", &outsider.user_id),
        with("kid", "sk_unknown"),
        with("sig", "zz"),
        with("sig", ""),
        url.replace(&id, &other),
        url.split("&sig=").next().unwrap().to_string(),
    ];
    for bad in &tampered {
        let r = client().get(bad).send().map(reply).unwrap();
        assert_eq!(r.problem(403), "invalid_signature", "{bad}");
    }
    // A header does not rescue a bad signature.
    let r = client()
        .get(&tampered[0])
        .bearer_auth(t)
        .send()
        .map(reply)
        .unwrap();
    assert_eq!(r.status, 403);

    // Expiry, on the server's clock.
    let short = app.post(
        &format!("/v1/assets/{id}/download-url"),
        Some(t),
        json!({"expires_in": 60}),
    );
    let short = short.json["url"].as_str().unwrap().to_string();
    app.clock.advance(chrono::Duration::seconds(58));
    assert_eq!(fetch(&app, &short, None, &[]).0, 200);
    app.clock.advance(chrono::Duration::seconds(3));
    let r = client().get(&short).send().map(reply).unwrap();
    assert_eq!(r.problem(403), "url_expired");
    assert_eq!(
        fetch(&app, &url, None, &[]).0,
        200,
        "the 300 s URL still works"
    );

    // Lifetimes are 1..=3600 seconds.
    for bad in [
        json!({"expires_in": 0}),
        json!({"expires_in": 3601}),
        json!({"expires_in": "60"}),
        json!({"expires_in": 1.5}),
    ] {
        let r = app.post(
            &format!("/v1/assets/{id}/download-url"),
            Some(t),
            bad.clone(),
        );
        assert_eq!(r.status, 422, "{bad}: {}", r.text);
        assert_eq!(r.fields(), vec!["expires_in"], "{bad}");
    }
    let long = app.post(
        &format!("/v1/assets/{id}/download-url"),
        Some(t),
        json!({"expires_in": 3600}),
    );
    assert_eq!(long.status, 200, "{}", long.text);
    assert_eq!(
        app.post(&format!("/v1/assets/{id}/download-url"), None, json!({}))
            .problem(401),
        "unauthorized"
    );
    assert_eq!(
        app.post("/v1/assets/ast_nope/download-url", Some(t), json!({}))
            .problem(404),
        "not_found"
    );
    // No credentials and no signature: 401.
    assert_eq!(
        app.get(&format!("/v1/assets/{id}/content"), None)
            .problem(401),
        "unauthorized"
    );

    // A URL dies with the member it was issued to, or the API key.
    let colleague = app.add_member(&s.provider, "member");
    let (key_id, key) = app.api_key(&s.provider, &["read"]);
    let url_of = |token: &str| {
        app.post(
            &format!("/v1/assets/{id}/download-url"),
            Some(token),
            json!({}),
        )
        .json["url"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (by_colleague, by_key) = (url_of(&colleague.token), url_of(&key));
    assert!(by_key.contains(&format!("by={key_id}")));
    assert_eq!(fetch(&app, &by_colleague, None, &[]).0, 200);
    assert_eq!(fetch(&app, &by_key, None, &[]).0, 200);
    let removed = app.delete(
        &format!("/v1/organization/members/{}", colleague.user_id),
        Some(&s.provider.token),
    );
    assert_eq!(removed.status, 204);
    let r = client().get(&by_colleague).send().map(reply).unwrap();
    assert_eq!(r.problem(403), "url_revoked");
    assert_eq!(fetch(&app, &by_key, None, &[]).0, 200);
    let revoked = app.delete(&format!("/v1/api-keys/{key_id}"), Some(&s.provider.token));
    assert_eq!(revoked.status, 204);
    let r = client().get(&by_key).send().map(reply).unwrap();
    assert_eq!(r.problem(403), "url_revoked");
    assert_eq!(
        fetch(&app, &url, None, &[]).0,
        200,
        "the admin's URL lives on"
    );
}

/// `k=v` pairs of a URL's query, undecoded (the ids in it need no decoding).
mod url {
    pub fn form_urlencoded_pairs(url: &str) -> Vec<(String, String)> {
        url.split_once('?')
            .map(|(_, q)| q)
            .unwrap_or("")
            .split('&')
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

#[test]
fn others_read_only_what_they_can_see_and_hold_a_grant_for() {
    let app = TestApp::spawn();
    let buyer = app.signup();
    let s = shop(&app, "public", &[]);
    let t = &s.provider.token;
    let id = put(&app, t, &s.revision, "obs.csv", b"a,b\n1,2\n").json["id"]
        .as_str()
        .unwrap()
        .to_string();
    let content = format!("/v1/assets/{id}/content");
    let url_path = format!("/v1/assets/{id}/download-url");

    // While the revision is open (and the listing a draft), others cannot see it at all.
    assert_eq!(
        app.get(&content, Some(&buyer.token)).problem(404),
        "not_found"
    );
    s.finalize_and_publish(&app);
    // Now they can see it, but hold no grant: 403 for reads and for signed URLs.
    assert_eq!(
        app.get(&content, Some(&buyer.token)).problem(403),
        "no_live_grant"
    );
    assert_eq!(
        app.post(&url_path, Some(&buyer.token), json!({}))
            .problem(403),
        "no_live_grant"
    );
    // A provider's key without the read scope may not read either.
    let write_only = app.api_key(&s.provider, &["write"]).1;
    assert_eq!(
        app.get(&content, Some(&write_only)).problem(403),
        "forbidden"
    );
    let read_key = app.api_key(&s.provider, &["read"]).1;
    assert_eq!(fetch(&app, &content, Some(&read_key), &[]).0, 200);

    // A private listing that does not name you: 404, as if it did not exist.
    let named = app.signup();
    let p = shop(&app, "private", &[&named.org_id]);
    let secret = put(&app, &p.provider.token, &p.revision, "s.csv", b"secret").json["id"]
        .as_str()
        .unwrap()
        .to_string();
    p.finalize_and_publish(&app);
    assert_eq!(
        app.get(&format!("/v1/assets/{secret}/content"), Some(&buyer.token))
            .problem(404),
        "not_found"
    );
    assert_eq!(
        app.post(
            &format!("/v1/assets/{secret}/download-url"),
            Some(&buyer.token),
            json!({})
        )
        .problem(404),
        "not_found"
    );
    assert_eq!(
        app.get(&format!("/v1/assets/{secret}/content"), Some(&named.token))
            .problem(403),
        "no_live_grant"
    );
    assert_eq!(
        app.get("/v1/assets/ast_nope/content", Some(&buyer.token))
            .problem(404),
        "not_found"
    );

    // A signed URL re-checks at use: the provider's own keeps working; a revoked revision
    // stops serving others (and still serves its provider).
    let provider_url = app.post(&url_path, Some(t), json!({})).json["url"]
        .as_str()
        .unwrap()
        .to_string();
    let revoke = app.post(
        &format!("/v1/revisions/{}/revoke", s.revision),
        Some(t),
        json!({"reason": "wrong units"}),
    );
    assert_eq!(revoke.status, 200, "{}", revoke.text);
    assert_eq!(
        app.get(&content, Some(&buyer.token)).problem(403),
        "revision_revoked"
    );
    assert_eq!(fetch(&app, &content, Some(t), &[]).0, 200);
    assert_eq!(fetch(&app, &provider_url, None, &[]).0, 200);
    let _ = &s.dataset;
}

#[test]
fn every_read_is_audited_with_the_bytes_sent() {
    let app = TestApp::spawn();
    let s = shop(&app, "public", &[]);
    let t = &s.provider.token;
    let data = Noise::bytes(8, 70_000);
    let id = put(&app, t, &s.revision, "obs.csv", &data).json["id"]
        .as_str()
        .unwrap()
        .to_string();
    let content = format!("/v1/assets/{id}/content");

    assert_eq!(fetch(&app, &content, Some(t), &[]).0, 200);
    assert_eq!(
        fetch(&app, &content, Some(t), &[("range", "bytes=100-199")]).0,
        206
    );
    let (key_id, key) = app.api_key(&s.provider, &["read"]);
    assert_eq!(
        fetch(&app, &content, Some(&key), &[("range", "bytes=-10")]).0,
        206
    );
    let url = app
        .post(&format!("/v1/assets/{id}/download-url"), Some(t), json!({}))
        .json["url"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(fetch(&app, &url, None, &[]).0, 200);
    // Refusals and unsatisfiable ranges read nothing, and record no read.
    assert_eq!(
        fetch(&app, &content, Some(t), &[("range", "bytes=999999-")]).0,
        416
    );

    let events = read_events(&app, &id, 4);
    assert_eq!(events.len(), 4, "{events:?}");
    let find = |actor: &str, range: Value| {
        events
            .iter()
            .find(|e| e.actor == actor && e.detail["range"] == range)
            .unwrap_or_else(|| panic!("no read by {actor} with range {range}: {events:?}"))
    };
    let full = find(&s.provider.user_id, Value::Null);
    assert_eq!(full.organization_id, s.provider.org_id);
    assert_eq!(full.grant_id, None, "the provider reads under no grant");
    assert_eq!(full.client_address.as_deref(), Some("127.0.0.1"));
    assert_eq!(full.detail["bytes_sent"], 70_000);
    assert_eq!(full.detail["complete"], true);
    assert_eq!(full.detail["status"], 200);
    assert_eq!(full.detail["via"], "credentials");
    assert_eq!(
        find(&s.provider.user_id, json!("100-199/70000")).detail["bytes_sent"],
        100
    );
    assert_eq!(
        find(&key_id, json!("69990-69999/70000")).detail["bytes_sent"],
        10
    );
    let signed = find(&format!("signed_url:{}", s.provider.user_id), Value::Null);
    assert_eq!(signed.detail["via"], "signed_url");
    assert_eq!(signed.detail["bytes_sent"], 70_000);

    // A client that stops reading early: the event records what was actually sent.
    let big = 48 << 20;
    let r = upload(
        &app,
        t,
        &s.revision,
        "big.bin",
        None,
        Body::sized(Noise::new(9, big), big),
    )
    .unwrap();
    let big_id = r.json["id"].as_str().unwrap().to_string();
    {
        let mut res = client()
            .get(format!("{}/v1/assets/{big_id}/content", app.base))
            .bearer_auth(t)
            .send()
            .unwrap();
        let mut first = vec![0u8; 4096];
        res.read_exact(&mut first).unwrap();
    }
    let cut = read_events(&app, &big_id, 1);
    assert_eq!(cut.len(), 1);
    assert_eq!(cut[0].detail["complete"], false, "{:?}", cut[0].detail);
    assert!(
        cut[0].detail["bytes_sent"].as_u64().unwrap() < big,
        "{:?}",
        cut[0].detail
    );
}

#[test]
fn the_s3_backend_stores_the_objects() {
    let Some(s3) = s3_settings() else {
        println!(
            "skipped: TEST_S3_ENDPOINT is not set (.ci/run starts a local S3 server and sets it)"
        );
        return;
    };
    let app = TestApp::spawn();
    let s = shop(&app, "public", &[]);
    let data = Noise::bytes(10, (8 << 20) + 5);
    let r = put(&app, &s.provider.token, &s.revision, "obs.csv", &data);
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.json["id"].as_str().unwrap();
    let objects = stored_objects(&app, &s.provider.org_id);
    assert_eq!(
        objects,
        vec![format!("{}/{}/{id}", s.provider.org_id, s.revision)],
        "in bucket {}",
        s3.bucket
    );
    assert!(!app
        .data_dir()
        .join("objects")
        .join(&s.provider.org_id)
        .exists());
    let (status, _, body) = fetch(
        &app,
        &format!("/v1/assets/{id}/content"),
        Some(&s.provider.token),
        &[("range", "bytes=8388600-")],
    );
    assert_eq!((status, body), (206, data[8_388_600..].to_vec()));
}
