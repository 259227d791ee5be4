//! Extractors: a handler that takes one of these cannot run without what it names.

use std::net::IpAddr;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpMessage, HttpRequest};
use futures_util::future::LocalBoxFuture;
use futures_util::StreamExt;
use governor::clock::{Clock as _, DefaultClock};
use ipnet::IpNet;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::domain::accounts;
use crate::domain::auth::Caller;
use crate::domain::pagination::PageRequest;
use crate::domain::secrets;
use crate::domain::tokens::{API_KEY_PREFIX, JWT_PURPOSE};
use crate::domain::validate::{field_error, integral_numbers, may_hold_nul, replace_nul};
use crate::domain::{Error, FieldError};
use crate::state::State;

/// The largest JSON body accepted (DESIGN: 1 MiB, 413 beyond).
pub const JSON_LIMIT: usize = 1024 * 1024;

fn state(req: &HttpRequest) -> Result<State, Error> {
    req.app_data::<State>()
        .cloned()
        .ok_or_else(|| Error::internal("application state missing"))
}

/// A JSON body parsed into `T`; a broken one is refused naming the field's path.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut payload = payload.take();
        Box::pin(async move {
            if declared.is_some_and(|n| n > JSON_LIMIT) {
                return Err(Error::PayloadTooLarge { limit: JSON_LIMIT }.into());
            }
            if let Some(ct) = content_type {
                let essence = ct
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                if essence != "application/json" && !essence.ends_with("+json") {
                    return Err(Error::UnsupportedMediaType(format!(
                        "{essence}; send application/json"
                    ))
                    .into());
                }
            }
            let mut body = Vec::new();
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(|e| Error::MalformedBody(e.to_string()))?;
                if body.len() + chunk.len() > JSON_LIMIT {
                    return Err(Error::PayloadTooLarge { limit: JSON_LIMIT }.into());
                }
                body.extend_from_slice(&chunk);
            }
            parse_json(&body).map(JsonBody).map_err(Into::into)
        })
    }
}

/// Parses JSON, telling a syntax error (400) from a value that breaks the shape (422, with
/// the path of the offending field, such as `events[1].quantity`).
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    // No body reads as an empty object, so required fields are named as missing and
    // bodies that are all optional may be left out.
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    // Every request body is an object; serde would otherwise read an array as a struct.
    if body
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b != b'{')
    {
        return match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
            Ok(_) => Err(Error::validation("body", "must be a JSON object")),
            Err(e) => Err(Error::MalformedBody(e.to_string())),
        };
    }
    // Text with a NUL cannot be stored: such a body takes the slow path, NULs replaced.
    if may_hold_nul(body) {
        if let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(body) {
            if replace_nul(&mut value) {
                integral_numbers(&mut value);
                return from_value(value, body.len());
            }
        }
    }
    // Most bodies are fine: parse them in one plain pass, and only when that fails again
    // while tracking the path, to name the field.
    if let Ok(value) = serde_json::from_slice::<T>(body) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Ok(value) => {
            de.end().map_err(|e| Error::MalformedBody(e.to_string()))?;
            Ok(value)
        }
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            match inner.classify() {
                serde_json::error::Category::Data => {
                    // `5.0` is an integer to JSON Schema: read again with such numbers
                    // rewritten; and name every broken field, not only the first.
                    if let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(body) {
                        let rewritten = integral_numbers(&mut value);
                        match T::deserialize(&value) {
                            Ok(typed) if rewritten => return Ok(typed),
                            // What only the bytes show (a key given twice, which a `Value`
                            // keeps once): the error as first found.
                            Ok(_) => {}
                            Err(_) => {
                                return Err(Error::Validation(shape_errors::<T>(value, body.len())))
                            }
                        }
                    }
                    Err(Error::Validation(vec![field_error(&path, &inner)]))
                }
                _ => Err(Error::MalformedBody(inner.to_string())),
            }
        }
    }
}

/// The typed value of a JSON document already parsed (and mended) from `len` bytes, or a
/// 422 naming every field that does not fit.
fn from_value<T: DeserializeOwned>(value: serde_json::Value, len: usize) -> Result<T, Error> {
    match T::deserialize(&value) {
        Ok(typed) => Ok(typed),
        Err(_) => Err(Error::Validation(shape_errors::<T>(value, len))),
    }
}

/// At most this many fields are named in one response.
const MAX_FIELD_ERRORS: usize = 20;

/// How much JSON the search for broken fields may read again in all, in bytes of the body:
/// a small body is read as often as it takes, a 1 MiB one a few times (its first fields
/// named), so a broken body costs a bounded multiple of one pass.
const SHAPE_ERRORS_READ_BUDGET: usize = 4 * 1024 * 1024;

/// Every field of `value` (parsed from `len` bytes) that does not fit `T`, in the order
/// serde meets them (the keys of an object sorted). serde stops at the first; so each one
/// named is stood in for (a value of another JSON type that gets past it) and the document
/// read again, until it fits, no stand-in gets past a field, or the reading budget is spent.
fn shape_errors<T: DeserializeOwned>(mut value: serde_json::Value, len: usize) -> Vec<FieldError> {
    let mut passes = Passes(SHAPE_ERRORS_READ_BUDGET / len.max(1));
    let mut errors: Vec<FieldError> = Vec::new();
    while errors.len() < MAX_FIELD_ERRORS {
        let Some(error) = passes.first_error::<T>(&value) else {
            break;
        };
        if errors.iter().any(|known| known.field == error.field) {
            break;
        }
        let at = error.field.clone();
        errors.push(error);
        if !stand_in::<T>(&mut value, &at, &mut passes) {
            break;
        }
    }
    errors
}

/// The passes over the document left to `shape_errors`.
struct Passes(usize);

impl Passes {
    /// `T`'s first error in `value`; `None` when it fits, or when no pass is left.
    fn first_error<T: DeserializeOwned>(
        &mut self,
        value: &serde_json::Value,
    ) -> Option<FieldError> {
        self.first_error_or_fits::<T>(value).flatten()
    }

    /// `Some(T's first error in value)`, `Some(None)` when it fits; `None` when no pass is
    /// left.
    fn first_error_or_fits<T: DeserializeOwned>(
        &mut self,
        value: &serde_json::Value,
    ) -> Option<Option<FieldError>> {
        self.0 = self.0.checked_sub(1)?;
        Some(
            serde_path_to_error::deserialize::<_, T>(value)
                .err()
                .map(|e| field_error(&e.path().to_string(), e.inner())),
        )
    }
}

/// Replaces the field at `path` (`lines[1].amount`) with the first stand-in after which
/// `T`'s first error, if any, lies outside it; false (the document as it was) when none
/// does or the path is not in the document. The document is changed in place, not copied:
/// a large body with many broken fields costs passes, not copies.
fn stand_in<T: DeserializeOwned>(
    value: &mut serde_json::Value,
    path: &str,
    passes: &mut Passes,
) -> bool {
    use serde_json::json;
    let Some(steps) = steps_of(path) else {
        return false;
    };
    // Values, not leaving the field out: a struct checks its missing fields in its own
    // order, so one left out could let an earlier one be named instead and this one again.
    // `null` fits an optional field; the timestamp a time.
    let mut candidates = vec![
        json!(null),
        json!(""),
        json!(0),
        json!(false),
        json!([]),
        json!({}),
        json!("1970-01-01T00:00:00Z"),
    ];
    let fixed = candidates.len();
    // Past it: the next error is elsewhere, and not inside the stand-in (a `{}` for an
    // object would otherwise name its fields as missing).
    let inside = |field: &str| {
        field == path
            || field
                .strip_prefix(path)
                .is_some_and(|rest| rest.starts_with(['.', '[']))
    };
    let mut held = None;
    let mut i = 0;
    while i < candidates.len() {
        let Some(previous) = swap_at(value, &steps, Some(candidates[i].clone())) else {
            return false;
        };
        held.get_or_insert(previous);
        let Some(next) = passes.first_error_or_fits::<T>(value) else {
            break; // no pass left: put back what the document held
        };
        match next {
            Some(e) if inside(&e.field) => {
                // A field that takes one of some words: last, the first word serde expects.
                if candidates.len() == fixed {
                    if let Some(word) = first_expected_word(&e.message) {
                        candidates.push(json!(word));
                    }
                }
            }
            _ => return true,
        }
        i += 1;
    }
    if let Some(original) = held {
        swap_at(value, &steps, original);
    }
    false
}

/// The first word of serde's "unknown variant `x`, expected one of `a`, `b`" (or
/// "expected `a` or `b`").
fn first_expected_word(message: &str) -> Option<String> {
    let (_, after) = message.split_once("expected ")?;
    let after = after.strip_prefix("one of ").unwrap_or(after);
    let word = after.strip_prefix('`')?.split('`').next()?;
    Some(word.to_string())
}

/// The steps of a field path as `field_error` writes it (`lines[1].amount`); `None` for the
/// document itself (`body`).
fn steps_of(path: &str) -> Option<Vec<Step>> {
    if path == "body" {
        return None;
    }
    let mut steps = Vec::new();
    for part in path.split('.') {
        // Only `[digits]` groups may follow a name: a key holding `[` or `]` (of a map) is
        // not a path this can follow.
        let (name, mut rest) = match part.split_once('[') {
            Some((name, indexes)) => (name, Some(indexes)),
            None => (part, None),
        };
        if name.contains(']') {
            return None;
        }
        steps.push(Step::Key(name.to_string()));
        while let Some(indexes) = rest {
            let (index, after) = indexes.split_once(']')?;
            steps.push(Step::Index(index.parse().ok()?));
            rest = match after.strip_prefix('[') {
                Some(next) => Some(next),
                None if after.is_empty() => None,
                None => return None,
            };
        }
    }
    Some(steps)
}

/// Sets (or with `None` removes) the member at `steps`, returning what it held (`Some(None)`:
/// no such member yet); `None` if a step on the way is not in the document.
fn swap_at(
    value: &mut serde_json::Value,
    steps: &[Step],
    new: Option<serde_json::Value>,
) -> Option<Option<serde_json::Value>> {
    use serde_json::Value;
    let (last, before) = steps.split_last()?;
    let mut at = value;
    for step in before {
        at = match (step, at) {
            (Step::Key(k), Value::Object(map)) => map.get_mut(k)?,
            (Step::Index(i), Value::Array(items)) => items.get_mut(*i)?,
            _ => return None,
        };
    }
    match (last, at) {
        (Step::Key(k), Value::Object(map)) => Some(match new {
            Some(v) => map.insert(k.clone(), v),
            None => map.remove(k),
        }),
        (Step::Index(i), Value::Array(items)) if *i < items.len() => Some(Some(std::mem::replace(
            &mut items[*i],
            new.unwrap_or(Value::Null),
        ))),
        _ => None,
    }
}

enum Step {
    Key(String),
    Index(usize),
}

/// The authenticated caller (access token or API key), or 401.
pub struct Authenticated(pub Caller);

impl FromRequest for Authenticated {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            match authenticate(&req).await? {
                Some(caller) => Ok(Authenticated(caller)),
                None => Err(Error::Unauthorized(
                    "send Authorization: Bearer <access token or API key>",
                )
                .into()),
            }
        })
    }
}

/// The caller if credentials were sent; `Ok(None)` when none were; 401 when they are bad.
/// The result is kept in the request, so middleware and handler authenticate once.
pub async fn authenticate(req: &HttpRequest) -> Result<Option<Caller>, Error> {
    if let Some(caller) = req.extensions().get::<Caller>() {
        return Ok(Some(caller.clone()));
    }
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let credential = value
        .to_str()
        .ok()
        // The scheme is case-insensitive (RFC 9110 §11.1).
        .and_then(|v| {
            v.split_once(' ')
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, t)| t)
        })
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or(Error::Unauthorized(
            "the Authorization header must be `Bearer <token>`",
        ))?
        .to_string();
    let state = state(req)?;
    let caller = if credential.starts_with(API_KEY_PREFIX) {
        state
            .db(move |conn| accounts::caller_for_api_key(conn, &credential))
            .await?
    } else if let Some(caller) = state.callers.get(&credential, state.clock.now()) {
        caller
    } else {
        if state.tokens.unknown_kid(&credential).is_some() {
            // Another instance may have rotated the signing key since we started.
            let keys = state.db(|conn| secrets::all(conn, JWT_PURPOSE)).await?;
            state.tokens.learn(keys);
        }
        let claims = state.tokens.verify(&credential, state.clock.now())?;
        let (expires, generation) = (claims.exp, state.callers.generation());
        let caller = state
            .db(move |conn| accounts::caller_for_token(conn, &claims.sub, &claims.org))
            .await?;
        state.callers.put(&credential, expires, &caller, generation);
        caller
    };
    req.extensions_mut().insert(caller.clone());
    Ok(Some(caller))
}

/// The caller if credentials were sent (catalog reads are open to anonymous callers).
pub struct MaybeAuthenticated(pub Option<Caller>);

impl MaybeAuthenticated {
    /// The reading organization: `None` for anonymous callers; 403 for credentials that may
    /// not read (a key without the `read` scope).
    pub fn reader(&self) -> Result<Option<String>, Error> {
        match &self.0 {
            None => Ok(None),
            Some(caller) => {
                caller.require(crate::domain::auth::Capability::Read)?;
                Ok(Some(caller.organization_id.clone()))
            }
        }
    }
}

impl FromRequest for MaybeAuthenticated {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { Ok(MaybeAuthenticated(authenticate(&req).await?)) })
    }
}

/// `limit` and `cursor` of a list request.
#[derive(Debug, Deserialize)]
pub struct PageQuery {
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

impl PageQuery {
    pub fn parse(&self) -> Result<PageRequest, Error> {
        let limit = match &self.limit {
            None => None,
            Some(raw) => Some(
                raw.parse::<i64>()
                    .map_err(|_| Error::validation("limit", "must be an integer"))?,
            ),
        };
        PageRequest::parse(limit, self.cursor.as_deref())
    }
}

/// The client's address: the peer, or behind a trusted proxy the last untrusted address of
/// `X-Forwarded-For` (every line of it, in order, as one list: a proxy may add a line of
/// its own after the client's).
pub fn client_address(req: &HttpRequest, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = req.peer_addr()?.ip();
    if !trusted.iter().any(|net| net.contains(&peer)) {
        return Some(peer);
    }
    // Walked from the nearest hop back; a hop that is no address (`unknown`, an obfuscated
    // name, a line that is not text) ends the walk, and the client counts as the last proxy
    // itself: nothing beyond such a hop can be believed.
    let hops: Vec<Option<IpAddr>> = req
        .headers()
        .get_all("x-forwarded-for")
        .flat_map(|v| match v.to_str() {
            Ok(line) => line.split(',').map(forwarded_hop).collect::<Vec<_>>(),
            Err(_) => vec![None],
        })
        .collect();
    for hop in hops.into_iter().rev() {
        match hop {
            Some(ip) if trusted.iter().any(|net| net.contains(&ip)) => continue,
            Some(ip) => return Some(ip),
            None => return Some(peer),
        }
    }
    Some(peer)
}

/// One hop of `X-Forwarded-For`: an address, perhaps with a port (`203.0.113.9:5555`,
/// `[2001:db8::1]:443`) or in brackets.
fn forwarded_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse()
        .ok()
        .or_else(|| hop.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| hop.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
}

/// What the sign-in rate limit counts by: an IPv4 address, or an IPv6 client's /64 (one
/// host commonly holds a whole /64, and could otherwise take a new address per try).
fn rate_limit_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

/// Passes only while the client address is under the sign-in rate limit; 429 otherwise.
pub struct AuthRateLimit;

impl FromRequest for AuthRateLimit {
    type Error = actix_web::Error;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(
            check_auth_rate(req)
                .map(|_| AuthRateLimit)
                .map_err(Into::into),
        )
    }
}

/// Passes while the client address is under the sign-in rate limit (the API's sign-in
/// routes and the console's sign-in form share it); 429 otherwise.
pub fn check_auth_rate(req: &HttpRequest) -> Result<(), Error> {
    let state = state(req)?;
    let Some(address) = client_address(req, &state.settings.trusted_proxies) else {
        return Ok(());
    };
    state
        .auth_limiter
        .check_key(&rate_limit_key(address))
        .map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            Error::RateLimited {
                retry_after_secs: wait.as_secs() + 1,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Line {
        id: String,
        amount: i64,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "snake_case")]
    #[allow(dead_code)]
    enum Interval {
        Monthly,
        OneTime,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Order {
        name: String,
        interval: Interval,
        count: i64,
        note: Option<String>,
        lines: Vec<Line>,
        nested: Option<Line>,
    }

    fn fields(body: &str) -> Vec<(String, String)> {
        match parse_json::<Order>(body.as_bytes()) {
            Err(Error::Validation(errors)) => {
                errors.into_iter().map(|e| (e.field, e.message)).collect()
            }
            other => panic!("expected a 422, got {other:?}"),
        }
    }

    fn names(body: &str) -> Vec<String> {
        fields(body).into_iter().map(|(f, _)| f).collect()
    }

    #[test]
    fn every_missing_field_is_named_in_order() {
        assert_eq!(
            fields("{}"),
            [
                ("name".to_string(), "is required".to_string()),
                ("interval".to_string(), "is required".to_string()),
                ("count".to_string(), "is required".to_string()),
                ("lines".to_string(), "is required".to_string()),
            ]
        );
        assert_eq!(names(""), ["name", "interval", "count", "lines"]);
    }

    #[test]
    fn every_field_of_the_wrong_type_is_named_once_with_its_path() {
        let body = r#"{"name": 5, "interval": "weekly", "count": "x", "note": 7,
            "lines": [{"id": "a", "amount": 1}, {"id": 2}, {"amount": 3.5}]}"#;
        // In the document's key order (sorted: serde_json's map), each once.
        assert_eq!(
            names(body),
            [
                "count",
                "interval",
                "lines[1].id",
                "lines[1].amount",
                "lines[2].amount",
                "lines[2].id",
                "name",
                "note",
            ]
        );
        let errors = fields(body);
        assert!(
            errors[1].1.contains("unknown variant `weekly`"),
            "{errors:?}"
        );
        assert_eq!(errors[5].1, "is required");
    }

    #[test]
    fn a_stand_in_never_names_fields_inside_it() {
        // `nested` of the wrong type: a `{}` standing in would lack `id` and `amount`.
        assert_eq!(
            names(r#"{"name": "n", "interval": "monthly", "count": 1, "lines": [], "nested": 5}"#),
            ["nested"]
        );
        assert_eq!(
            names(r#"{"name": "n", "interval": "monthly", "count": 1, "lines": 5}"#),
            ["lines"]
        );
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Event {
        at: chrono::DateTime<chrono::Utc>,
        detail: Option<Line>,
        quantity: i64,
    }

    fn event_fields(body: &str) -> Vec<String> {
        match parse_json::<Vec<Event>>(body.as_bytes()) {
            Err(Error::Validation(errors)) => errors.into_iter().map(|e| e.field).collect(),
            other => panic!("expected a 422, got {other:?}"),
        }
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Batch {
        events: Vec<Event>,
    }

    fn batch_fields(body: &str) -> Vec<String> {
        match parse_json::<Batch>(body.as_bytes()) {
            Err(Error::Validation(errors)) => errors.into_iter().map(|e| e.field).collect(),
            other => panic!("expected a 422, got {other:?}"),
        }
    }

    #[test]
    fn times_and_optional_objects_are_stood_in_for_so_later_fields_are_named() {
        let body = r#"{"events": [
            {"at": "yesterday", "detail": 5, "quantity": 1},
            {"detail": null, "quantity": "2"},
            {"at": "2026-01-01T00:00:00Z", "quantity": 3}]}"#;
        assert_eq!(
            batch_fields(body),
            // A missing field is found after the present ones of its object.
            [
                "events[0].at",
                "events[0].detail",
                "events[1].quantity",
                "events[1].at"
            ]
        );
        // The root must be an object.
        assert_eq!(event_fields("[]"), ["body"]);
    }

    #[test]
    fn a_key_given_twice_is_refused_as_the_bytes_read() {
        let r = parse_json::<Order>(
            br#"{"name": "a", "interval": "monthly", "count": "x", "count": 1, "lines": []}"#,
        );
        assert!(
            matches!(&r, Err(Error::Validation(e)) if e.len() == 1 && e[0].field == "count"),
            "{r:?}"
        );
    }

    #[test]
    fn paths_through_map_keys_with_brackets_are_not_followed() {
        assert!(steps_of("m.a[").is_none());
        assert!(steps_of("m.a]").is_none());
        assert!(steps_of("a[1]x").is_none());
        assert!(steps_of("a[x]").is_none());
        assert!(steps_of("body").is_none());
        assert_eq!(steps_of("lines[1][2].id").map(|s| s.len()), Some(4));
    }

    #[test]
    fn a_large_body_is_read_again_only_within_the_budget() {
        let event = r#"{"at": "never", "quantity": "x"}"#;
        let small = format!(r#"{{"events": [{}]}}"#, [event; 5].join(","));
        assert_eq!(batch_fields(&small).len(), 10);
        // About 0.5 MiB: eight passes over it in all, not forty.
        let padding = " ".repeat(512 * 1024);
        let large = format!(r#"{{"events": [{}]}}{padding}"#, [event; 5].join(","));
        let named = batch_fields(&large);
        assert!(!named.is_empty() && named.len() < 10, "{named:?}");
        assert_eq!(named[0], "events[0].at");
    }

    #[test]
    fn a_body_that_fits_parses_and_broken_json_is_still_a_400() {
        let ok = parse_json::<Order>(
            br#"{"name": "n", "interval": "one_time", "count": 2.0, "lines": [{"id": "a", "amount": 1}]}"#,
        )
        .unwrap();
        assert_eq!(ok.count, 2);
        assert!(matches!(
            parse_json::<Order>(br#"{"name": "n", "#),
            Err(Error::MalformedBody(_))
        ));
        assert!(matches!(
            parse_json::<Order>(b"[1]"),
            Err(Error::Validation(e)) if e[0].field == "body"
        ));
    }

    #[test]
    fn every_forwarded_line_is_one_list_and_the_last_untrusted_hop_wins() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let request = |lines: &[&str]| {
            let mut r = actix_web::test::TestRequest::default()
                .peer_addr("10.0.0.2:40000".parse().unwrap());
            for line in lines {
                r = r.append_header(("x-forwarded-for", *line));
            }
            r.to_http_request()
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // The client's own line first, the proxy's after it: the proxy's word counts.
        assert_eq!(
            client_address(&request(&["9.9.7.1", "203.0.113.50"]), &trusted),
            Some(ip("203.0.113.50"))
        );
        assert_eq!(
            client_address(&request(&["9.9.7.1, 203.0.113.50, 10.0.0.7"]), &trusted),
            Some(ip("203.0.113.50"))
        );
        assert_eq!(
            client_address(&request(&["203.0.113.9:5555"]), &trusted),
            Some(ip("203.0.113.9"))
        );
        assert_eq!(
            client_address(&request(&["[2001:db8::1]:443"]), &trusted),
            Some(ip("2001:db8::1"))
        );
        assert_eq!(
            client_address(&request(&["[2001:db8::2]"]), &trusted),
            Some(ip("2001:db8::2"))
        );
        assert_eq!(
            client_address(&request(&[]), &trusted),
            Some(ip("10.0.0.2"))
        );
        // What lies beyond a hop that is no address cannot be believed.
        assert_eq!(
            client_address(&request(&["9.9.7.1, unknown"]), &trusted),
            Some(ip("10.0.0.2"))
        );
    }

    #[test]
    fn an_ipv6_client_is_rate_limited_by_its_64() {
        let key = |s: &str| rate_limit_key(s.parse().unwrap());
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:bbbb::2"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:203.0.113.5"), key("203.0.113.5"));
        assert_ne!(key("203.0.113.5"), key("203.0.113.6"));
    }
}
