//! Assets: uploading a file into an open revision, and reading one — the single
//! authorization rule every read goes through, signed download URLs, and the audit of reads.

use chrono::{DateTime, TimeZone, Utc};
use diesel::prelude::*;
use hmac::{Hmac, Mac};
use schema::models::{Asset, Revision};
use schema::schema::{assets, revisions};
use schema::DbConnection;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::accounts;
use super::audit::{self, Entry};
use super::auth::{Caller, Capability};
use super::catalog::data::{asset_view, listing_state, owned_revision, AssetView};
use super::catalog::readable_listing;
use super::clock::{db_time, Clock};
use super::commerce::grants;
use super::db::transaction;
use super::error::{Error, Result};
use super::ids::new_id;
use super::secrets;

/// The purpose under which URL signing keys are kept in the database.
pub const URL_SIGNING_PURPOSE: &str = "url_signing";

/// Signed URL lifetimes, seconds.
pub const DEFAULT_URL_LIFETIME: i64 = 300;
pub const MAX_URL_LIFETIME: i64 = 3600;

const MEDIA_TYPE_DEFAULT: &str = "application/octet-stream";

// ---------- names and media types ----------

/// An asset name: 1–255 characters, no `/`, `\` or control characters, not `.` or `..`.
pub fn validate_name(raw: &str) -> Result<String> {
    let message = if raw.is_empty() {
        Some("must not be empty")
    } else if raw.chars().count() > 255 {
        Some("must be at most 255 characters")
    } else if raw.contains('/') || raw.contains('\\') {
        Some("must not contain `/` or `\\`")
    } else if raw.chars().any(char::is_control) {
        Some("must not contain control characters")
    } else if raw.contains(char::REPLACEMENT_CHARACTER) {
        // What bytes that are not UTF-8 decode to: two different such names would be one.
        Some("must be UTF-8 text (no U+FFFD)")
    } else if raw == "." || raw == ".." {
        Some("must not be `.` or `..`")
    } else {
        None
    };
    match message {
        Some(m) => Err(Error::validation("name", m)),
        None => Ok(raw.to_string()),
    }
}

/// The media type from a `Content-Type` header: `application/octet-stream` when absent;
/// otherwise it must parse as a MIME type (`type/subtype` with optional parameters).
pub fn media_type(header: Option<&str>) -> Result<String> {
    let Some(raw) = header.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(MEDIA_TYPE_DEFAULT.to_string());
    };
    let invalid = || Error::validation("Content-Type", "must be a media type such as text/csv");
    if raw.len() > 255 {
        return Err(Error::validation(
            "Content-Type",
            "must be at most 255 characters",
        ));
    }
    let parsed: mime::Mime = raw.parse().map_err(|_| invalid())?;
    // `mime` lets an empty subtype (`text/`) through.
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    if !token(parsed.type_().as_str()) || !token(parsed.subtype().as_str()) {
        return Err(invalid());
    }
    Ok(parsed.to_string())
}

// ---------- upload ----------

/// Where an upload goes, decided before any byte is stored.
#[derive(Debug, Clone)]
pub struct UploadTarget {
    pub asset_id: String,
    pub storage_key: String,
    pub revision: Revision,
}

/// Checks that the caller may upload into the revision now: its provider with write rights
/// (404/403 otherwise), the revision open and its listing not archived (409 otherwise).
pub fn begin_upload(
    conn: &mut DbConnection,
    caller: &Caller,
    revision_id: &str,
) -> Result<UploadTarget> {
    let revision = owned_revision(conn, caller, revision_id)?;
    if revision.state != "open" {
        return Err(Error::conflict(
            "revision_not_open",
            format!(
                "the revision is {}; only an open revision takes uploads",
                revision.state
            ),
        ));
    }
    if listing_state(conn, &revision.listing_id)? == "archived" {
        return Err(Error::conflict(
            "listing_archived",
            "an archived listing takes no uploads",
        ));
    }
    let asset_id = new_id("ast");
    // Never the client's name: keys are ids only, grouped by organization.
    let storage_key = format!("{}/{}/{}", revision.organization_id, revision.id, asset_id);
    Ok(UploadTarget {
        asset_id,
        storage_key,
        revision,
    })
}

/// The bytes are stored: records the asset, replacing one of the same name in the same
/// revision. Returns the view and the storage key of the replaced object, which the caller
/// deletes after this commits. 409 if the revision stopped being open meanwhile.
#[allow(clippy::too_many_arguments)]
pub fn commit_upload(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    caller: &Caller,
    target: &UploadTarget,
    name: &str,
    media_type: &str,
    size: u64,
    sha256: &str,
) -> Result<(AssetView, Option<String>)> {
    let size = i64::try_from(size).map_err(|_| Error::internal("asset size overflows i64"))?;
    let revision = &target.revision;
    transaction(conn, |conn| {
        // Locks the revision row (PostgreSQL) so a finalize waits for this upload or this
        // upload sees the finalize, and two uploads of one name go one after the other.
        let still_open = diesel::update(
            revisions::table
                .find(&revision.id)
                .filter(revisions::state.eq("open")),
        )
        .set(revisions::state.eq("open"))
        .execute(conn)?;
        if still_open == 0 {
            return Err(Error::conflict(
                "revision_not_open",
                "the revision was finalized during the upload",
            ));
        }
        if schema::locks::listing_state(conn, &revision.listing_id)? == "archived" {
            return Err(Error::conflict(
                "listing_archived",
                "the listing was archived during the upload",
            ));
        }
        let replaced: Option<(String, String)> = assets::table
            .filter(assets::revision_id.eq(&revision.id))
            .filter(assets::name.eq(name))
            .select((assets::id, assets::storage_key))
            .first(conn)
            .optional()?;
        if let Some((old_id, _)) = &replaced {
            diesel::delete(assets::table.find(old_id)).execute(conn)?;
        }
        let asset = Asset {
            id: target.asset_id.clone(),
            revision_id: revision.id.clone(),
            dataset_id: revision.dataset_id.clone(),
            listing_id: revision.listing_id.clone(),
            organization_id: revision.organization_id.clone(),
            name: name.to_string(),
            media_type: media_type.to_string(),
            size,
            sha256: sha256.to_string(),
            storage_key: target.storage_key.clone(),
            created_at: db_time(clock.now()),
        };
        diesel::insert_into(assets::table)
            .values(&asset)
            .execute(conn)?;
        audit::record(
            conn,
            clock,
            Entry::new(
                &caller.organization_id,
                &caller.principal(),
                "asset.uploaded",
                &asset.id,
            )
            .detail(serde_json::json!({
                "revision_id": asset.revision_id,
                "name": asset.name,
                "size": asset.size,
                "sha256": asset.sha256,
                "replaced_asset_id": replaced.as_ref().map(|(id, _)| id),
            })),
        )?;
        Ok((asset_view(asset), replaced.clone().map(|(_, key)| key)))
    })
}

// ---------- reading: the one authorization rule ----------

/// Who asks to read an asset.
#[derive(Debug, Clone, Copy)]
pub enum Reader<'a> {
    /// A caller with credentials (access token or API key).
    Caller(&'a Caller),
    /// A verified signed URL: the organization it was signed for and the grant it names
    /// (none for the provider).
    SignedUrl {
        organization_id: &'a str,
        /// The user or API key the URL was issued to.
        by: &'a str,
        grant_id: Option<&'a str>,
    },
}

impl Reader<'_> {
    fn organization_id(&self) -> &str {
        match self {
            Reader::Caller(c) => &c.organization_id,
            Reader::SignedUrl {
                organization_id, ..
            } => organization_id,
        }
    }

    /// Who the audit trail names: the user or key (for a signed URL, the one it was
    /// issued to, as `signed_url:<user or key>`).
    fn actor(&self) -> String {
        match self {
            Reader::Caller(c) => c.principal(),
            Reader::SignedUrl { by, .. } => format!("signed_url:{by}"),
        }
    }
}

/// A read that is allowed now.
#[derive(Debug, Clone)]
pub struct ReadAccess {
    pub asset: Asset,
    /// The reading organization.
    pub organization_id: String,
    /// Who the audit trail names.
    pub actor: String,
    /// The grant the read is made under; `None` for the provider's own reads.
    pub grant_id: Option<String>,
    pub provider: bool,
    /// Whether the read came through a signed URL.
    pub signed_url: bool,
}

/// Why a read that the reader may know about is refused (403s with their own codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    NoLiveGrant,
    RevisionRevoked,
    BadSignature,
    UrlExpired,
    UrlRevoked,
}

impl Denial {
    const ALL: [Denial; 5] = [
        Denial::NoLiveGrant,
        Denial::RevisionRevoked,
        Denial::BadSignature,
        Denial::UrlExpired,
        Denial::UrlRevoked,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Denial::NoLiveGrant => "no_live_grant",
            Denial::RevisionRevoked => "revision_revoked",
            Denial::BadSignature => "invalid_signature",
            Denial::UrlExpired => "url_expired",
            Denial::UrlRevoked => "url_revoked",
        }
    }

    fn detail(self) -> &'static str {
        match self {
            Denial::NoLiveGrant => {
                "your organization holds no live access grant for this asset's listing"
            }
            Denial::RevisionRevoked => {
                "the provider revoked this revision; its data is no longer served"
            }
            Denial::BadSignature => "the URL's signature does not verify",
            Denial::UrlExpired => "the signed URL has expired; ask for a new one",
            Denial::UrlRevoked => {
                "the member or API key this URL was issued to has been removed or revoked"
            }
        }
    }

    /// The denial an error stands for, so the HTTP face can give it its own code.
    pub fn of(error: &Error) -> Option<Denial> {
        match error {
            Error::Forbidden(detail) => Denial::ALL.into_iter().find(|d| d.detail() == *detail),
            _ => None,
        }
    }
}

impl From<Denial> for Error {
    fn from(d: Denial) -> Error {
        Error::Forbidden(d.detail())
    }
}

/// The one rule for reading an asset's bytes, run at the moment of every read (header or
/// signed URL): the provider always may; any other organization gets 404 unless it can see
/// the listing or holds a live grant on it (an archived listing, or one no longer shared
/// with it) and the revision is not open, then 403 unless the revision is not revoked and
/// it holds a live grant covering the asset now.
pub fn authorize_read(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    reader: Reader<'_>,
    asset_id: &str,
) -> Result<ReadAccess> {
    if let Reader::Caller(caller) = reader {
        caller.require(Capability::ReadData)?;
    }
    let org = reader.organization_id();
    let asset: Asset = assets::table
        .find(asset_id)
        .select(Asset::as_select())
        .first(conn)
        .optional()?
        .ok_or(Error::NotFound("asset"))?;
    let access = |grant_id: Option<String>, provider: bool| ReadAccess {
        organization_id: org.to_string(),
        actor: reader.actor(),
        grant_id,
        provider,
        signed_url: matches!(reader, Reader::SignedUrl { .. }),
        asset: asset.clone(),
    };
    if org == asset.organization_id {
        return Ok(access(None, true));
    }
    let named = match reader {
        Reader::SignedUrl { grant_id, .. } => grant_id,
        Reader::Caller(_) => None,
    };
    let grant = live_grant(conn, clock, org, &asset, named)?;
    // A listing the reader may not see (archived, or no longer shared with it) hides its
    // files, except from a subscriber whose grant is live: its subscription runs its course.
    match readable_listing(conn, Some(org), &asset.listing_id) {
        Ok(_) => {}
        Err(Error::NotFound(_)) if grant.is_some() => {}
        Err(Error::NotFound(_)) => return Err(Error::NotFound("asset")),
        Err(e) => return Err(e),
    }
    let state: String = revisions::table
        .find(&asset.revision_id)
        .select(revisions::state)
        .first(conn)?;
    match state.as_str() {
        // Others never see an open revision, nor its files.
        "open" => return Err(Error::NotFound("asset")),
        "revoked" => return Err(Denial::RevisionRevoked.into()),
        _ => {}
    }
    match grant {
        Some(grant_id) => Ok(access(Some(grant_id), false)),
        None => Err(Denial::NoLiveGrant.into()),
    }
}

/// The grant under which `organization_id` may read `asset` now: the one a signed URL
/// names if it is still live, else the live one whose subscription started earliest.
fn live_grant(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    organization_id: &str,
    asset: &Asset,
    named: Option<&str>,
) -> Result<Option<String>> {
    let now = db_time(clock.now());
    let grant = match named {
        Some(id) => grants::still_live(conn, id, organization_id, &asset.listing_id, now)?,
        None => grants::live_grant(conn, organization_id, &asset.listing_id, now)?,
    };
    Ok(grant.map(|g| g.id))
}

// ---------- signed URLs ----------

/// The query parameters of a signed download URL, as received (all strings: the signature
/// covers them exactly as sent).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SignedParams {
    pub org: Option<String>,
    pub grant: Option<String>,
    /// The user or API key the URL was issued to.
    pub by: Option<String>,
    pub expires: Option<String>,
    pub kid: Option<String>,
    pub sig: Option<String>,
}

impl SignedParams {
    /// Whether the request tries to use a signature at all.
    pub fn present(&self) -> bool {
        self.org.is_some()
            || self.grant.is_some()
            || self.by.is_some()
            || self.expires.is_some()
            || self.kid.is_some()
            || self.sig.is_some()
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct DownloadUrlRequest {
    pub expires_in: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DownloadUrl {
    pub url: String,
    pub expires_at: DateTime<Utc>,
}

/// The bytes the MAC covers: every field length-prefixed, so no two different sets of
/// parameters can produce the same message.
fn signing_message(
    asset_id: &str,
    org: &str,
    grant: &str,
    by: &str,
    expires: &str,
    kid: &str,
) -> Vec<u8> {
    let mut message = b"marketplace-download-url-v2".to_vec();
    for field in [asset_id, org, grant, by, expires, kid] {
        message.extend_from_slice(format!("\n{}:", field.len()).as_bytes());
        message.extend_from_slice(field.as_bytes());
    }
    message
}

fn mac(secret: &[u8]) -> Result<Hmac<Sha256>> {
    Hmac::<Sha256>::new_from_slice(secret).map_err(|e| Error::internal(format!("hmac key: {e}")))
}

/// Issues a URL for reading the asset without a header, signed over the asset, the caller's
/// organization, the grant it reads under, the user or key it is issued to, the expiry and
/// the signing key's id. The caller must be allowed to read now (same rule as a read).
pub fn download_url(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    caller: &Caller,
    asset_id: &str,
    input: DownloadUrlRequest,
    public_url: &str,
) -> Result<DownloadUrl> {
    let lifetime = input.expires_in.unwrap_or(DEFAULT_URL_LIFETIME);
    if !(1..=MAX_URL_LIFETIME).contains(&lifetime) {
        return Err(Error::validation(
            "expires_in",
            format!("must be between 1 and {MAX_URL_LIFETIME} seconds"),
        ));
    }
    let access = authorize_read(conn, clock, Reader::Caller(caller), asset_id)?;
    let key = secrets::current_or_create(conn, clock, URL_SIGNING_PURPOSE)?;
    let expires_at = clock.now() + chrono::Duration::seconds(lifetime);
    let expires = expires_at.timestamp().to_string();
    let grant = access.grant_id.clone().unwrap_or_default();
    let by = caller.principal();
    let mut mac = mac(&key.secret)?;
    mac.update(&signing_message(
        &access.asset.id,
        &access.organization_id,
        &grant,
        &by,
        &expires,
        &key.id,
    ));
    let sig = hex::encode(mac.finalize().into_bytes());
    let query = [
        ("org", access.organization_id.as_str()),
        ("grant", grant.as_str()),
        ("by", by.as_str()),
        ("expires", expires.as_str()),
        ("kid", key.id.as_str()),
        // Last, so a URL cut short loses the signature, not a signed field.
        ("sig", sig.as_str()),
    ]
    .iter()
    .map(|(k, v)| format!("{k}={}", url_encode(v)))
    .collect::<Vec<_>>()
    .join("&");
    Ok(DownloadUrl {
        url: format!(
            "{}/v1/assets/{}/content?{query}",
            public_url.trim_end_matches('/'),
            url_encode(&access.asset.id)
        ),
        expires_at: Utc
            .timestamp_opt(expires_at.timestamp(), 0)
            .single()
            .unwrap_or(expires_at),
    })
}

/// Percent-encodes all but RFC 3986's unreserved characters (ids pass unchanged).
fn url_encode(s: &str) -> String {
    const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, UNRESERVED).to_string()
}

/// Verifies a signed URL for `asset_id` and runs the read rule for the organization it was
/// signed for, at this moment. Any tampered byte, another asset, an unknown key: 403
/// `invalid_signature`; past its expiry: 403 `url_expired`; issued to a member since
/// removed, or to an API key since revoked: 403 `url_revoked`.
pub fn authorize_signed(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    asset_id: &str,
    params: &SignedParams,
) -> Result<ReadAccess> {
    let bad = || Error::from(Denial::BadSignature);
    let (Some(org), Some(by), Some(expires), Some(kid), Some(sig)) = (
        params.org.as_deref(),
        params.by.as_deref(),
        params.expires.as_deref(),
        params.kid.as_deref(),
        params.sig.as_deref(),
    ) else {
        return Err(bad());
    };
    let grant = params.grant.as_deref().unwrap_or("");
    let signature = hex::decode(sig).map_err(|_| bad())?;
    let key = secrets::all(conn, URL_SIGNING_PURPOSE)?
        .into_iter()
        .find(|k| k.id == kid)
        .ok_or_else(bad)?;
    let mut mac = mac(&key.secret)?;
    mac.update(&signing_message(asset_id, org, grant, by, expires, kid));
    // Constant-time comparison.
    mac.verify_slice(&signature).map_err(|_| bad())?;
    let expires: i64 = expires.parse().map_err(|_| bad())?;
    if clock.now().timestamp() >= expires {
        return Err(Denial::UrlExpired.into());
    }
    if !accounts::principal_is_live(conn, org, by)? {
        return Err(Denial::UrlRevoked.into());
    }
    let reader = Reader::SignedUrl {
        organization_id: org,
        by,
        grant_id: Some(grant).filter(|g| !g.is_empty()),
    };
    authorize_read(conn, clock, reader, asset_id)
}

// ---------- audit of reads ----------

/// What a finished read sent.
#[derive(Debug, Clone)]
pub struct ReadRecord {
    /// Bytes handed to the connection.
    pub bytes_sent: u64,
    /// The byte range served (`first-last/size`), `None` for the whole asset.
    pub range: Option<String>,
    pub status: u16,
    /// Whether the whole planned body went out (false: the client went away, or storage failed).
    pub complete: bool,
    pub started_at: DateTime<Utc>,
    pub client_address: Option<String>,
}

/// Records an `asset.read` audit event: who (a user, a key, or `signed_url:<the user or key
/// it was issued to>`), which asset, the bytes sent, the range, when, from where, under
/// which grant.
pub fn record_read(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    access: &ReadAccess,
    read: &ReadRecord,
) -> Result<()> {
    // A subscriber's read is metered to the grant it was made under, with the audit event.
    crate::domain::db::transaction(conn, |conn| {
        if let Some(grant_id) = access.grant_id.as_deref() {
            grants::meter_read(conn, clock, grant_id, read.bytes_sent as i64)?;
        }
        audit_read(conn, clock, access, read)
    })
}

fn audit_read(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    access: &ReadAccess,
    read: &ReadRecord,
) -> Result<()> {
    let asset = &access.asset;
    audit::record(
        conn,
        clock,
        Entry::new(
            &access.organization_id,
            &access.actor,
            "asset.read",
            &asset.id,
        )
        .grant(access.grant_id.as_deref())
        .client_address(read.client_address.as_deref())
        .detail(serde_json::json!({
            "bytes_sent": read.bytes_sent,
            "range": read.range,
            "status": read.status,
            "complete": read.complete,
            "started_at": read.started_at,
            "via": if access.signed_url { "signed_url" } else { "credentials" },
            "provider_organization_id": asset.organization_id,
            "listing_id": asset.listing_id,
            "revision_id": asset.revision_id,
            "size": asset.size,
        })),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in [
            "a",
            "obs.csv",
            "...",
            "..a",
            "näme with spaces.parquet",
            &"x".repeat(255),
        ] {
            assert_eq!(validate_name(good).unwrap(), good);
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a\\b",
            "a\u{1}b",
            "a\u{7f}",
            "a\nb",
            "a\u{85}",
            "\u{fffd}",
            &"é".repeat(256),
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn media_types() {
        assert_eq!(media_type(None).unwrap(), "application/octet-stream");
        assert_eq!(media_type(Some(" ")).unwrap(), "application/octet-stream");
        assert_eq!(media_type(Some("text/csv")).unwrap(), "text/csv");
        assert_eq!(
            media_type(Some("text/csv; charset=utf-8")).unwrap(),
            "text/csv; charset=utf-8"
        );
        for bad in ["csv", "text/", "/csv", "*/*", "text/csv; =", "a b/c"] {
            assert!(media_type(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn signing_messages_are_unambiguous() {
        assert_ne!(
            signing_message("a", "b\n1:c", "", "u", "1", "k"),
            signing_message("a", "b", "c", "u", "1", "k")
        );
        assert_ne!(
            signing_message("ab", "c", "", "u", "1", "k"),
            signing_message("a", "bc", "", "u", "1", "k")
        );
    }

    #[test]
    fn denials_round_trip_through_errors() {
        for d in Denial::ALL {
            assert_eq!(Denial::of(&Error::from(d)), Some(d));
        }
        assert_eq!(Denial::of(&Error::Forbidden("other")), None);
    }
}
