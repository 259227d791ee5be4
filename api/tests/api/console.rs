//! The console through HTTP, as a browser uses it: cookies, forms and their CSRF tokens.
//! Isolation by URL, CSRF refusals, sign-out, removed members, expiry, escaping.

use std::collections::BTreeMap;

use chrono::Duration;
use reqwest::blocking::Client;
use serde_json::json;

use crate::helpers::{TestApp, User, PASSWORD};

/// A browser: a cookie jar (name → value, `Path=/console` cookies only) and no redirects.
struct Browser<'a> {
    app: &'a TestApp,
    http: Client,
    cookies: BTreeMap<String, String>,
}

struct Page {
    status: u16,
    location: Option<String>,
    headers: reqwest::header::HeaderMap,
    set_cookies: Vec<String>,
    text: String,
}

impl Page {
    /// The value of the first hidden `csrf` field on the page.
    fn csrf(&self) -> String {
        self.hidden("csrf")
    }

    /// The value of the first field named `name` on the page.
    fn hidden(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self
            .text
            .find(&marker)
            .unwrap_or_else(|| panic!("a form with a {name} field"))
            + marker.len();
        self.text[start..].split('"').next().unwrap().to_string()
    }

    fn has_sign_in_form(&self) -> bool {
        self.text.contains("type=\"password\"")
    }

    fn sets_session(&self) -> bool {
        self.set_cookies
            .iter()
            .any(|c| c.starts_with("console_session=") && !c.starts_with("console_session=;"))
    }
}

impl<'a> Browser<'a> {
    fn new(app: &'a TestApp) -> Self {
        Browser {
            app,
            http: Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: BTreeMap::new(),
        }
    }

    fn send(&mut self, req: reqwest::blocking::RequestBuilder) -> Page {
        let cookie = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let req = if cookie.is_empty() {
            req
        } else {
            req.header("cookie", cookie)
        };
        let res = req.send().expect("request");
        let set_cookies: Vec<String> = res
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect();
        for c in &set_cookies {
            let (pair, attrs) = c.split_once(';').unwrap_or((c, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() || attrs.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_string(), value.to_string());
            }
        }
        Page {
            status: res.status().as_u16(),
            location: res
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            headers: res.headers().clone(),
            set_cookies,
            text: res.text().unwrap_or_default(),
        }
    }

    fn get(&mut self, path: &str) -> Page {
        let req = self.http.get(format!("{}{path}", self.app.base));
        self.send(req)
    }

    fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let req = self
            .http
            .post(format!("{}{path}", self.app.base))
            .form(form);
        self.send(req)
    }

    fn sign_in(&mut self, email: &str, password: &str) -> Page {
        let csrf = self.get("/console").csrf();
        self.post(
            "/console/sign-in",
            &[("csrf", &csrf), ("email", email), ("password", password)],
        )
    }

    fn signed_in(app: &'a TestApp, user: &User) -> Self {
        let mut b = Browser::new(app);
        let page = b.sign_in(&user.email, &user.password);
        assert_eq!(page.status, 303, "sign-in: {}", page.text);
        assert!(page.sets_session());
        b
    }

    fn session_cookie(&self) -> Option<String> {
        self.cookies.get("console_session").cloned()
    }
}

/// A platform user, made as the CLI makes one.
fn platform_finance(app: &TestApp) -> User {
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
    User {
        email,
        password: PASSWORD.into(),
        token: String::new(),
        refresh: String::new(),
        user_id: String::new(),
        org_id: String::new(),
    }
}

fn listing(app: &TestApp, p: &User, title: &str, description: &str) -> String {
    let l = app.post(
        "/v1/listings",
        Some(&p.token),
        json!({"title": title, "summary": "Daily rates", "description": description, "visibility": "public"}),
    );
    assert_eq!(l.status, 201, "{}", l.text);
    l.json["id"].as_str().unwrap().to_string()
}

/// A published listing with one monthly offer of 12.34 USD; returns (listing, offer).
fn published(app: &TestApp, p: &User, title: &str, description: &str) -> (String, String) {
    let lid = listing(app, p, title, description);
    let o = app.post(
        &format!("/v1/listings/{lid}/offers"),
        Some(&p.token),
        json!({"name": "Monthly", "currency": "USD", "billing_interval": "monthly", "recurring_amount": 1234,
               "term_months": 1, "trial_days": 0, "requires_approval": false, "auto_renew_default": false}),
    );
    assert_eq!(o.status, 201, "{}", o.text);
    let r = app.post(
        &format!("/v1/listings/{lid}/publish"),
        Some(&p.token),
        json!({}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    (lid, o.json["id"].as_str().unwrap().to_string())
}

#[test]
fn the_catalogs_next_page_keeps_the_provider_filter() {
    let app = TestApp::spawn();
    let (p, other, b) = (app.signup(), app.signup(), app.signup());
    for i in 0..21 {
        published(&app, &p, &format!("Tide table {i:02}"), "");
    }
    published(&app, &other, "Another provider's rates", "");
    let mut browser = Browser::signed_in(&app, &b);
    let first = browser.get(&format!(
        "/console/catalog?sort=title&provider={}",
        p.org_id
    ));
    assert_eq!(first.status, 200, "{}", first.text);
    let next = first
        .text
        .split("href=\"")
        .filter_map(|h| h.split('"').next())
        .find(|h| h.contains("cursor="))
        .expect("a next page")
        .replace("&amp;", "&");
    assert!(
        next.replace("%5F", "_")
            .contains(&format!("provider={}", p.org_id)),
        "{next}"
    );
    let second = browser.get(&next);
    assert_eq!(second.status, 200, "{}", second.text);
    assert!(second.text.contains("Tide table 20"), "{}", second.text);
    assert!(!second.text.contains("Another provider"), "{}", second.text);
}

/// Two customers subscribed to one offer, billed for this month: their invoice ids.
fn two_invoices(app: &TestApp) -> (User, User, String, String) {
    let p = app.signup();
    let (_, offer) = published(app, &p, "Rates", "");
    let (b0, b1) = (app.signup(), app.signup());
    for b in [&b0, &b1] {
        let s = app.post(
            "/v1/subscriptions",
            Some(&b.token),
            json!({"offer_id": offer}),
        );
        assert_eq!(s.status, 201, "{}", s.text);
    }
    let fin = platform_finance(app);
    let fin_token = app.again(&fin).token;
    let period = app.clock.now_for_tests().format("%Y-%m").to_string();
    let r = app.post(
        "/v1/billing-runs",
        Some(&fin_token),
        json!({"period": period}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let invoices = app.all_pages(&format!("/v1/invoices?period={period}"), &fin_token, 200);
    let id_of = |org: &str| {
        invoices
            .iter()
            .find(|i| i["customer"]["id"] == org)
            .map(|i| i["id"].as_str().unwrap().to_string())
            .expect("an invoice per customer")
    };
    let (i0, i1) = (id_of(&b0.org_id), id_of(&b1.org_id));
    (b0, b1, i0, i1)
}

#[test]
fn another_organizations_invoice_and_listing_are_404() {
    let app = TestApp::spawn();
    let (b0, _b1, own, other) = two_invoices(&app);
    let mut br = Browser::signed_in(&app, &b0);
    let mine = br.get(&format!("/console/invoices/{own}"));
    assert_eq!(mine.status, 200, "{}", mine.text);
    assert!(mine.text.contains("12.34 USD"), "{}", mine.text);
    let theirs = br.get(&format!("/console/invoices/{other}"));
    assert_eq!(theirs.status, 404);
    assert!(theirs.text.contains("<h1>Not found</h1>"), "an HTML page");
    // The list shows only their own invoice; the finance actions are not offered.
    let list = br.get("/console/invoices");
    assert!(list.text.contains(&own) && !list.text.contains(&other));
    assert!(!mine.text.contains("/finalize"));
    assert_eq!(
        br.get(&format!("/console/invoices/{own}/finalize")).status,
        403
    );

    // Another organization's draft listing: 404, exactly as if it did not exist.
    let provider = app.signup();
    let draft = listing(&app, &provider, "Secret draft", "");
    assert_eq!(br.get(&format!("/console/listings/{draft}")).status, 404);
    assert_eq!(br.get("/console/listings/lst_nosuchlisting").status, 404);
    let mut owner = Browser::signed_in(&app, &provider);
    let page = owner.get(&format!("/console/listings/{draft}"));
    assert_eq!(page.status, 200);
    assert!(page.text.contains("Secret draft"));
    // Unknown console pages are HTML 404 pages too.
    let unknown = br.get("/console/no-such-page");
    assert_eq!(unknown.status, 404);
    assert!(unknown.text.contains("Page not found"));
}

#[test]
fn forms_without_a_valid_csrf_token_are_refused_and_set_no_session() {
    let app = TestApp::spawn();
    let user = app.signup();
    // The sign-in form: valid credentials but no token, or a token not matching the cookie.
    let mut b = Browser::new(&app);
    let page = b.post(
        "/console/sign-in",
        &[("email", &user.email), ("password", &user.password)],
    );
    assert_eq!(page.status, 403, "{}", page.text);
    assert!(!page.sets_session());
    let page = b.post(
        "/console/sign-in",
        &[
            ("csrf", "forged"),
            ("email", &user.email),
            ("password", &user.password),
        ],
    );
    assert_eq!(page.status, 403);
    assert!(!page.sets_session());
    assert!(b.get("/console").has_sign_in_form());
    // A token from another browser's cookie does not pass either.
    let mut other = Browser::new(&app);
    let foreign = other.get("/console").csrf();
    let mut fresh = Browser::new(&app);
    fresh.get("/console");
    let page = fresh.post(
        "/console/sign-in",
        &[
            ("csrf", &foreign),
            ("email", &user.email),
            ("password", &user.password),
        ],
    );
    assert_eq!(page.status, 403);
    assert!(!page.sets_session());

    // Signed in: a form without the session's token does nothing, even with the cookie.
    let fin = platform_finance(&app);
    let mut f = Browser::signed_in(&app, &fin);
    let period = app.clock.now_for_tests().format("%Y-%m").to_string();
    for form in [
        vec![("period", period.as_str())],
        vec![("period", period.as_str()), ("csrf", "x")],
    ] {
        let page = f.post("/console/billing-runs", &form);
        assert_eq!(page.status, 403, "{}", page.text);
        assert!(!page.sets_session());
    }
    let runs = f.get("/console/billing-runs");
    assert!(
        runs.text.contains("No billing run yet"),
        "no run was started"
    );
    let page = f.post("/console/sign-out", &[("csrf", "x")]);
    assert_eq!(page.status, 403);
    assert_eq!(f.get("/console/invoices").status, 200, "still signed in");
    // The session's own token works.
    let csrf = runs.csrf();
    let page = f.post(
        "/console/billing-runs",
        &[("csrf", &csrf), ("period", &period)],
    );
    assert_eq!(page.status, 303, "{}", page.text);
}

#[test]
fn sign_out_ends_the_session_and_its_cookie() {
    let app = TestApp::spawn();
    let user = app.signup();
    let mut b = Browser::signed_in(&app, &user);
    let home = b.get("/console");
    assert_eq!(home.status, 200);
    assert!(!home.has_sign_in_form());
    let cookie = b.session_cookie().unwrap();
    let set = b.post("/console/sign-out", &[("csrf", &home.csrf())]);
    assert_eq!(set.status, 303);
    assert!(set
        .set_cookies
        .iter()
        .any(|c| c.starts_with("console_session=;") || c.contains("Max-Age=0")));
    // The old cookie, replayed, is worthless.
    b.cookies.insert("console_session".into(), cookie);
    let page = b.get("/console/invoices");
    assert_eq!(page.status, 303);
    assert!(page.location.unwrap().starts_with("/console?next="));
    assert!(b.get("/console").has_sign_in_form());
}

#[test]
fn a_removed_members_session_stops_working_at_once() {
    let app = TestApp::spawn();
    let admin = app.signup();
    let member = app.add_member(&admin, "member");
    let mut b = Browser::signed_in(&app, &member);
    assert!(!b.get("/console").has_sign_in_form());
    let r = app.delete(
        &format!("/v1/organization/members/{}", member.user_id),
        Some(&admin.token),
    );
    assert_eq!(r.status, 204, "{}", r.text);
    assert!(b.get("/console").has_sign_in_form());
    assert_eq!(b.get("/console/catalog").status, 303);
    // And they cannot sign in again.
    let page = b.sign_in(&member.email, &member.password);
    assert_eq!(page.status, 401);
    assert!(!page.sets_session());
}

#[test]
fn sessions_expire_when_idle_and_after_their_lifetime() {
    let app = TestApp::spawn();
    let user = app.signup();
    let mut b = Browser::signed_in(&app, &user);
    app.clock.advance(Duration::minutes(59));
    assert!(
        !b.get("/console").has_sign_in_form(),
        "used within the idle time"
    );
    app.clock.advance(Duration::minutes(61));
    assert!(b.get("/console").has_sign_in_form(), "idle too long");

    let mut b = Browser::signed_in(&app, &user);
    for _ in 0..13 {
        app.clock.advance(Duration::minutes(55));
        assert!(
            !b.get("/console").has_sign_in_form(),
            "in use, under 12 hours"
        );
    }
    app.clock.advance(Duration::minutes(10));
    assert!(
        b.get("/console").has_sign_in_form(),
        "12 hours after sign-in, in use or not"
    );
}

#[test]
fn cookies_and_pages_carry_the_security_attributes() {
    let app = TestApp::spawn();
    let user = app.signup();
    let mut b = Browser::new(&app);
    let form = b.get("/console");
    let csp = form.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'self'") && csp.contains("script-src 'self'"));
    assert!(!csp.contains("unsafe-inline"));
    assert!(form
        .set_cookies
        .iter()
        .any(|c| c.starts_with("console_login_csrf=")
            && c.contains("HttpOnly")
            && c.contains("SameSite=Strict")));
    let page = b.sign_in(&user.email, &user.password);
    let session = page
        .set_cookies
        .iter()
        .find(|c| c.starts_with("console_session="))
        .unwrap();
    assert!(session.contains("HttpOnly") && session.contains("SameSite=Lax"));
    assert!(session.contains("Path=/console"));
    assert!(!session.contains("Secure"), "plain HTTP, no trusted proxy");
    // `X-Forwarded-Proto` from an untrusted peer is not believed.
    let mut b = Browser::new(&app);
    let csrf = b.get("/console").csrf();
    let req = b
        .http
        .post(format!("{}/console/sign-in", app.base))
        .header("x-forwarded-proto", "https")
        .form(&[
            ("csrf", csrf.as_str()),
            ("email", &user.email),
            ("password", &user.password),
        ]);
    let page = b.send(req);
    let session = page
        .set_cookies
        .iter()
        .find(|c| c.starts_with("console_session="))
        .unwrap();
    assert!(!session.contains("Secure"));
    // Wrong password: the error is next to the password field, no session.
    let mut b = Browser::new(&app);
    let page = b.sign_in(&user.email, "wrong password entirely");
    assert_eq!(page.status, 401);
    assert!(page.text.contains("f-password-error"));
    assert!(!page.sets_session());
    // After sign-in, the browser goes back where it was sent from, inside the console only.
    let mut b = Browser::new(&app);
    let page = b.get("/console/subscriptions");
    assert_eq!(
        page.location.as_deref(),
        Some("/console?next=%2Fconsole%2Fsubscriptions")
    );
    for (next, expected) in [
        ("/console/subscriptions", "/console/subscriptions"),
        ("https://evil.example/", "/console"),
        ("//evil.example", "/console"),
    ] {
        let mut b = Browser::new(&app);
        let csrf = b.get("/console?next=%2Fconsole%2Fsubscriptions").csrf();
        let page = b.post(
            "/console/sign-in",
            &[
                ("csrf", &csrf),
                ("email", &user.email),
                ("password", &user.password),
                ("next", next),
            ],
        );
        assert_eq!(page.location.as_deref(), Some(expected));
    }
}

#[test]
fn provider_text_is_escaped_everywhere_it_is_shown() {
    let app = TestApp::spawn();
    let provider = app.signup();
    let title = "<script>alert('title')</script><img src=x onerror=alert(1)>";
    let description = "# Rates\n<script>alert('desc')</script>\n<img src=x onerror=alert(2)>\n[x](javascript:alert(3))";
    let (lid, offer) = published(&app, &provider, title, description);
    let buyer = app.signup();
    let mut b = Browser::signed_in(&app, &buyer);
    for path in [
        format!("/console/listings/{lid}"),
        "/console/catalog?q=rates".to_string(),
        "/console/catalog".to_string(),
    ] {
        let page = b.get(&path);
        assert_eq!(page.status, 200, "{path}: {}", page.text);
        assert!(
            page.text.contains("Daily rates"),
            "{path} shows the listing"
        );
        assert!(!page.text.contains("<script>"), "{path}: {}", page.text);
        assert!(!page.text.contains("<img"), "{path}");
        assert!(!page.text.contains("href=\"javascript:"), "{path}");
        assert!(
            page.text.contains("&lt;script&gt;"),
            "{path} shows it as text"
        );
    }
    // A subscriber's message reaches the provider's page as text too.
    let page = b.get(&format!("/console/listings/{lid}"));
    let csrf = page.csrf();
    let field = format!("message_{offer}");
    let sent = b.post(
        "/console/subscriptions",
        &[
            ("csrf", &csrf),
            ("offer_id", &offer),
            ("listing_id", &lid),
            (&field, "<b onmouseover=alert(4)>hi</b>"),
        ],
    );
    assert_eq!(sent.status, 303, "{}", sent.text);
    let mine = b.get("/console/subscriptions?notice=subscribed");
    assert!(mine.text.contains("You are subscribed"));
    assert!(!mine.text.contains("<script>") && mine.text.contains("&lt;script&gt;"));
}

#[test]
fn the_subscriptions_page_lists_more_than_one_page_of_subscriptions_and_grants() {
    let app = TestApp::spawn();
    let (p, b) = (app.signup(), app.signup());
    let lid = listing(&app, &p, "Many terms", "");
    let offers: Vec<String> = (0..201)
        .map(|i| {
            let o = app.post(
                &format!("/v1/listings/{lid}/offers"),
                Some(&p.token),
                json!({"name": format!("Offer {i}"), "currency": "USD", "billing_interval": "monthly",
                       "recurring_amount": 100, "term_months": 1, "trial_days": 0,
                       "requires_approval": false, "auto_renew_default": false}),
            );
            assert_eq!(o.status, 201, "{}", o.text);
            o.json["id"].as_str().unwrap().to_string()
        })
        .collect();
    let publish = app.post(
        &format!("/v1/listings/{lid}/publish"),
        Some(&p.token),
        json!({}),
    );
    assert_eq!(publish.status, 200, "{}", publish.text);
    for offer in &offers {
        let s = app.post(
            "/v1/subscriptions",
            Some(&b.token),
            json!({"offer_id": offer}),
        );
        assert_eq!(s.status, 201, "{}", s.text);
    }
    let mut buyer = Browser::signed_in(&app, &b);
    let page = buyer.get("/console/subscriptions");
    assert_eq!(page.status, 200);
    // A row per subscription naming the listing, and a row per grant naming it and linking
    // its files: all 201 of each, past the API's largest page of 200.
    let links = page
        .text
        .matches(&format!("href=\"/console/listings/{lid}\""))
        .count();
    assert_eq!(links, 201 + 2 * 201);
    assert!(!page.text.contains("first 2,000 entries"));
}

#[test]
fn stale_and_repeated_forms_say_what_happened() {
    let app = TestApp::spawn();
    let (p, b) = (app.signup(), app.signup());
    let lid = listing(&app, &p, "Vetted rates", "");
    let offer = |name: &str| {
        let o = app.post(
            &format!("/v1/listings/{lid}/offers"),
            Some(&p.token),
            json!({"name": name, "currency": "USD", "billing_interval": "monthly", "recurring_amount": 1234,
                   "term_months": 1, "trial_days": 0, "requires_approval": true, "auto_renew_default": false}),
        );
        assert_eq!(o.status, 201, "{}", o.text);
        o.json["id"].as_str().unwrap().to_string()
    };
    let (vetted, later) = (offer("Vetted"), offer("Later"));
    let publish = app.post(
        &format!("/v1/listings/{lid}/publish"),
        Some(&p.token),
        json!({}),
    );
    assert_eq!(publish.status, 200, "{}", publish.text);

    // A message typed over two lines in the text area arrives as one paragraph.
    let mut buyer = Browser::signed_in(&app, &b);
    let shown = buyer.get(&format!("/console/listings/{lid}"));
    let field = format!("message_{vetted}");
    let asked = buyer.post(
        "/console/subscriptions",
        &[
            ("csrf", &shown.csrf()),
            ("offer_id", &vetted),
            ("listing_id", &lid),
            (&field, "Hello,\r\nwe are a lab"),
        ],
    );
    assert_eq!(asked.status, 303, "{}", asked.text);
    let request = &app.get("/v1/subscriptions", Some(&b.token)).json["data"][0];
    assert_eq!(request["message"], "Hello, we are a lab");
    let request_id = request["id"].as_str().unwrap().to_string();

    // Approved twice (a double click): the second answer says why nothing happened.
    let mut provider = Browser::signed_in(&app, &p);
    let csrf = provider.get("/console/subscriptions").csrf();
    let approve = format!("/console/subscriptions/{request_id}/approve");
    assert_eq!(provider.post(&approve, &[("csrf", &csrf)]).status, 303);
    let again = provider.post(&approve, &[("csrf", &csrf)]);
    assert_eq!(again.status, 422);
    assert!(
        again.text.contains("There is a problem") && again.text.contains("cannot be answered"),
        "{}",
        again.text
    );

    // An offer archived while the page was open: the refusal is on top of the page.
    let shown = buyer.get(&format!("/console/listings/{lid}"));
    let archived = app.post(
        &format!("/v1/offers/{later}/archive"),
        Some(&p.token),
        json!({}),
    );
    assert_eq!(archived.status, 200, "{}", archived.text);
    let stale = buyer.post(
        "/console/subscriptions",
        &[
            ("csrf", &shown.csrf()),
            ("offer_id", &later),
            ("listing_id", &lid),
        ],
    );
    assert_eq!(stale.status, 422);
    assert!(
        stale.text.contains("The subscription was not created: ")
            && stale.text.contains("archived"),
        "{}",
        stale.text
    );
}

#[test]
fn a_credit_note_over_what_remains_is_refused_next_to_its_field() {
    let app = TestApp::spawn();
    let (_, _, invoice, _) = two_invoices(&app);
    let fin = platform_finance(&app);
    let mut f = Browser::signed_in(&app, &fin);
    let confirm = f.get(&format!("/console/invoices/{invoice}/finalize"));
    assert_eq!(confirm.status, 200);
    let done = f.post(
        &format!("/console/invoices/{invoice}/finalize"),
        &[("csrf", &confirm.csrf())],
    );
    assert_eq!(done.status, 303, "{}", done.text);
    let page = f.get(done.location.as_deref().unwrap());
    assert!(page.text.contains("MKT-"), "the number is shown");
    let token = app.again(&fin).token;
    let line = app
        .get(&format!("/v1/invoices/{invoice}"), Some(&token))
        .json["lines"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let form = f.get(&format!("/console/invoices/{invoice}/credit-note"));
    let field = format!("amount_{line}");
    let too_much = f.post(
        &format!("/console/invoices/{invoice}/credit-note"),
        &[
            ("csrf", &form.csrf()),
            ("reason", "goodwill"),
            (&field, "12.35"),
            ("confirm", "yes"),
        ],
    );
    assert_eq!(too_much.status, 422);
    assert!(
        too_much
            .text
            .contains(&format!("id=\"f-amount-{}-error\"", line.replace('_', "-"))),
        "{}",
        too_much.text
    );
    assert!(
        too_much.text.contains("left to credit (12.34 USD)"),
        "{}",
        too_much.text
    );
    let unconfirmed = f.post(
        &format!("/console/invoices/{invoice}/credit-note"),
        &[
            ("csrf", &form.csrf()),
            ("reason", "goodwill"),
            (&field, "2.00"),
        ],
    );
    assert_eq!(unconfirmed.status, 422);
    assert!(unconfirmed.text.contains("f-confirm-error"));
    let form_key = form.hidden("form_key");
    let fields = [
        ("csrf", form.csrf()),
        ("form_key", form_key),
        ("reason", "goodwill".to_string()),
        (field.as_str(), "2.00".to_string()),
        ("confirm", "yes".to_string()),
    ];
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let ok = f.post(&format!("/console/invoices/{invoice}/credit-note"), &fields);
    assert_eq!(ok.status, 303, "{}", ok.text);
    let page = f.get(ok.location.as_deref().unwrap());
    assert!(page.text.contains("goodwill") && page.text.contains("2.00 USD"));
    // The same form sent again (a double click, a reload) issues nothing more.
    let again = f.post(&format!("/console/invoices/{invoice}/credit-note"), &fields);
    assert_eq!(again.status, 303, "{}", again.text);
    let notes = app
        .get(&format!("/v1/invoices/{invoice}"), Some(&token))
        .json["credit_notes"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(notes, 1);
    // The same form with other amounts: refused with a reason, and a new form to send.
    let other: Vec<(&str, &str)> = fields
        .iter()
        .map(|&(k, v)| {
            if k == field.as_str() {
                (k, "3.00")
            } else {
                (k, v)
            }
        })
        .collect();
    let changed = f.post(&format!("/console/invoices/{invoice}/credit-note"), &other);
    assert_eq!(changed.status, 422, "{}", changed.text);
    assert!(
        changed.text.contains("already sent with other amounts"),
        "{}",
        changed.text
    );
    assert_ne!(changed.hidden("form_key"), form.hidden("form_key"));
    let csv = f.get("/console/invoices/export?status=open");
    assert_eq!(csv.status, 200);
    assert!(csv.text.starts_with("invoice_number,"), "{}", csv.text);
    assert!(csv.text.contains("12.34"));
}

#[test]
fn sign_in_shares_the_apis_rate_limit() {
    let app = TestApp::builder().auth_rate_limit(3).spawn();
    let user = app.signup();
    let mut b = Browser::new(&app);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(b.sign_in(&user.email, "not the password at all").status);
    }
    // Sign-up used one attempt of the three: the third sign-in is over the limit.
    assert_eq!(statuses, vec![401, 401, 429]);
    let page = b.sign_in(&user.email, &user.password);
    assert_eq!(page.status, 429);
    assert!(page.headers.contains_key("retry-after"));
    assert!(!page.sets_session());
    assert_eq!(
        app.sign_in(&user.email, &user.password).status,
        429,
        "the API shares it"
    );
}

#[test]
fn a_download_is_a_posted_form_so_no_page_can_read_data_for_its_visitor() {
    let app = TestApp::spawn();
    let (p, b) = (app.signup(), app.signup());
    let lid = listing(&app, &p, "Rates", "");
    let ds = app.post(
        &format!("/v1/listings/{lid}/datasets"),
        Some(&p.token),
        json!({"name": "daily"}),
    );
    let rev = app.post(
        &format!("/v1/datasets/{}/revisions", ds.json["id"].as_str().unwrap()),
        Some(&p.token),
        json!({}),
    );
    let rev = rev.json["id"].as_str().unwrap().to_string();
    let up = Client::new()
        .put(format!("{}/v1/revisions/{rev}/assets/rates.csv", app.base))
        .bearer_auth(&p.token)
        .body("day,rate\n")
        .send()
        .unwrap();
    assert_eq!(up.status().as_u16(), 201);
    let asset = up.json::<serde_json::Value>().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.post(
        &format!("/v1/revisions/{rev}/finalize"),
        Some(&p.token),
        json!({}),
    );
    // The provider's description tries an image of the subscriber's download.
    let hostile = format!("![c](/console/assets/{asset}/download)");
    let changed = app.patch(
        &format!("/v1/listings/{lid}"),
        Some(&p.token),
        json!({"description": hostile}),
    );
    assert_eq!(changed.status, 200, "{}", changed.text);
    let o = app.post(
        &format!("/v1/listings/{lid}/offers"),
        Some(&p.token),
        json!({"name": "Monthly", "currency": "USD", "billing_interval": "monthly", "recurring_amount": 100,
               "term_months": 1, "trial_days": 0, "requires_approval": false, "auto_renew_default": false}),
    );
    app.post(
        &format!("/v1/listings/{lid}/publish"),
        Some(&p.token),
        json!({}),
    );
    let sub = app.post(
        "/v1/subscriptions",
        Some(&b.token),
        json!({"offer_id": o.json["id"]}),
    );
    assert_eq!(sub.status, 201, "{}", sub.text);

    let mut browser = Browser::signed_in(&app, &b);
    let page = browser.get(&format!("/console/listings/{lid}"));
    assert_eq!(page.status, 200);
    let action = format!("action=\"/console/assets/{asset}/download\"");
    assert!(
        page.text.contains(&action),
        "a download form: {}",
        page.text
    );
    // What an image (or any GET) of that address gets: no signed URL, nothing read.
    let get = browser.get(&format!("/console/assets/{asset}/download"));
    assert!(
        get.location.is_none() && get.status >= 400,
        "{}",
        get.status
    );
    assert_eq!(
        browser
            .post(
                &format!("/console/assets/{asset}/download"),
                &[("csrf", "x")]
            )
            .status,
        403
    );
    let posted = browser.post(
        &format!("/console/assets/{asset}/download"),
        &[("csrf", &page.csrf())],
    );
    assert_eq!(posted.status, 303, "{}", posted.text);
    // On this server, whatever origin the browser used (the policy's `form-action 'self'`).
    let url = posted.location.expect("a signed URL");
    assert!(
        url.starts_with(&format!("/v1/assets/{asset}/content?")),
        "{url}"
    );
    let body = Client::new()
        .get(format!("{}{url}", app.base))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(body, "day,rate\n");
}
