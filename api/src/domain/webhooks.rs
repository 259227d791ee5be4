//! Outgoing webhooks: the endpoints an organization's admin registers, the signature every
//! delivery carries, and the guard that keeps deliveries off internal networks (DESIGN §6).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use hmac::{Hmac, Mac};
use schema::models::WebhookEndpoint;
use schema::schema::webhook_endpoints;
use schema::DbConnection;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::accounts;
use super::audit::{self, Entry};
use super::auth::{Caller, Capability};
use super::clock::{db_time, utc, Clock};
use super::db::transaction;
use super::error::{Error, Problems, Result};
use super::ids::{new_id, random_token};
use super::pagination::{Page, PageRequest};
use crate::after_cursor;

/// The event types an endpoint can ask for (`*` asks for all, those added later too).
pub const EVENT_TYPES: [&str; 12] = [
    "subscription.requested",
    "subscription.approved",
    "subscription.rejected",
    "subscription.term_ending",
    "revision.revoked",
    "invoice.finalized",
    "invoice.paid",
    "invoice.payment_failed",
    "invoice.voided",
    "credit_note.issued",
    "grants.suspended",
    "grants.restored",
];
pub const ALL_EVENTS: &str = "*";
pub const URL_MAX: usize = 2048;
/// Live endpoints per organization: each event fans out to every one of them.
pub const MAX_ENDPOINTS: i64 = 16;
pub const SECRET_PREFIX: &str = "whsec_";
pub const SIGNATURE_HEADER: &str = "Marketplace-Signature";
pub const EVENT_ID_HEADER: &str = "Marketplace-Event-Id";
pub const EVENT_TYPE_HEADER: &str = "Marketplace-Event-Type";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const USER_AGENT: &str = concat!("marketplace-webhooks/", env!("CARGO_PKG_VERSION"));

#[derive(Debug, Deserialize)]
pub struct NewEndpoint {
    pub url: String,
    pub events: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EndpointView {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub created_at: DateTime<Utc>,
}

/// A new endpoint: the only time its signing secret is shown.
#[derive(Debug, Serialize)]
pub struct CreatedEndpoint {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub secret: String,
    pub created_at: DateTime<Utc>,
}

// ---------- the endpoint's URL ----------

/// An absolute `http(s)` URL without credentials (a fragment is dropped), at most [`URL_MAX`]
/// characters, whose literal host is not this machine or a non-public address (unless the
/// server allows private addresses). Hosts given by name are checked again at each delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointUrl(String);

impl EndpointUrl {
    pub fn parse(raw: &str, allow_private: bool) -> Result<EndpointUrl, String> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err("must not be empty".into());
        }
        if raw.chars().count() > URL_MAX {
            return Err(format!("must be at most {URL_MAX} characters"));
        }
        const SHAPE: &str = "must be an absolute http:// or https:// URL";
        let url = reqwest::Url::parse(raw).map_err(|_| SHAPE.to_string())?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(SHAPE.into());
        }
        let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
            return Err(SHAPE.into());
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not contain credentials".into());
        }
        if !allow_private {
            match literal_ip(host) {
                Some(ip) => {
                    if let Some(why) = forbidden(ip) {
                        return Err(format!(
                            "must not point at a {why} address; webhooks go to public addresses"
                        ));
                    }
                }
                None => {
                    let name = host.trim_end_matches('.').to_ascii_lowercase();
                    if name == "localhost" || name.ends_with(".localhost") {
                        return Err(
                            "must not point at this machine; webhooks go to public addresses"
                                .into(),
                        );
                    }
                }
            }
        }
        // A fragment never leaves the client: drop it rather than store it.
        let mut url = url;
        url.set_fragment(None);
        Ok(EndpointUrl(url.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The address a URL host names literally (`127.0.0.1`, `[::1]`), if it is one. The URL
/// parser has already turned other IPv4 spellings (`2130706433`, `0x7f.1`) into dotted form.
fn literal_ip(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// Why deliveries may not go to this address, or `None` for a public one: loopback,
/// private, link-local, CGNAT, unspecified, broadcast, documentation, multicast, reserved,
/// and IPv6 forms that lead to such IPv4 addresses (IPv4-mapped ones are refused outright).
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(ip) => forbidden_v4(ip),
        IpAddr::V6(ip) => forbidden_v6(ip),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => "unspecified",
        _ if ip.is_loopback() => "loopback",
        _ if ip.is_private() => "private",
        _ if ip.is_link_local() => "link-local",
        (100, 64..=127, _) => "shared (CGNAT)",
        _ if ip.is_broadcast() => "broadcast",
        _ if ip.is_documentation() => "documentation",
        _ if ip.is_multicast() => "multicast",
        (192, 0, 0) => "protocol-assignment",
        (198, 18..=19, _) => "benchmarking",
        (240..=255, _, _) => "reserved",
        _ => return None,
    })
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    let embedded =
        |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    Some(match s {
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_loopback() => "loopback",
        [0, 0, 0, 0, 0, 0xffff, _, _] => "IPv4-mapped",
        // IPv4-translated (`::ffff:0:a.b.c.d`, RFC 2765), refused as mapped ones are.
        [0, 0, 0, 0, 0xffff, 0, _, _] => "IPv4-translated",
        // IPv4-compatible (deprecated), `::a.b.c.d`.
        [0, 0, 0, 0, 0, 0, _, _] => "IPv4-compatible",
        [x, ..] if x & 0xfe00 == 0xfc00 => "unique-local (private)",
        [x, ..] if x & 0xffc0 == 0xfe80 => "link-local",
        [x, ..] if x & 0xffc0 == 0xfec0 => "site-local",
        [x, ..] if x & 0xff00 == 0xff00 => "multicast",
        [0x2001, 0x0db8, ..] => "documentation",
        [0x0100, 0, 0, 0, ..] => "discard-only",
        // Teredo tunnels to an address we cannot check.
        [0x2001, 0, ..] => "Teredo",
        // Local-use NAT64 (64:ff9b:1::/48, RFC 8215): where the IPv4 address sits depends on
        // the network's prefix length, so none of it can be checked.
        [0x0064, 0xff9b, 0x0001, ..] => "local-use NAT64",
        // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) lead to the IPv4 address they embed.
        [0x0064, 0xff9b, 0, 0, 0, 0, hi, lo] if forbidden_v4(embedded(hi, lo)).is_some() => {
            "NAT64 form of a non-public"
        }
        [0x2002, hi, lo, ..] if forbidden_v4(embedded(hi, lo)).is_some() => {
            "6to4 form of a non-public"
        }
        _ => return None,
    })
}

// ---------- endpoints ----------

fn parse_events(problems: &mut Problems, raw: &[String]) -> Vec<String> {
    if raw.is_empty() {
        problems.push("events", "must name at least one event type, or `*`");
    }
    let mut events: Vec<String> = Vec::new();
    for (i, event) in raw.iter().enumerate() {
        let event = event.trim();
        if event != ALL_EVENTS && !EVENT_TYPES.contains(&event) {
            problems.push(
                format!("events[{i}]"),
                format!("must be one of {}, or `*`", EVENT_TYPES.join(", ")),
            );
        } else if !events.iter().any(|e| e == event) {
            events.push(event.to_string());
        }
    }
    events
}

/// The event types an endpoint stored as JSON asks for.
pub fn stored_events(endpoint: &WebhookEndpoint) -> Vec<String> {
    serde_json::from_str(&endpoint.events).unwrap_or_default()
}

/// Whether the endpoint asked for events of this type.
pub fn wants(endpoint: &WebhookEndpoint, event_type: &str) -> bool {
    stored_events(endpoint)
        .iter()
        .any(|e| e == ALL_EVENTS || e == event_type)
}

/// Registers an endpoint for the caller's organization (organization admins, never keys).
pub fn create_endpoint(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    caller: &Caller,
    request: NewEndpoint,
    allow_private: bool,
) -> Result<CreatedEndpoint> {
    caller.require(Capability::ManageOrganization)?;
    let mut problems = Problems::new();
    let url = problems.check("url", EndpointUrl::parse(&request.url, allow_private));
    let events = parse_events(&mut problems, &request.events);
    problems.finish()?;
    let url = url.ok_or(Error::internal("validation passed without a URL"))?;
    let events_json = serde_json::to_string(&events).map_err(Error::internal)?;
    transaction(conn, |conn| {
        // Also counts the endpoints one at a time: two creations at once cannot both pass.
        accounts::lock_for_management(conn, caller)?;
        let live: i64 = webhook_endpoints::table
            .filter(webhook_endpoints::organization_id.eq(&caller.organization_id))
            .filter(webhook_endpoints::deleted_at.is_null())
            .count()
            .get_result(conn)?;
        if live >= MAX_ENDPOINTS {
            return Err(Error::conflict(
                "too_many_webhook_endpoints",
                format!("an organization has at most {MAX_ENDPOINTS} webhook endpoints; delete one first"),
            ));
        }
        let now = clock.now();
        let row = WebhookEndpoint {
            id: new_id("whe"),
            organization_id: caller.organization_id.clone(),
            url: url.as_str().to_string(),
            events: events_json.clone(),
            secret: format!("{SECRET_PREFIX}{}", random_token(32)),
            created_at: db_time(now),
            deleted_at: None,
        };
        diesel::insert_into(webhook_endpoints::table)
            .values(&row)
            .execute(conn)?;
        audit::record(
            conn,
            clock,
            Entry::new(
                &caller.organization_id,
                &caller.principal(),
                "webhook_endpoint.created",
                &row.id,
            )
            .detail(serde_json::json!({ "events": events })),
        )?;
        Ok(CreatedEndpoint {
            id: row.id,
            url: row.url,
            events: events.clone(),
            secret: row.secret,
            created_at: now,
        })
    })
}

/// The organization's live endpoints, oldest first, without their secrets.
pub fn list_endpoints(
    conn: &mut DbConnection,
    caller: &Caller,
    page: &PageRequest,
) -> Result<Page<EndpointView>> {
    caller.require(Capability::ManageOrganization)?;
    let rows: Vec<WebhookEndpoint> = after_cursor!(
        webhook_endpoints::table
            .filter(webhook_endpoints::organization_id.eq(&caller.organization_id))
            .filter(webhook_endpoints::deleted_at.is_null()),
        page,
        webhook_endpoints::created_at,
        webhook_endpoints::id
    )
    .select(WebhookEndpoint::as_select())
    .load(conn)?;
    Ok(Page::from_rows(
        page,
        rows,
        |e| (e.created_at, e.id.clone()),
        |e| EndpointView {
            events: stored_events(&e),
            id: e.id,
            url: e.url,
            created_at: utc(e.created_at),
        },
    ))
}

/// Deletes an endpoint of the caller's organization: nothing more is sent to it, deliveries
/// still pending included. Another organization's endpoint, or a deleted one, is 404.
pub fn delete_endpoint(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    caller: &Caller,
    endpoint_id: &str,
) -> Result<()> {
    caller.require(Capability::ManageOrganization)?;
    transaction(conn, |conn| {
        accounts::lock_for_management(conn, caller)?;
        let deleted = diesel::update(
            webhook_endpoints::table
                .filter(webhook_endpoints::id.eq(endpoint_id))
                .filter(webhook_endpoints::organization_id.eq(&caller.organization_id))
                .filter(webhook_endpoints::deleted_at.is_null()),
        )
        .set(webhook_endpoints::deleted_at.eq(db_time(clock.now())))
        .execute(conn)?;
        if deleted == 0 {
            return Err(Error::NotFound("webhook endpoint"));
        }
        audit::record(
            conn,
            clock,
            Entry::new(
                &caller.organization_id,
                &caller.principal(),
                "webhook_endpoint.deleted",
                endpoint_id,
            ),
        )
    })
}

/// A live endpoint by id, for a delivery (`None` once deleted).
pub fn live_endpoint(
    conn: &mut DbConnection,
    endpoint_id: &str,
) -> Result<Option<WebhookEndpoint>> {
    Ok(webhook_endpoints::table
        .find(endpoint_id)
        .filter(webhook_endpoints::deleted_at.is_null())
        .select(WebhookEndpoint::as_select())
        .first(conn)
        .optional()?)
}

/// The organization's live endpoints that asked for `event_type`.
pub fn endpoints_for(
    conn: &mut DbConnection,
    organization_id: &str,
    event_type: &str,
) -> Result<Vec<WebhookEndpoint>> {
    let rows: Vec<WebhookEndpoint> = webhook_endpoints::table
        .filter(webhook_endpoints::organization_id.eq(organization_id))
        .filter(webhook_endpoints::deleted_at.is_null())
        .order((
            webhook_endpoints::created_at.asc(),
            webhook_endpoints::id.asc(),
        ))
        .select(WebhookEndpoint::as_select())
        .load(conn)?;
    Ok(rows.into_iter().filter(|e| wants(e, event_type)).collect())
}

// ---------- signing and sending ----------

/// `Marketplace-Signature`: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, keyed
/// with the endpoint's secret (the whole `whsec_…` string, as UTF-8 bytes).
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// One delivery of one event to one endpoint.
pub struct Delivery<'a> {
    pub url: &'a str,
    pub secret: &'a str,
    pub event_id: &'a str,
    pub event_type: &'a str,
    pub body: Vec<u8>,
    pub now: DateTime<Utc>,
}

/// Posts webhooks. The host is resolved at send time and every address it resolves to is
/// checked; the connection goes only to the checked addresses (DNS is pinned for the
/// request), follows no redirect, bypasses proxies, and times out quickly.
#[derive(Debug, Clone, Copy)]
pub struct Sender {
    allow_private: bool,
}

impl Sender {
    pub fn new(allow_private: bool) -> Self {
        Sender { allow_private }
    }

    /// `Ok` on a 2xx answer; otherwise why not, for the outbox's `last_error`.
    pub async fn send(&self, delivery: Delivery<'_>) -> std::result::Result<(), String> {
        let url = reqwest::Url::parse(delivery.url).map_err(|e| format!("bad URL: {e}"))?;
        let port = url.port_or_known_default().ok_or("the URL has no port")?;
        let host = url.host_str().ok_or("the URL has no host")?.to_string();
        let mut client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(USER_AGENT);
        match literal_ip(&host) {
            Some(ip) => self.check(&host, ip)?,
            None => {
                let addresses = self.resolve(&host, port).await?;
                client = client.resolve_to_addrs(&host, &addresses);
            }
        }
        let client = client
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let signed = signature(delivery.secret, delivery.now.timestamp(), &delivery.body);
        let response = client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signed)
            .header(EVENT_ID_HEADER, delivery.event_id)
            .header(EVENT_TYPE_HEADER, delivery.event_type)
            .body(delivery.body)
            .send()
            .await
            // Without the URL: its query may hold the receiver's own token.
            .map_err(|e| error_chain(&e.without_url()))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("the endpoint answered HTTP {}", status.as_u16()))
        }
    }

    fn check(&self, host: &str, ip: IpAddr) -> std::result::Result<(), String> {
        match forbidden(ip) {
            Some(why) if !self.allow_private => Err(format!(
                "refused: {host} is {ip}, a {why} address (MARKETPLACE_WEBHOOK_ALLOW_PRIVATE is off)"
            )),
            _ => Ok(()),
        }
    }

    /// Every address the host resolves to now, all checked: one non-public answer refuses
    /// the delivery, so a name cannot mix a public and an internal address.
    async fn resolve(&self, host: &str, port: u16) -> std::result::Result<Vec<SocketAddr>, String> {
        let lookup = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::lookup_host((host, port)))
            .await
            .map_err(|_| format!("resolving {host} timed out"))?
            .map_err(|e| format!("cannot resolve {host}: {e}"))?;
        let addresses: Vec<SocketAddr> = lookup.collect();
        if addresses.is_empty() {
            return Err(format!("{host} resolves to no address"));
        }
        for address in &addresses {
            self.check(host, address.ip())?;
        }
        Ok(addresses)
    }
}

/// An error and its causes on one line (reqwest's own message hides the interesting part).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_public_addresses_are_forbidden_in_every_spelling() {
        for bad in [
            "127.0.0.1",
            "127.1.2.3",
            "0.0.0.0",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "255.255.255.255",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "240.0.0.1",
            "198.18.0.1",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:8.8.8.8",
            "::127.0.0.1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::a9fe:a9fe",
            "64:ff9b:1::7f00:1",
            "::ffff:0:a9fe:a9fe",
            "::ffff:0:a00:1",
            "2002:7f00:1::1",
            "2001:0:4136:e378::1",
        ] {
            let ip: IpAddr = bad.parse().unwrap();
            assert!(forbidden(ip).is_some(), "{bad} should be forbidden");
        }
        for good in [
            "8.8.8.8",
            "1.1.1.1",
            "100.63.255.255",
            "100.128.0.1",
            "172.32.0.1",
            "2606:4700:4700::1111",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            let ip: IpAddr = good.parse().unwrap();
            assert_eq!(forbidden(ip), None, "{good} should be allowed");
        }
    }

    #[test]
    fn endpoint_urls() {
        let ok = EndpointUrl::parse(" https://hooks.example.com/in?x=1 ", false).unwrap();
        assert_eq!(ok.as_str(), "https://hooks.example.com/in?x=1");
        for bad in [
            "",
            "hooks.example.com/in",
            "ftp://example.com/",
            "https://user:pw@example.com/",
            "http://localhost:8080/",
            "http://api.localhost/",
            "http://127.0.0.1/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/",
            "http://[::ffff:10.0.0.1]/",
            "http://100.64.1.1/",
        ] {
            assert!(EndpointUrl::parse(bad, false).is_err(), "{bad}");
        }
        let long = format!("https://example.com/{}", "a".repeat(URL_MAX));
        assert!(EndpointUrl::parse(&long, true).is_err());
        assert!(EndpointUrl::parse("http://127.0.0.1:9000/hook", true).is_ok());
        assert!(EndpointUrl::parse("http://localhost/", true).is_ok());
        assert_eq!(
            EndpointUrl::parse("https://example.com/in#part", false)
                .unwrap()
                .as_str(),
            "https://example.com/in"
        );
    }

    #[test]
    fn signatures_cover_timestamp_and_body() {
        let a = signature("whsec_k", 1_700_000_000, br#"{"a":1}"#);
        assert!(a.starts_with("t=1700000000,v1="));
        assert_eq!(a.len(), "t=1700000000,v1=".len() + 64);
        assert_ne!(a, signature("whsec_k", 1_700_000_001, br#"{"a":1}"#));
        assert_ne!(a, signature("whsec_k", 1_700_000_000, br#"{"a":2}"#));
        assert_ne!(a, signature("whsec_j", 1_700_000_000, br#"{"a":1}"#));
    }

    #[test]
    fn names_that_resolve_to_loopback_are_refused_at_send_time() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let refused = runtime
            .block_on(Sender::new(false).resolve("localhost", 80))
            .unwrap_err();
        assert!(refused.contains("loopback"), "{refused}");
        assert!(runtime
            .block_on(Sender::new(true).resolve("localhost", 80))
            .is_ok());
    }
}
