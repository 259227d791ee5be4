//! The console's front door: the home page, the sign-in form and signing out.

use actix_web::cookie::SameSite;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::{html, Markup};
use serde::Deserialize;

use super::page::{
    csrf_field, error_summary, explain, html_response, layout, notice, page, see_other, Failure,
    FormErrors, Input, Reply, Section,
};
use super::session::{
    self, cookie, login_token, over_tls, removal, LoginPosted, Posted, Session, LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
};
use crate::domain::accounts::TokenRequest;
use crate::domain::auth::Capability;
use crate::domain::console_sessions;
use crate::domain::Error;
use crate::routes::extract::check_auth_rate;
use crate::state::State;

#[derive(Debug, Deserialize)]
pub struct HomeQuery {
    pub next: Option<String>,
    pub notice: Option<String>,
}

/// Only addresses inside the console are followed after sign-in (no open redirect, and no
/// `..` that a browser would resolve to outside it).
fn safe_next(next: Option<&str>) -> &str {
    let stays_inside = |n: &str| {
        let path = n
            .split(['?', '#'])
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        !path.contains("%2e")
            && !path
                .split('/')
                .any(|segment| segment == "." || segment == "..")
    };
    match next {
        Some(n)
            if (n == "/console" || n.starts_with("/console/") || n.starts_with("/console?"))
                && !n.contains("//")
                && n.bytes().all(|b| b.is_ascii_graphic() && b != b'\\')
                && stays_inside(n) =>
        {
            n
        }
        _ => "/console",
    }
}

/// `/console`: the home page of a signed-in user, or the sign-in form.
pub async fn home(req: HttpRequest, query: web::Query<HomeQuery>) -> Reply {
    match session::current(&req).await? {
        Some(s) => Ok(home_page(&s)),
        None => {
            let signed_out = query.notice.as_deref() == Some("signed-out");
            Ok(sign_in_page(
                &req,
                StatusCode::OK,
                "",
                safe_next(query.next.as_deref()),
                &FormErrors::default(),
                signed_out.then_some("You have signed out."),
            ))
        }
    }
}

fn sign_in_page(
    req: &HttpRequest,
    status: StatusCode,
    email: &str,
    next: &str,
    errors: &FormErrors,
    message: Option<&str>,
) -> HttpResponse {
    let (token, fresh) = login_token(req);
    let body = html! {
        div.narrow {
            h1 { "Sign in" }
            (notice(message))
            p { "Sign in with the e-mail address and password of your marketplace account." }
            (error_summary(errors))
            form.stack method="post" action="/console/sign-in" novalidate {
                (csrf_field(&token))
                input type="hidden" name="next" value=(next);
                (Input::new("email", "E-mail address", email).kind("email").required().autocomplete("username").render(errors))
                (Input::new("password", "Password", "").kind("password").required().autocomplete("current-password").render(errors))
                button.primary type="submit" { "Sign in" }
            }
        }
    };
    let mut response = html_response(status, layout(None, Section::None, "Sign in", body));
    if fresh {
        let secure = req
            .app_data::<State>()
            .is_some_and(|state| over_tls(req, state));
        // Strict: the token only ever travels with our own form.
        let c = cookie(LOGIN_CSRF_COOKIE, token, SameSite::Strict, secure);
        let _ = response.add_cookie(&c);
    }
    response
}

fn home_page(s: &Session) -> HttpResponse {
    let c = &s.caller;
    let body: Markup = html! {
        h1 { "Welcome, " (c.user_name) }
        p { "You are signed in to " strong { (c.organization_name) } " as " (c.role.as_str()) "." }
        ul.cards {
            @if !c.role.is_platform() {
                li {
                    h2 { a href="/console/catalog" { "Catalog" } }
                    p { "Search the catalog for data products, compare offers and subscribe." }
                }
                li {
                    h2 { a href="/console/subscriptions" { "Subscriptions and grants" } }
                    p { "Your subscriptions, your access grants and downloads; requests from your subscribers to approve." }
                }
                li {
                    h2 { a href="/console/listings" { "My listings" } }
                    p { "The data products your organization provides: state, datasets, revisions and offers." }
                }
            }
            @if c.can(Capability::Billing) {
                li {
                    h2 { a href="/console/invoices" { "Invoices" } }
                    p { @if c.can(Capability::PlatformBilling) { "Review drafts, finalize, void, record payments, issue credit notes and export CSV." } @else { "Your organization's invoices, their lines, payments and credit notes." } }
                }
            }
            @if c.can(Capability::PlatformBilling) {
                li {
                    h2 { a href="/console/billing-runs" { "Billing runs" } }
                    p { "Bill a month: create or rebuild the draft invoices of a period." }
                }
            }
            li {
                h2 { a href="/console/reports" { "Reports" } }
                p { @if c.role.is_platform() { "Revenue per provider and per month." } @else { "Your usage and revenue per month, as charts and tables." } }
            }
        }
    };
    page(&s.viewer(), Section::Home, "Home", body)
}

/// `POST /console/sign-in`: the API's rate limit, the double-submit CSRF check, the API's
/// credential check; then a new session and its cookie.
pub async fn sign_in(req: HttpRequest, state: State, posted: LoginPosted) -> Reply {
    let next = safe_next(posted.form.get("next")).to_string();
    let email = posted.form.text("email");
    if let Err(e) = check_auth_rate(&req) {
        return Err(Failure::Domain(e));
    }
    if !posted.csrf_ok {
        let mut errors = FormErrors::default();
        errors.push(
            "",
            "This sign-in form has expired or was not sent from this site. Please sign in again.",
        );
        return Ok(sign_in_page(
            &req,
            StatusCode::FORBIDDEN,
            &email,
            &next,
            &errors,
            None,
        ));
    }
    let mut errors = FormErrors::default();
    let password = posted.form.get("password").unwrap_or("").to_string();
    if email.is_empty() {
        errors.push("email", "Enter your e-mail address");
    }
    if password.is_empty() {
        errors.push("password", "Enter your password");
    }
    if !errors.is_empty() {
        return Ok(sign_in_page(
            &req,
            StatusCode::UNPROCESSABLE_ENTITY,
            &email,
            &next,
            &errors,
            None,
        ));
    }
    let clock = state.clock.clone();
    let request = TokenRequest {
        email: email.clone(),
        password,
    };
    let started = state
        .db(move |conn| console_sessions::sign_in(conn, clock.as_ref(), &request))
        .await;
    match started {
        Ok(started) => {
            let secure = over_tls(&req, &state);
            let mut response = see_other(&next);
            let _ = response.add_cookie(&cookie(
                SESSION_COOKIE,
                started.token,
                SameSite::Lax,
                secure,
            ));
            let _ = response.add_cookie(&removal(LOGIN_CSRF_COOKIE, secure));
            Ok(response)
        }
        Err(Error::Unauthorized(why)) => {
            errors.push("password", why);
            Ok(sign_in_page(
                &req,
                StatusCode::UNAUTHORIZED,
                &email,
                &next,
                &errors,
                None,
            ))
        }
        Err(e) => {
            let (status, _, detail) = explain(&e);
            errors.push("", detail);
            Ok(sign_in_page(&req, status, &email, &next, &errors, None))
        }
    }
}

/// `POST /console/sign-out`: the session's row goes, and the cookie with it.
pub async fn sign_out(req: HttpRequest, state: State, posted: Posted) -> Reply {
    let token = posted.session.token.clone();
    state
        .db(move |conn| console_sessions::sign_out(conn, &token))
        .await?;
    let mut response = see_other("/console?notice=signed-out");
    let _ = response.add_cookie(&removal(SESSION_COOKIE, over_tls(&req, &state)));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn only_console_addresses_are_followed_after_sign_in() {
        for kept in [
            "/console",
            "/console/invoices?status=open",
            "/console?x=1",
            "/console/a.b",
        ] {
            assert_eq!(safe_next(Some(kept)), kept);
        }
        for refused in [
            "https://evil.example/",
            "//evil.example/console",
            "/console//evil",
            "/console/../../x",
            "/console/./x",
            "/console/%2e%2e/x",
            "/console/%2E%2E/x",
            "/console\\evil",
            "/consoles",
        ] {
            assert_eq!(safe_next(Some(refused)), "/console", "{refused}");
        }
        assert_eq!(safe_next(None), "/console");
    }
}
