//! Sessions in the browser: the session cookie, the per-session CSRF token every form
//! carries, the pre-session (double-submit) token of the sign-in form, and the extractors
//! that make a handler unreachable without them.

use actix_web::cookie::{time::Duration as CookieDuration, Cookie, SameSite};
use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;

use super::page::{Failure, Viewer};
use crate::domain::auth::Caller;
use crate::domain::console_sessions;
use crate::domain::ids::random_token;
use crate::state::State;

pub const SESSION_COOKIE: &str = "console_session";
pub const LOGIN_CSRF_COOKIE: &str = "console_login_csrf";
const COOKIE_PATH: &str = "/console";

fn state(req: &HttpRequest) -> Result<State, Failure> {
    req.app_data::<State>()
        .cloned()
        .ok_or_else(|| Failure::Domain(crate::domain::Error::internal("application state missing")))
}

/// Whether the browser reached us over TLS: our own TLS, an `https` public URL, or
/// `X-Forwarded-Proto: https` from a trusted proxy (never believed from anyone else).
pub fn over_tls(req: &HttpRequest, state: &State) -> bool {
    if req.app_config().secure() || state.public_url.starts_with("https://") {
        return true;
    }
    let from_trusted_proxy = req.peer_addr().is_some_and(|peer| {
        state
            .settings
            .trusted_proxies
            .iter()
            .any(|net| net.contains(&peer.ip()))
    });
    from_trusted_proxy
        && req
            .headers()
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// A console cookie: HttpOnly, `Path=/console`, `Secure` over TLS. Session cookies (no
/// `Max-Age`): the server ends sessions on its own schedule.
pub fn cookie(
    name: &'static str,
    value: String,
    same_site: SameSite,
    secure: bool,
) -> Cookie<'static> {
    Cookie::build(name, value)
        .path(COOKIE_PATH)
        .http_only(true)
        .same_site(same_site)
        .secure(secure)
        .finish()
}

/// Tells the browser to forget a console cookie.
pub fn removal(name: &'static str, secure: bool) -> Cookie<'static> {
    let mut c = cookie(name, String::new(), SameSite::Lax, secure);
    c.set_max_age(CookieDuration::ZERO);
    c
}

/// Compares secrets in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && !a.is_empty()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The sign-in form's CSRF token: the one already in the browser's cookie (so several
/// tabs agree), or a new one to set.
pub fn login_token(req: &HttpRequest) -> (String, bool) {
    match req.cookie(LOGIN_CSRF_COOKIE) {
        Some(c)
            if c.value().len() == 43 && c.value().bytes().all(|b| b.is_ascii_alphanumeric()) =>
        {
            (c.value().to_string(), false)
        }
        _ => (random_token(43), true),
    }
}

/// A signed-in browser: who it is, its session token and the CSRF token of its forms.
pub struct Session {
    pub caller: Caller,
    pub csrf: String,
    pub token: String,
}

impl Session {
    pub fn viewer(&self) -> Viewer<'_> {
        Viewer {
            caller: &self.caller,
            csrf: &self.csrf,
        }
    }
}

/// The session the request's cookie names, if it is live (`None` when there is none).
pub async fn current(req: &HttpRequest) -> Result<Option<Session>, Failure> {
    let Some(cookie) = req.cookie(SESSION_COOKIE) else {
        return Ok(None);
    };
    let token = cookie.value().to_string();
    if !token.starts_with(console_sessions::TOKEN_PREFIX) || token.len() > 100 {
        return Ok(None);
    }
    let state = state(req)?;
    let clock = state.clock.clone();
    let lookup = token.clone();
    let caller = state
        .db(move |conn| console_sessions::resolve(conn, clock.as_ref(), &lookup))
        .await?;
    Ok(caller.map(|caller| Session {
        caller,
        csrf: console_sessions::csrf_token(&token),
        token,
    }))
}

/// A page that needs a session: without one, the browser goes to the sign-in form and comes
/// back after.
impl FromRequest for Session {
    type Error = Failure;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            match current(&req).await? {
                Some(s) => Ok(s),
                None => Err(Failure::SignIn {
                    next: match req.uri().query() {
                        Some(q) => format!("{}?{q}", req.path()),
                        None => req.path().to_string(),
                    },
                }),
            }
        })
    }
}

/// A submitted form's fields, in order.
#[derive(Debug, Default)]
pub struct Form(pub Vec<(String, String)>);

impl Form {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The field's text, trimmed; empty if absent.
    pub fn text(&self, name: &str) -> String {
        self.get(name).unwrap_or("").trim().to_string()
    }
}

async fn read_form(req: &HttpRequest, payload: &mut Payload) -> Result<Form, Failure> {
    web::Form::<Vec<(String, String)>>::from_request(req, payload)
        .await
        .map(|f| Form(f.into_inner()))
        .map_err(|_| Failure::BadForm)
}

/// A form posted from a page of the caller's session: the session must be live and the
/// form's `csrf` field must be that session's token; otherwise 403, and nothing happens.
pub struct Posted {
    pub session: Session,
    pub form: Form,
}

impl FromRequest for Posted {
    type Error = Failure;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let mut payload = payload.take();
        Box::pin(async move {
            let form = read_form(&req, &mut payload).await?;
            let session = current(&req).await?.ok_or(Failure::Csrf)?;
            if !same_secret(form.get("csrf").unwrap_or(""), &session.csrf) {
                return Err(Failure::Csrf);
            }
            Ok(Posted { session, form })
        })
    }
}

/// The sign-in form as posted, with whether its double-submit token matched the cookie.
pub struct LoginPosted {
    pub form: Form,
    pub csrf_ok: bool,
}

impl FromRequest for LoginPosted {
    type Error = Failure;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let mut payload = payload.take();
        Box::pin(async move {
            let form = read_form(&req, &mut payload).await?;
            let cookie = req.cookie(LOGIN_CSRF_COOKIE);
            let csrf_ok = cookie
                .as_ref()
                .is_some_and(|c| same_secret(form.get("csrf").unwrap_or(""), c.value()));
            Ok(LoginPosted { form, csrf_ok })
        })
    }
}
