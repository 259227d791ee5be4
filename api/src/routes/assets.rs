//! Asset bytes: streamed uploads, streamed reads with HTTP ranges, signed download URLs.

use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::body::SizedStream;
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::Stream;

use super::extract::{authenticate, client_address, Authenticated, JsonBody};
use super::problem::Problem;
use super::respond::{created, secret};
use crate::domain::assets::{
    self, Denial, DownloadUrlRequest, ReadAccess, ReadRecord, Reader, SignedParams,
};
use crate::domain::{Error, Result};
use crate::state::State;

/// `PUT /v1/revisions/{id}/assets/{name}`: the raw body, streamed to storage while its
/// sha256 and size are computed; 201 with the asset.
pub async fn upload(
    state: State,
    Authenticated(caller): Authenticated,
    path: web::Path<(String, String)>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse> {
    let (revision_id, name) = path.into_inner();
    let name = assets::validate_name(&name)?;
    let content_type = match req.headers().get(header::CONTENT_TYPE) {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| {
            Error::validation("Content-Type", "must be a media type such as text/csv")
        })?),
    };
    let media_type = assets::media_type(content_type)?;
    let limit = state.settings.max_asset_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(Error::PayloadTooLarge {
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
        });
    }
    let who = caller.clone();
    let target = state
        .db(move |conn| assets::begin_upload(conn, &who, &revision_id))
        .await?;

    // The work runs in a task of its own: if the connection drops and actix drops this
    // handler, the task still sees the body break off, and removes what it stored; and a
    // commit that has started is never cut off between storing the row and the object.
    let work = async move {
        let storage = state.storage.clone();
        let stored = storage.put_stream(&target.storage_key, body, limit).await?;
        let key = target.storage_key.clone();
        let clock = state.clock.clone();
        let committed = state
            .db(move |conn| {
                assets::commit_upload(
                    conn,
                    clock.as_ref(),
                    &caller,
                    &target,
                    &name,
                    &media_type,
                    stored.size,
                    &stored.sha256,
                )
            })
            .await;
        match committed {
            Ok((view, replaced)) => {
                if let Some(old) = replaced {
                    storage.delete_quietly(&old).await;
                }
                Ok(view)
            }
            Err(e) => {
                storage.delete_quietly(&key).await;
                Err(e)
            }
        }
    };
    let view = actix_web::rt::spawn(work)
        .await
        .map_err(|e| Error::internal(format!("upload task failed: {e}")))??;
    Ok(created(&view))
}

/// `POST /v1/assets/{id}/download-url`: a URL that reads the asset without a header.
pub async fn download_url(
    state: State,
    Authenticated(caller): Authenticated,
    id: web::Path<String>,
    JsonBody(body): JsonBody<DownloadUrlRequest>,
) -> std::result::Result<HttpResponse, actix_web::Error> {
    let clock = state.clock.clone();
    let base = state.public_url.clone();
    let url = state
        .db(move |conn| assets::download_url(conn, clock.as_ref(), &caller, &id, body, &base))
        .await
        .map_err(with_denial_code)?;
    // A signed URL is a credential: never cached, never stored for idempotent replay.
    let mut builder = HttpResponse::Ok();
    builder.insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
    Ok(secret(builder, &url))
}

/// `GET /v1/assets/{id}/content`: the bytes, with an Authorization header or a signed URL
/// (`HEAD`: the same headers, no bytes).
pub async fn content(
    state: State,
    req: HttpRequest,
    id: web::Path<String>,
    signed: web::Query<SignedParams>,
) -> std::result::Result<HttpResponse, actix_web::Error> {
    let id = id.into_inner();
    let signed = signed.into_inner();
    let clock = state.clock.clone();
    let access = if signed.present() {
        // The signature is the credential; a header, if any, is not looked at.
        state
            .db(move |conn| assets::authorize_signed(conn, clock.as_ref(), &id, &signed))
            .await
    } else {
        let caller = authenticate(&req).await?.ok_or(Error::Unauthorized(
            "send Authorization: Bearer <access token or API key>, or use a signed download URL",
        ))?;
        state
            .db(move |conn| {
                assets::authorize_read(conn, clock.as_ref(), Reader::Caller(&caller), &id)
            })
            .await
    }
    .map_err(with_denial_code)?;

    let size = u64::try_from(access.asset.size).unwrap_or(0);
    let etag = format!("\"{}\"", access.asset.sha256);
    let range = match requested_range(req.headers(), &etag, size) {
        Requested::Unsatisfiable => {
            let mut response = Problem::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                format!("the asset has {size} bytes; no byte of the requested range exists"),
            )
            .response();
            let headers = response.headers_mut();
            headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                headers.insert(header::CONTENT_RANGE, v);
            }
            return Ok(response);
        }
        Requested::Whole => None,
        Requested::Part(first, last) => Some((first, last)),
    };
    let (status, length) = match range {
        Some((first, last)) => (StatusCode::PARTIAL_CONTENT, last - first + 1),
        None => (StatusCode::OK, size),
    };
    let bytes = if req.method() == Method::HEAD {
        // The headers only (size, ETag, range): nothing is read, sent, audited or metered.
        None
    } else {
        Some(
            state
                .storage
                .read(
                    &access.asset.storage_key,
                    // No range for the whole asset (an empty one has no range to ask for).
                    range.map(|(first, last)| first..last + 1),
                )
                .await?,
        )
    };

    let mut response = HttpResponse::build(status);
    response
        .insert_header((header::CONTENT_TYPE, content_type(&access.asset.media_type)))
        .insert_header((header::ETAG, etag))
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header((
            header::CONTENT_DISPOSITION,
            content_disposition(&access.asset.name),
        ))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::CONTENT_SECURITY_POLICY, "sandbox"))
        .insert_header((header::CACHE_CONTROL, "private, no-store"));
    if let Some((first, last)) = range {
        response.insert_header((
            header::CONTENT_RANGE,
            format!("bytes {first}-{last}/{size}"),
        ));
    }
    let Some(bytes) = bytes else {
        return Ok(response.body(SizedStream::new(
            length,
            futures_util::stream::empty::<Result<Bytes, actix_web::Error>>(),
        )));
    };
    let audit = ReadAudit {
        state: state.clone(),
        access,
        record: ReadRecord {
            bytes_sent: 0,
            range: range.map(|(first, last)| format!("{first}-{last}/{size}")),
            status: status.as_u16(),
            complete: false,
            started_at: state.clock.now(),
            client_address: client_address(&req, &state.settings.trusted_proxies)
                .map(|ip| ip.to_string()),
        },
        planned: length,
    };
    Ok(response.body(SizedStream::new(
        length,
        AuditedBody {
            inner: bytes,
            audit: Some(audit),
        },
    )))
}

/// 403s of the read rule keep their own codes (`no_live_grant`, `url_expired`...).
fn with_denial_code(e: Error) -> actix_web::Error {
    match Denial::of(&e) {
        Some(denial) => {
            let response =
                Problem::new(StatusCode::FORBIDDEN, denial.code(), e.to_string()).response();
            actix_web::error::InternalError::from_response(e, response).into()
        }
        None => e.into(),
    }
}

/// The stored media type, or octet-stream if it somehow is not a valid header value.
fn content_type(media_type: &str) -> HeaderValue {
    HeaderValue::from_str(media_type)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"))
}

/// `attachment` with an ASCII fallback `filename` and the exact name as RFC 6266 /
/// RFC 8187 `filename*=UTF-8''…`.
fn content_disposition(name: &str) -> String {
    let fallback: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && !matches!(c, '"' | '\\' | '%' | ';') || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    // attr-char of RFC 8187: ALPHA / DIGIT / "!#$&+-.^_`|~"; everything else is encoded.
    const ATTR: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'!')
        .remove(b'#')
        .remove(b'$')
        .remove(b'&')
        .remove(b'+')
        .remove(b'-')
        .remove(b'.')
        .remove(b'^')
        .remove(b'_')
        .remove(b'`')
        .remove(b'|')
        .remove(b'~');
    let encoded = percent_encoding::utf8_percent_encode(name, ATTR);
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

#[derive(Debug, PartialEq, Eq)]
enum Requested {
    Whole,
    /// First and last byte, inclusive.
    Part(u64, u64),
    Unsatisfiable,
}

/// Reads a single-range `Range: bytes=…` request (RFC 9110 §14). A header that does not
/// parse, several ranges, another unit, or an `If-Range` that does not match the ETag: the
/// whole asset.
fn requested_range(headers: &HeaderMap, etag: &str, size: u64) -> Requested {
    let Some(value) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Requested::Whole;
    };
    if let Some(if_range) = headers.get(header::IF_RANGE) {
        if if_range.to_str().ok().map(str::trim) != Some(etag) {
            return Requested::Whole;
        }
    }
    parse_range(value, size)
}

fn parse_range(value: &str, size: u64) -> Requested {
    let value = value.trim();
    let Some((unit, spec)) = value.split_once('=') else {
        return Requested::Whole;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return Requested::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Requested::Whole;
    };
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // Digits beyond u64: larger than any asset.
        Some(s.parse().unwrap_or(u64::MAX))
    };
    match (first.trim().is_empty(), number(first), number(last)) {
        // bytes=-n: the last n bytes.
        (true, _, Some(n)) => {
            if n == 0 || size == 0 {
                Requested::Unsatisfiable
            } else {
                Requested::Part(size.saturating_sub(n), size - 1)
            }
        }
        // bytes=a-
        (false, Some(a), None) if last.trim().is_empty() => {
            if a >= size {
                Requested::Unsatisfiable
            } else {
                Requested::Part(a, size - 1)
            }
        }
        // bytes=a-b
        (false, Some(a), Some(b)) if a <= b => {
            if a >= size {
                Requested::Unsatisfiable
            } else {
                Requested::Part(a, b.min(size - 1))
            }
        }
        _ => Requested::Whole,
    }
}

/// Writes the `asset.read` audit event when the response body is done with.
///
/// The event is written AFTER the body stream ends (it is dropped when the last byte has
/// gone out, the client went away, or storage failed), so it records the bytes actually
/// handed to the connection, not the planned length. The write runs on the blocking pool,
/// off the request; a process killed mid-download loses that read's event.
struct ReadAudit {
    state: State,
    access: ReadAccess,
    record: ReadRecord,
    planned: u64,
}

impl ReadAudit {
    fn finish(mut self) {
        self.record.complete = self.record.bytes_sent == self.planned;
        let pool = self.state.pool.clone();
        let clock = self.state.clock.clone();
        let (access, record) = (self.access, self.record);
        let write = move || {
            let outcome = pool.get().map_err(Error::from).and_then(|mut conn| {
                assets::record_read(&mut conn, clock.as_ref(), &access, &record)
            });
            if let Err(e) = outcome {
                tracing::error!(asset_id = %access.asset.id, error = %e, "could not audit an asset read");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(write)),
            Err(_) => write(),
        }
    }
}

/// The response body: the object's bytes, counted for the audit trail.
struct AuditedBody {
    inner: BoxStream<'static, std::io::Result<Bytes>>,
    audit: Option<ReadAudit>,
}

impl Stream for AuditedBody {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.inner.as_mut().poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(chunk))) => {
                let n = chunk.len() as u64;
                if let Some(audit) = self.audit.as_mut() {
                    audit.record.bytes_sent += n;
                }
            }
            Poll::Ready(Some(Err(e))) => {
                tracing::error!(error = %e, "reading an asset from storage failed mid-response");
            }
            _ => {}
        }
        polled
    }
}

impl Drop for AuditedBody {
    fn drop(&mut self) {
        if let Some(audit) = self.audit.take() {
            audit.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use Requested::*;
        let n = 100;
        assert_eq!(parse_range("bytes=0-0", n), Part(0, 0));
        assert_eq!(parse_range("bytes=10-19", n), Part(10, 19));
        assert_eq!(parse_range("bytes=90-200", n), Part(90, 99));
        assert_eq!(parse_range("bytes=95-", n), Part(95, 99));
        assert_eq!(parse_range("bytes=-5", n), Part(95, 99));
        assert_eq!(parse_range("bytes=-500", n), Part(0, 99));
        assert_eq!(parse_range("BYTES = 1-2", n), Part(1, 2));
        assert_eq!(parse_range("bytes=100-", n), Unsatisfiable);
        assert_eq!(parse_range("bytes=100-150", n), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", n), Unsatisfiable);
        assert_eq!(
            parse_range("bytes=99999999999999999999999-", n),
            Unsatisfiable
        );
        assert_eq!(parse_range("bytes=-1", 0), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), Unsatisfiable);
        for whole in [
            "bytes=5-1",
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=a-b",
            "bytes=-",
            "bytes=1",
            "bytes=+1-2",
            "garbage",
        ] {
            assert_eq!(parse_range(whole, n), Whole, "{whole}");
        }
    }

    #[test]
    fn dispositions_are_safe() {
        assert_eq!(
            content_disposition("obs.csv"),
            "attachment; filename=\"obs.csv\"; filename*=UTF-8''obs.csv"
        );
        assert_eq!(
            content_disposition("a \"b\";c%d é.txt"),
            "attachment; filename=\"a _b__c_d _.txt\"; filename*=UTF-8''a%20%22b%22%3Bc%25d%20%C3%A9.txt"
        );
        assert!(HeaderValue::from_str(&content_disposition("ü\u{202e}x")).is_ok());
    }
}
