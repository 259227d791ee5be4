//! Cursor pagination, one way for every list: newest-last by (created_at, id), opaque cursors.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{Datelike, NaiveDateTime};

use super::error::{Error, Result};

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 200;

/// A validated page request: how many rows, and after which (created_at, id).
#[derive(Debug, Clone)]
pub struct PageRequest {
    pub limit: i64,
    pub after: Option<(NaiveDateTime, String)>,
}

impl PageRequest {
    pub fn parse(limit: Option<i64>, cursor: Option<&str>) -> Result<Self> {
        let limit = match limit {
            None => DEFAULT_LIMIT,
            Some(n) if (1..=MAX_LIMIT).contains(&n) => n,
            Some(_) => {
                return Err(Error::validation(
                    "limit",
                    format!("must be between 1 and {MAX_LIMIT}"),
                ))
            }
        };
        let after = match cursor {
            None | Some("") => None,
            Some(c) => Some(decode(c).ok_or_else(|| {
                Error::validation("cursor", "is not a cursor this server issued")
            })?),
        };
        Ok(PageRequest { limit, after })
    }

    /// Rows to fetch: one more than the page, to know whether another page follows.
    pub fn fetch(&self) -> i64 {
        self.limit + 1
    }
}

/// A page of items and the cursor of the next one.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds the page from `fetch()` rows; `key` gives each row's (created_at, id).
    pub fn from_rows<R>(
        request: &PageRequest,
        rows: Vec<R>,
        key: impl Fn(&R) -> (NaiveDateTime, String),
        present: impl Fn(R) -> T,
    ) -> Page<T> {
        match Self::try_from_rows(request, rows, key, |r| {
            Ok::<T, std::convert::Infallible>(present(r))
        }) {
            Ok(page) => page,
            Err(never) => match never {},
        }
    }

    /// As `from_rows`, for a presentation that can fail (it reads more rows, say).
    pub fn try_from_rows<R, E>(
        request: &PageRequest,
        mut rows: Vec<R>,
        key: impl Fn(&R) -> (NaiveDateTime, String),
        present: impl FnMut(R) -> Result<T, E>,
    ) -> Result<Page<T>, E> {
        let more = rows.len() as i64 > request.limit;
        rows.truncate(request.limit as usize);
        let next_cursor = if more {
            rows.last().map(|r| encode_key(&key(r)))
        } else {
            None
        };
        Ok(Page {
            data: rows.into_iter().map(present).collect::<Result<_, E>>()?,
            next_cursor,
        })
    }
}

/// The cursor that resumes after the row with this (created_at, id).
pub fn encode_key((created_at, id): &(NaiveDateTime, String)) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}|{id}", created_at.and_utc().timestamp_micros()))
}

fn decode(cursor: &str) -> Option<(NaiveDateTime, String)> {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()?;
    let (micros, id) = raw.split_once('|')?;
    let at = cursor_instant(micros.parse().ok()?)?;
    (!id.is_empty() && id.len() <= 64 && cursor_text(id)).then(|| (at, id.to_string()))
}

/// A cursor's instant, if rows can have it: years 1 to 9999, which both databases hold
/// (PostgreSQL refuses what chrono reads from a forged cursor, such as year −29,719).
pub fn cursor_instant(micros: i64) -> Option<NaiveDateTime> {
    let at = chrono::DateTime::from_timestamp_micros(micros)?.naive_utc();
    (1..=9999).contains(&at.year()).then_some(at)
}

/// Whether a cursor's text can be a row's (PostgreSQL refuses text holding NUL).
pub fn cursor_text(text: &str) -> bool {
    !text.contains('\0')
}

impl PageRequest {
    /// The (created_at, id) rows must come after; the first page starts before everything.
    pub fn after_key(&self) -> (NaiveDateTime, String) {
        self.after
            .clone()
            .unwrap_or((chrono::DateTime::UNIX_EPOCH.naive_utc(), String::new()))
    }
}

/// Orders a diesel query by (created_at, id) and keeps the page's rows after the cursor.
#[macro_export]
macro_rules! after_cursor {
    ($query:expr, $page:expr, $created_at:expr, $id:expr) => {{
        let (at, id) = $page.after_key();
        $query
            .filter($created_at.gt(at).or($created_at.eq(at).and($id.gt(id))))
            .order(($created_at.asc(), $id.asc()))
            .limit($page.fetch())
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let at = chrono::DateTime::from_timestamp_micros(1_764_000_000_123_456)
            .unwrap()
            .naive_utc();
        let c = encode_key(&(at, "usr_abc".into()));
        assert_eq!(decode(&c), Some((at, "usr_abc".to_string())));
        assert!(PageRequest::parse(None, Some("!!")).is_err());
        for forged in [
            "-1000000000000000000|x",
            "9223372036854775807|x",
            "1|a\0b",
            "1|",
        ] {
            let c = URL_SAFE_NO_PAD.encode(forged);
            assert!(PageRequest::parse(None, Some(&c)).is_err(), "{forged}");
        }
        assert!(PageRequest::parse(Some(0), None).is_err());
        assert!(PageRequest::parse(Some(201), None).is_err());
        assert_eq!(PageRequest::parse(None, None).unwrap().limit, DEFAULT_LIMIT);
    }
}
