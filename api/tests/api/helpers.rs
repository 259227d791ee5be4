//! The test harness: a real server on 127.0.0.1:0 over a fresh database (SQLite file, or a
//! PostgreSQL database of its own when `TEST_DATABASE_URL` names a server), dropped after;
//! and a client that reads like a user's script.

use std::sync::mpsc;
use std::sync::Arc;

use api::config::{CommonSettings, LogFormat, ServeSettings};
use api::domain::clock::ManualClock;
use api::domain::outbox::{Courier, Report};
use api::server::Application;
use reqwest::blocking::Client;
use reqwest::Method;
use schema::diesel::{Connection, PgConnection, RunQueryDsl};
use serde_json::{json, Value};

pub const PASSWORD: &str = "correct horse battery staple 9";

/// A database for one test, removed when the test ends.
pub struct TestDb {
    pub url: String,
    admin_url: Option<String>,
    name: String,
    _dir: Option<tempdir::Dir>,
}

mod tempdir {
    /// A temporary directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    pub fn new() -> Dir {
        let path = std::env::temp_dir().join(format!(
            "marketplace-test-{}",
            api::domain::ids::random_token(12)
        ));
        std::fs::create_dir_all(&path).expect("temp dir");
        Dir(path)
    }
}

impl TestDb {
    pub fn new() -> TestDb {
        match std::env::var("TEST_DATABASE_URL")
            .ok()
            .filter(|u| u.starts_with("postgres"))
        {
            Some(admin_url) => {
                let name = format!("test_{}", api::domain::ids::random_token(12).to_lowercase());
                let mut admin = PgConnection::establish(&admin_url)
                    .expect("TEST_DATABASE_URL must reach PostgreSQL");
                schema::diesel::sql_query(format!("CREATE DATABASE {name}"))
                    .execute(&mut admin)
                    .expect("create db");
                let base = admin_url
                    .rsplit_once('/')
                    .map(|(b, _)| b)
                    .unwrap_or(&admin_url);
                TestDb {
                    url: format!("{base}/{name}"),
                    admin_url: Some(admin_url),
                    name,
                    _dir: None,
                }
            }
            None => {
                let dir = tempdir::new();
                let url = format!("sqlite://{}", dir.0.join("test.sqlite3").display());
                TestDb {
                    url,
                    admin_url: None,
                    name: String::new(),
                    _dir: Some(dir),
                }
            }
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.admin_url.is_some()
    }

    pub fn connect(&self) -> schema::DbConnection {
        schema::ConnectionManager::new(&self.url)
            .establish()
            .expect("test database connection")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(admin_url) = &self.admin_url {
            if let Ok(mut admin) = PgConnection::establish(admin_url) {
                let _ = schema::diesel::sql_query(format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ))
                .execute(&mut admin);
            }
        }
    }
}

pub struct TestApp {
    server: actix_web::dev::ServerHandle,
    courier: Arc<Courier>,
    pub base: String,
    pub clock: ManualClock,
    pub db: TestDb,
    http: Client,
    data_dir: tempdir::Dir,
}

/// A response, with its body parsed when it is JSON.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a problem document with this status, and returns its `code`.
    #[track_caller]
    pub fn problem(&self, status: u16) -> &str {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.text
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{}",
            self.text
        );
        assert_eq!(self.json["status"], status);
        self.json["code"].as_str().expect("problem has a code")
    }

    /// The fields named in a validation problem.
    pub fn fields(&self) -> Vec<String> {
        self.json["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e["field"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A signed-up user with its tokens.
#[derive(Debug, Clone)]
pub struct User {
    pub email: String,
    pub password: String,
    pub token: String,
    pub refresh: String,
    pub user_id: String,
    pub org_id: String,
}

pub struct Builder {
    serve: ServeSettings,
}

impl Builder {
    pub fn auth_rate_limit(mut self, per_minute: u32) -> Self {
        self.serve.auth_rate_limit = per_minute;
        self
    }

    /// The largest asset upload the server accepts.
    pub fn max_asset_bytes(mut self, bytes: u64) -> Self {
        self.serve.max_asset_bytes = bytes;
        self
    }

    /// Let webhook endpoints be loopback and private addresses (local receivers).
    pub fn webhook_allow_private(mut self, allow: bool) -> Self {
        self.serve.webhook_allow_private = allow;
        self
    }

    /// Send e-mails over SMTP to this server instead of writing files.
    pub fn smtp_url(mut self, url: &str) -> Self {
        self.serve.smtp_url = Some(url.to_string());
        self
    }

    /// Run the outbox worker as `serve` does, every `ms` milliseconds (off by default: tests
    /// deliver with `deliver_outbox`).
    pub fn outbox_poll_ms(mut self, ms: u64) -> Self {
        self.serve.outbox_poll_ms = ms;
        self
    }

    /// How many of the newest matches `sort=relevance` ranks by text rank.
    pub fn catalog_relevance_window(mut self, matches: i64) -> Self {
        self.serve.catalog_relevance_window = matches;
        self
    }

    /// Payment settings: Stripe key, webhook secrets, API base (a mock), grace days.
    pub fn payments(mut self, payments: api::config::PaymentSettings) -> Self {
        self.serve.payments = payments;
        self
    }

    pub fn spawn(self) -> TestApp {
        let db = TestDb::new();
        let data_dir = tempdir::new();
        let common = CommonSettings {
            data_dir: data_dir.0.clone(),
            database_url: Some(db.url.clone()),
            database_pool_size: 8,
            log_format: LogFormat::Text,
        };
        let clock = ManualClock::new(chrono::Utc::now());
        let app_clock = Arc::new(clock.clone());
        let serve = ServeSettings {
            workers: Some(2),
            ..self.serve
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                match Application::build(&common, serve, app_clock) {
                    Ok(app) => {
                        tx.send(Ok((app.port(), app.handle(), app.courier()))).ok();
                        let _ = app.run_until_stopped().await;
                    }
                    Err(e) => {
                        tx.send(Err(format!("{e:#}"))).ok();
                    }
                }
            })
        });
        let (port, server, courier) = rx.recv().expect("server thread").expect("server starts");
        TestApp {
            server,
            courier,
            base: format!("http://127.0.0.1:{port}"),
            clock,
            db,
            http: Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            data_dir,
        }
    }
}

/// A local S3-compatible server to store assets in, when `TEST_S3_ENDPOINT` names one
/// (with `TEST_S3_BUCKET`, default `marketplace-test`, and `TEST_S3_REGION`, default
/// `us-east-1`; credentials from the usual `AWS_*` variables).
pub struct S3Settings {
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
}

pub fn s3_settings() -> Option<S3Settings> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    Some(S3Settings {
        endpoint: var("TEST_S3_ENDPOINT")?,
        bucket: var("TEST_S3_BUCKET").unwrap_or_else(|| "marketplace-test".into()),
        region: var("TEST_S3_REGION").unwrap_or_else(|| "us-east-1".into()),
    })
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // Stop serving before the database is dropped (fields drop after this).
        actix_web::rt::System::new().block_on(self.server.stop(false));
    }
}

impl TestApp {
    pub fn builder() -> Builder {
        let s3 = s3_settings();
        Builder {
            serve: ServeSettings {
                auth_rate_limit: 100_000,
                s3_bucket: s3.as_ref().map(|s| s.bucket.clone()),
                s3_endpoint: s3.as_ref().map(|s| s.endpoint.clone()),
                s3_region: s3.map(|s| s.region),
                ..ServeSettings::default()
            },
        }
    }

    pub fn spawn() -> TestApp {
        Self::builder().spawn()
    }

    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir.0
    }

    /// The events written to the organization's webhook endpoints (delivered or not).
    pub fn webhook_events(&self, organization_id: &str) -> Vec<Value> {
        use schema::diesel::{ExpressionMethods, QueryDsl};
        use schema::schema::outbox::dsl as o;
        let rows: Vec<String> = o::outbox
            .filter(o::organization_id.eq(organization_id))
            .filter(o::kind.eq("webhook"))
            .select(o::payload)
            .load(&mut self.db.connect())
            .unwrap();
        rows.iter()
            .map(|p| serde_json::from_str::<Value>(p).unwrap()["event"].clone())
            .collect()
    }

    /// Delivers the outbox messages due now (at the test clock's time), as the worker would.
    pub fn deliver_outbox(&self) -> Report {
        let courier = self.courier.clone();
        actix_web::rt::System::new()
            .block_on(async move { courier.deliver_due().await })
            .expect("outbox delivery")
    }

    /// Any request; `token` goes into `Authorization: Bearer`.
    pub fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = req.send().expect("request sent");
        reply(res)
    }

    pub fn raw(&self, method: Method, path: &str, content_type: &str, body: Vec<u8>) -> Reply {
        self.raw_as(method, path, None, &[("content-type", content_type)], body)
    }

    /// Bytes as they are (not a `Value` serialized), with a token and headers.
    pub fn raw_as(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Reply {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        reply(req.body(body).send().expect("request sent"))
    }

    pub fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.send(Method::GET, path, token, None, &[])
    }

    pub fn post(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        self.send(Method::POST, path, token, Some(&body), &[])
    }

    pub fn patch(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        self.send(Method::PATCH, path, token, Some(&body), &[])
    }

    pub fn delete(&self, path: &str, token: Option<&str>) -> Reply {
        self.send(Method::DELETE, path, token, None, &[])
    }

    pub fn signup(&self) -> User {
        let tag = api::domain::ids::random_token(8).to_lowercase();
        let email = format!("user-{tag}@example.com");
        let r = self.post(
            "/v1/auth/signup",
            None,
            json!({"email": email, "password": PASSWORD, "name": format!("User {tag}"), "organization_name": format!("Org {tag}")}),
        );
        assert_eq!(r.status, 201, "signup: {}", r.text);
        User {
            email,
            password: PASSWORD.into(),
            token: r.json["access_token"].as_str().unwrap().into(),
            refresh: r.json["refresh_token"].as_str().unwrap().into(),
            user_id: r.json["user"]["id"].as_str().unwrap().into(),
            org_id: r.json["organization"]["id"].as_str().unwrap().into(),
        }
    }

    pub fn sign_in(&self, email: &str, password: &str) -> Reply {
        self.post(
            "/v1/auth/token",
            None,
            json!({"email": email, "password": password}),
        )
    }

    /// The same user with a fresh access token (after the test moved the clock past expiry).
    pub fn again(&self, user: &User) -> User {
        let t = self.sign_in(&user.email, &user.password);
        assert_eq!(t.status, 200, "sign-in: {}", t.text);
        User {
            token: t.json["access_token"].as_str().unwrap().into(),
            ..user.clone()
        }
    }

    /// Adds a member with `role` to the admin's organization and signs them in.
    pub fn add_member(&self, admin: &User, role: &str) -> User {
        let tag = api::domain::ids::random_token(8).to_lowercase();
        let email = format!("{role}-{tag}@example.com");
        let r = self.post(
            "/v1/organization/members",
            Some(&admin.token),
            json!({"email": email, "name": format!("Member {tag}"), "password": PASSWORD, "role": role}),
        );
        assert_eq!(r.status, 201, "add member: {}", r.text);
        let t = self.sign_in(&email, PASSWORD);
        assert_eq!(t.status, 200, "member sign-in: {}", t.text);
        User {
            email,
            password: PASSWORD.into(),
            token: t.json["access_token"].as_str().unwrap().into(),
            refresh: t.json["refresh_token"].as_str().unwrap().into(),
            user_id: r.json["id"].as_str().unwrap().into(),
            org_id: admin.org_id.clone(),
        }
    }

    /// Creates an API key with these scopes; returns (id, secret).
    pub fn api_key(&self, admin: &User, scopes: &[&str]) -> (String, String) {
        let r = self.post(
            "/v1/api-keys",
            Some(&admin.token),
            json!({"name": "test key", "scopes": scopes}),
        );
        assert_eq!(r.status, 201, "api key: {}", r.text);
        (
            r.json["id"].as_str().unwrap().into(),
            r.json["key"].as_str().unwrap().into(),
        )
    }

    /// Every item of a paginated list, following `next_cursor`.
    pub fn all_pages(&self, path: &str, token: &str, limit: u32) -> Vec<Value> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let sep = if path.contains('?') { '&' } else { '?' };
            let mut url = format!("{path}{sep}limit={limit}");
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let r = self.get(&url, Some(token));
            assert_eq!(r.status, 200, "{}", r.text);
            items.extend(r.json["data"].as_array().unwrap().iter().cloned());
            match r.json["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return items,
            }
        }
    }
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

/// Bills `period` and finalizes the customer's invoice; returns it (open).
pub fn open_invoice(app: &TestApp, fin: &User, customer: &User, period: &str) -> Value {
    let run = app.post(
        "/v1/billing-runs",
        Some(&fin.token),
        json!({"period": period}),
    );
    assert_eq!(run.status, 201, "{}", run.text);
    let list = app.get(
        &format!("/v1/invoices?period={period}&customer={}", customer.org_id),
        Some(&fin.token),
    );
    let id = list.json["data"][0]["id"]
        .as_str()
        .expect("an invoice")
        .to_string();
    let f = app.post(
        &format!("/v1/invoices/{id}/finalize"),
        Some(&fin.token),
        json!({}),
    );
    assert_eq!(f.json["status"], "open", "{}", f.text);
    f.json
}
