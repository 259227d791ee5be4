//! Catalog pages kept for a moment. The catalog is read far more often than it changes, and
//! a search ranked by relevance reads every listing that matches, which for a common word is
//! most of the catalog. So a page is computed once for all anonymous readers, or once for
//! all readers of one organization (what an organization sees depends only on the
//! organization), and served from memory for `ttl`. Concurrent readers of a page that is
//! not there yet wait for one computation instead of each running the search; a page past
//! `ttl` is served while one request computes it anew.
//!
//! A listing written through this instance starts a new generation of pages, so readers here
//! see the change at once; a change made through another instance shows within `ttl`.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::future::Cache;
use tokio::sync::Semaphore;

use super::listing::CatalogQuery;
use crate::domain::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PageKey {
    generation: u64,
    reader_org: Option<String>,
    query: CatalogQuery,
}

struct Page {
    body: Bytes,
    fresh_until: Instant,
    /// Whether a request has started computing this page anew.
    refreshing: AtomicBool,
}

impl Page {
    fn new(body: Bytes, ttl: Duration) -> Arc<Page> {
        Arc::new(Page {
            body,
            fresh_until: Instant::now() + ttl,
            refreshing: AtomicBool::new(false),
        })
    }
}

/// Where a page came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// Computed for this request.
    Computed,
    /// Computed earlier (or by a concurrent request this one waited for), less than `ttl`
    /// ago.
    Cached,
    /// Computed more than `ttl` ago, while this request started computing it anew in the
    /// background (or another request had).
    Stale,
}

pub struct CatalogPages {
    /// `None` when the cache is turned off.
    pages: Option<Cache<PageKey, Arc<Page>>>,
    ttl: Duration,
    generation: AtomicU64,
    /// One page is computed in the background at a time: a search ranked over a common word
    /// keeps a core busy for a while, and many pages expire together, so refreshing them
    /// all at once would starve the requests served from the cache meanwhile.
    refresh_turn: Arc<Semaphore>,
}

/// How long past its `ttl` a page may still be served while it is computed anew. Refreshes
/// run one at a time, and on a saturated server a search over a common word can take a
/// second or more, so with many such pages the last refresh may come late.
const STALE_LIMIT: Duration = Duration::from_secs(60);

/// What a page's key and bookkeeping cost besides its body, roughly, for the size bound.
const KEY_BYTES: usize = 256;

impl CatalogPages {
    /// Pages are served `ttl` (zero turns the cache off), then for up to [`STALE_LIMIT`]
    /// more while they are computed anew; all of them take `max_bytes` at most.
    pub fn new(ttl: Duration, max_bytes: u64) -> Self {
        let pages = (!ttl.is_zero() && max_bytes > 0).then(|| {
            Cache::builder()
                .time_to_live(ttl.saturating_add(STALE_LIMIT))
                .max_capacity(max_bytes)
                .weigher(|_key: &PageKey, page: &Arc<Page>| {
                    u32::try_from(page.body.len() + KEY_BYTES).unwrap_or(u32::MAX)
                })
                .build()
        });
        CatalogPages {
            pages,
            ttl,
            generation: AtomicU64::new(0),
            refresh_turn: Arc::new(Semaphore::new(1)),
        }
    }

    /// The page of `query` for `reader_org` (`None`: anonymous): from the cache, or from
    /// `compute`, whose result is then kept. A page past its `ttl` is served once more
    /// while `compute` runs in the background to replace it, so readers do not queue
    /// behind a slow search every `ttl`. An error is not kept.
    pub async fn get_or_compute<F>(
        &self,
        reader_org: Option<String>,
        query: CatalogQuery,
        compute: impl Fn() -> F,
    ) -> Result<(Bytes, Served)>
    where
        F: Future<Output = Result<Bytes>> + Send + 'static,
    {
        let Some(pages) = &self.pages else {
            return Ok((compute().await?, Served::Computed));
        };
        let key = PageKey {
            generation: self.generation.load(Ordering::Acquire),
            reader_org,
            query,
        };
        let ttl = self.ttl;
        let first = compute();
        let entry = pages
            .entry_by_ref(&key)
            .or_try_insert_with(async move { Ok::<_, Error>(Page::new(first.await?, ttl)) })
            .await
            .map_err(Arc::unwrap_or_clone)?;
        let fresh = entry.is_fresh();
        let page = entry.into_value();
        if fresh {
            return Ok((page.body.clone(), Served::Computed));
        }
        if Instant::now() < page.fresh_until {
            return Ok((page.body.clone(), Served::Cached));
        }
        if !page.refreshing.swap(true, Ordering::AcqRel) {
            let (pages, again, stale) = (pages.clone(), compute(), page.clone());
            let turn = self.refresh_turn.clone();
            tokio::spawn(async move {
                let Ok(_turn) = turn.acquire_owned().await else {
                    return;
                };
                match again.await {
                    Ok(body) => pages.insert(key, Page::new(body, ttl)).await,
                    // The next reader tries again.
                    Err(_) => stale.refreshing.store(false, Ordering::Release),
                }
            });
        }
        Ok((page.body.clone(), Served::Stale))
    }

    /// Call once a write to listings has committed: pages of earlier generations are no
    /// longer served. A page is keyed by the generation read before its search ran, so a
    /// page of the new generation was read after the commit.
    pub fn listings_changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Some(pages) = &self.pages {
            pages.invalidate_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::domain::catalog::listing::{CatalogParams, CatalogQuery};

    fn query(q: &str) -> CatalogQuery {
        CatalogQuery::parse(&CatalogParams {
            q: Some(q.into()),
            ..Default::default()
        })
        .expect("a valid query")
    }

    /// A page source that counts its searches (when run, not when made) and answers with
    /// the count.
    fn counting(
        searches: &Arc<AtomicUsize>,
    ) -> impl Fn() -> std::pin::Pin<Box<dyn Future<Output = Result<Bytes>> + Send>> {
        let searches = searches.clone();
        move || {
            let searches = searches.clone();
            Box::pin(async move {
                let n = searches.fetch_add(1, Ordering::SeqCst) + 1;
                Ok(Bytes::from(n.to_string()))
            })
        }
    }

    #[tokio::test]
    async fn pages_are_kept_per_reader_refreshed_when_old_and_dropped_on_change() {
        let ttl = Duration::from_millis(200);
        let pages = CatalogPages::new(ttl, 1 << 20);
        let searches = Arc::new(AtomicUsize::new(0));
        let get = |org: Option<&str>, q: &str| {
            pages.get_or_compute(org.map(String::from), query(q), counting(&searches))
        };
        let page = |body: &str, served: Served| Some((Bytes::from(body.to_string()), served));

        assert_eq!(get(None, "rain").await.ok(), page("1", Served::Computed));
        assert_eq!(get(None, "rain").await.ok(), page("1", Served::Cached));
        assert_eq!(
            get(Some("org_b"), "rain").await.ok(),
            page("2", Served::Computed)
        );
        assert_eq!(get(None, "snow").await.ok(), page("3", Served::Computed));

        // Past its ttl the old page is served once more while it is searched anew.
        tokio::time::sleep(ttl + Duration::from_millis(50)).await;
        assert_eq!(get(None, "rain").await.ok(), page("1", Served::Stale));
        for _ in 0..100 {
            if searches.load(Ordering::SeqCst) == 4 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(get(None, "rain").await.ok(), page("4", Served::Cached));

        pages.listings_changed();
        assert_eq!(get(None, "rain").await.ok(), page("5", Served::Computed));
        assert_eq!(
            get(Some("org_b"), "rain").await.ok(),
            page("6", Served::Computed)
        );
    }

    #[tokio::test]
    async fn errors_are_not_kept_and_a_zero_ttl_keeps_nothing() {
        let pages = CatalogPages::new(Duration::from_secs(60), 1 << 20);
        let failing = || std::future::ready(Err(Error::Unavailable("database down".into())));
        assert!(pages
            .get_or_compute(None, query("x"), failing)
            .await
            .is_err());
        let searches = Arc::new(AtomicUsize::new(0));
        let ok = pages
            .get_or_compute(None, query("x"), counting(&searches))
            .await;
        assert_eq!(ok.ok(), Some((Bytes::from("1"), Served::Computed)));

        let off = CatalogPages::new(Duration::ZERO, 1 << 20);
        for n in ["2", "3"] {
            let got = off
                .get_or_compute(None, query("x"), counting(&searches))
                .await;
            assert_eq!(got.ok(), Some((Bytes::from(n), Served::Computed)));
        }
    }
}
