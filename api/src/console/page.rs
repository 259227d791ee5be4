//! The frame every console page shares (landmarks, navigation, sign-out), HTML responses
//! with their security headers, error pages, form fields that carry their own errors, and
//! the formatting of money and times.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use chrono::{DateTime, Utc};
use maud::{html, Markup, PreEscaped, DOCTYPE};

use crate::domain::auth::{Caller, Capability};
use crate::domain::catalog::offer::Money;
use crate::domain::{Error, FieldError};

/// No inline script or style, nothing from elsewhere, no framing, forms post only here.
pub const CSP: &str =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     font-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'; object-src 'none'";

/// A finished HTML page with the console's security headers.
pub fn html_response(status: StatusCode, body: Markup) -> HttpResponse {
    let mut response = HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        .body(body.into_string());
    secure_headers(&mut response);
    response
}

pub fn secure_headers(response: &mut HttpResponse) {
    let headers = response.headers_mut();
    for (name, value) in [
        ("content-security-policy", CSP),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "same-origin"),
        // Pages show an organization's private data: never kept by shared caches.
        ("cache-control", "no-store"),
    ] {
        headers.insert(
            header::HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
}

/// `303 See Other` after a form: the browser shows the target with a GET.
pub fn see_other(location: &str) -> HttpResponse {
    let mut response = HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location.to_string()))
        .finish();
    secure_headers(&mut response);
    response
}

/// The sections of the console, for the navigation and `aria-current`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Home,
    Catalog,
    Listings,
    Subscriptions,
    Invoices,
    BillingRuns,
    Reports,
    None,
}

/// Who the page is for: the signed-in caller and the session's CSRF token (sign-out form).
pub struct Viewer<'a> {
    pub caller: &'a Caller,
    pub csrf: &'a str,
}

fn nav_items(caller: &Caller) -> Vec<(Section, &'static str, &'static str)> {
    let mut items = vec![(Section::Home, "/console", "Home")];
    if !caller.role.is_platform() {
        items.push((Section::Catalog, "/console/catalog", "Catalog"));
        items.push((Section::Listings, "/console/listings", "My listings"));
        items.push((
            Section::Subscriptions,
            "/console/subscriptions",
            "Subscriptions",
        ));
    }
    if caller.can(Capability::Billing) {
        items.push((Section::Invoices, "/console/invoices", "Invoices"));
    }
    if caller.can(Capability::PlatformBilling) {
        items.push((
            Section::BillingRuns,
            "/console/billing-runs",
            "Billing runs",
        ));
    }
    items.push((Section::Reports, "/console/reports", "Reports"));
    items
}

/// The whole document: skip link, header with navigation, the page's `main`, footer.
pub fn layout(viewer: Option<&Viewer<'_>>, section: Section, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Marketplace console" }
                link rel="stylesheet" href="/console/static/console.css";
                link rel="icon" href="data:,";
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/console" { "Marketplace console" }
                    @if let Some(v) = viewer {
                        nav aria-label="Main" {
                            ul {
                                @for (s, href, label) in nav_items(v.caller) {
                                    li {
                                        a href=(href) aria-current=[(s == section).then_some("page")] { (label) }
                                    }
                                }
                            }
                        }
                        div.who {
                            span {
                                (v.caller.user_name) " · " (v.caller.organization_name)
                                " (" (v.caller.role.as_str()) ")"
                            }
                            form method="post" action="/console/sign-out" {
                                input type="hidden" name="csrf" value=(v.csrf);
                                button.link type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main #main tabindex="-1" {
                    (body)
                }
                footer.bottom {
                    p { "Data Marketplace · " a href="/docs/" { "API reference" } }
                }
            }
        }
    }
}

/// A full page for a signed-in viewer.
pub fn page(viewer: &Viewer<'_>, section: Section, title: &str, body: Markup) -> HttpResponse {
    page_status(StatusCode::OK, viewer, section, title, body)
}

pub fn page_status(
    status: StatusCode,
    viewer: &Viewer<'_>,
    section: Section,
    title: &str,
    body: Markup,
) -> HttpResponse {
    html_response(status, layout(Some(viewer), section, title, body))
}

/// What went wrong while answering a console request, as a page.
#[derive(Debug)]
pub enum Failure {
    /// A page that needs a session, asked without one: off to the sign-in form.
    SignIn { next: String },
    /// A form posted without a valid CSRF token (or without a session).
    Csrf,
    /// A body that is not a form.
    BadForm,
    /// What the domain said.
    Domain(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Domain(e)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::SignIn { .. } => f.write_str("sign-in required"),
            Failure::Csrf => f.write_str("invalid CSRF token"),
            Failure::BadForm => f.write_str("malformed form"),
            Failure::Domain(e) => write!(f, "{e}"),
        }
    }
}

pub type Reply = Result<HttpResponse, Failure>;

/// The status and what a person reads for a domain error (never an internal cause).
pub fn explain(error: &Error) -> (StatusCode, &'static str, String) {
    match error {
        Error::NotFound(what) => (
            StatusCode::NOT_FOUND,
            "Not found",
            format!(
                "There is no {what} at this address, or your organization may not see it. \
                 Check the link, or go back to the console's home page."
            ),
        ),
        Error::Forbidden(why) => (
            StatusCode::FORBIDDEN,
            "Not allowed",
            format!("{why}. Ask an administrator of your organization if you need this."),
        ),
        Error::Unauthorized(why) => (StatusCode::UNAUTHORIZED, "Not signed in", why.to_string()),
        Error::Conflict { detail, .. } => (StatusCode::CONFLICT, "Not possible now", detail.clone()),
        Error::Validation(errors) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "Check the request",
            errors
                .iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect::<Vec<_>>()
                .join("; "),
        ),
        Error::BadRequest { detail, .. } => {
            (StatusCode::BAD_REQUEST, "Bad request", detail.clone())
        }
        Error::RateLimited { retry_after_secs } => (
            StatusCode::TOO_MANY_REQUESTS,
            "Too many attempts",
            format!("Too many sign-in attempts from your address; try again in {retry_after_secs} seconds."),
        ),
        Error::Unavailable(cause) => {
            tracing::warn!(%cause, "console: service unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "Temporarily unavailable",
                "The service is busy; reload the page in a moment.".to_string(),
            )
        }
        Error::Internal(cause) => {
            tracing::error!(%cause, "console: internal error");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "An unexpected error occurred and has been logged. Reload the page, or \
                 go back to the console's home page."
                    .to_string(),
            )
        }
        other => (StatusCode::BAD_REQUEST, "Bad request", other.to_string()),
    }
}

/// A page about an error, with a way back (no session needed to show it).
pub fn error_page(status: StatusCode, title: &str, detail: &str) -> HttpResponse {
    html_response(
        status,
        layout(
            None,
            Section::None,
            title,
            html! {
                h1 { (title) }
                p { (detail) }
                p { a href="/console" { "Go to the console's home page" } }
            },
        ),
    )
}

impl ResponseError for Failure {
    fn status_code(&self) -> StatusCode {
        match self {
            Failure::SignIn { .. } => StatusCode::SEE_OTHER,
            Failure::Csrf => StatusCode::FORBIDDEN,
            Failure::BadForm => StatusCode::BAD_REQUEST,
            Failure::Domain(e) => explain(e).0,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Failure::SignIn { next } => see_other(&format!(
                "/console?next={}",
                percent_encoding::utf8_percent_encode(next, percent_encoding::NON_ALPHANUMERIC)
            )),
            Failure::Csrf => error_page(
                StatusCode::FORBIDDEN,
                "Form expired",
                "This form could not be accepted: it was not sent from a current console page \
                 of your session. Open the page again and resend the form; sign in again if \
                 your session has ended.",
            ),
            Failure::BadForm => error_page(
                StatusCode::BAD_REQUEST,
                "Bad request",
                "The form could not be read. Open the page again and resend it.",
            ),
            Failure::Domain(e) => {
                let (status, title, detail) = explain(e);
                let mut response = error_page(status, title, &detail);
                if let Error::RateLimited { retry_after_secs } = e {
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
                }
                response
            }
        }
    }
}

// ---------- forms ----------

/// The errors of one form, by field name; `""` holds those of the whole form.
#[derive(Debug, Default, Clone)]
pub struct FormErrors(pub Vec<FieldError>);

impl FormErrors {
    pub fn get(&self, field: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|e| e.field == field)
            .map(|e| e.message.as_str())
    }

    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The `id` a field's input gets.
pub fn field_id(name: &str) -> String {
    format!(
        "f-{}",
        name.chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect::<String>()
    )
}

/// "There is a problem" with links to each broken field, first in a form that failed.
pub fn error_summary(errors: &FormErrors) -> Markup {
    html! {
        @if !errors.is_empty() {
            div.error-summary role="alert" tabindex="-1" {
                h2 { "There is a problem" }
                ul {
                    @for e in &errors.0 {
                        li {
                            @if e.field.is_empty() { (e.message) }
                            @else { a href={ "#" (field_id(&e.field)) } { (e.message) } }
                        }
                    }
                }
            }
        }
    }
}

/// One labelled input, its hint and its error, wired together for assistive technology.
pub struct Input<'a> {
    pub name: &'a str,
    pub label: &'a str,
    pub kind: &'a str,
    pub value: &'a str,
    pub hint: Option<&'a str>,
    pub required: bool,
    pub autocomplete: Option<&'a str>,
    pub pattern: Option<&'a str>,
}

impl<'a> Input<'a> {
    pub fn new(name: &'a str, label: &'a str, value: &'a str) -> Input<'a> {
        Input {
            name,
            label,
            kind: "text",
            value,
            hint: None,
            required: false,
            autocomplete: None,
            pattern: None,
        }
    }

    pub fn kind(mut self, kind: &'a str) -> Self {
        self.kind = kind;
        self
    }

    pub fn hint(mut self, hint: &'a str) -> Self {
        self.hint = Some(hint);
        self
    }

    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }

    pub fn autocomplete(mut self, what: &'a str) -> Self {
        self.autocomplete = Some(what);
        self
    }

    pub fn pattern(mut self, pattern: &'a str) -> Self {
        self.pattern = Some(pattern);
        self
    }

    pub fn render(&self, errors: &FormErrors) -> Markup {
        let id = field_id(self.name);
        let hint_id = format!("{id}-hint");
        let error_id = format!("{id}-error");
        let error = errors.get(self.name);
        let described: Vec<&str> = [
            self.hint.map(|_| hint_id.as_str()),
            error.map(|_| error_id.as_str()),
        ]
        .into_iter()
        .flatten()
        .collect();
        html! {
            div.field.has-error[error.is_some()] {
                label for=(id) { (self.label) }
                @if let Some(h) = self.hint { p.hint id=(hint_id) { (h) } }
                @if let Some(e) = error { p.field-error id=(error_id) { span.visually-hidden { "Error: " } (e) } }
                @if self.kind == "textarea" {
                    textarea id=(id) name=(self.name) rows="3"
                        aria-invalid=[error.map(|_| "true")]
                        aria-describedby=[(!described.is_empty()).then(|| described.join(" "))]
                        required[self.required] { (self.value) }
                } @else {
                    input id=(id) name=(self.name) type=(self.kind) value=(self.value)
                        autocomplete=[self.autocomplete] pattern=[self.pattern]
                        aria-invalid=[error.map(|_| "true")]
                        aria-describedby=[(!described.is_empty()).then(|| described.join(" "))]
                        required[self.required];
                }
            }
        }
    }
}

/// The hidden CSRF field every console form carries.
pub fn csrf_field(token: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(token); }
}

/// A status message after an action (chosen from fixed texts, never from the URL).
pub fn notice(text: Option<&str>) -> Markup {
    html! {
        @if let Some(t) = text { div.notice role="status" { p { (t) } } }
    }
}

/// A problem with the whole page's action (not one field).
pub fn alert(text: Option<&str>) -> Markup {
    html! {
        @if let Some(t) = text { div.error-summary role="alert" { p { (t) } } }
    }
}

/// An empty list: what it means and what to do next.
pub fn empty(text: &str) -> Markup {
    html! { p.empty { (text) } }
}

/// Sanitized HTML from `domain::markdown::render`: the only place raw markup is emitted.
/// Its headings move two levels down (`#` becomes `h3`), under the page's own `h1` and the
/// section's `h2`.
pub fn sanitized(html_from_markdown: &str) -> Markup {
    let mut out = html_from_markdown.to_string();
    for level in (1..=6).rev() {
        let to = (level + 2).min(6);
        out = out
            .replace(&format!("<h{level}>"), &format!("<h{to}>"))
            .replace(&format!("</h{level}>"), &format!("</h{to}>"));
    }
    PreEscaped(out)
}

// ---------- formatting ----------

/// `12.34 USD`: the currency's minor units, as the CSV export writes them.
pub fn money(m: &Money) -> String {
    m.display()
}

pub fn money_of(amount: i64, currency: &str) -> String {
    money(&Money {
        amount,
        currency: currency.to_string(),
    })
}

pub fn when(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

pub fn when_opt(t: &Option<DateTime<Utc>>) -> String {
    t.as_ref().map(when).unwrap_or_else(|| "—".into())
}

pub fn day(t: &Option<DateTime<Utc>>) -> String {
    t.as_ref()
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "—".into())
}

/// A state shown as a labelled badge (text, not colour alone).
pub fn badge(state: &str) -> Markup {
    html! { span class={ "badge badge-" (state.replace('_', "-")) } { (state.replace('_', " ")) } }
}

/// Encodes a query-string value.
pub fn q(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
}
