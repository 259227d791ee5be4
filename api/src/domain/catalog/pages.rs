//! Catalog pages kept for a moment. The catalog is read far more often than it changes, and
//! a search ranked by relevance reads every listing that matches, which for a common word is
//! most of the catalog. So a page is computed once for all anonymous readers, or once for
//! all readers of one organization (what an organization sees depends only on the
//! organization), and served from memory for `ttl`. Concurrent readers of a page that is
//! not there yet wait for one computation instead of each running the search.
//!
//! A page between `ttl` and twice `ttl` old is served while one request searches it anew in
//! the background; older than that it is searched for the reader, unless a search for it is
//! already under way (searches in the background run one at a time and may queue on a busy
//! server), in which case it is served for at most [`STALE_LIMIT`] past `ttl`.
//!
//! A listing written through this instance starts a new generation of pages, so readers here
//! see the change at once; a change made through another instance shows within twice `ttl`,
//! or `ttl` + [`STALE_LIMIT`] while that instance is too busy to search anew.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::future::Cache;
use tokio::sync::Semaphore;

use super::listing::CatalogQuery;
use crate::domain::{Error, Result};

/// How long past its `ttl` a page may still be served while a search for it is queued or
/// running. Background searches run one at a time, and on a saturated server a search over
/// a common word takes a second or more, so with many such pages the last may come late.
const STALE_LIMIT: Duration = Duration::from_secs(60);

/// The longest `ttl` taken (longer ones are cut to it).
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PageKey {
    generation: u64,
    reader_org: Option<String>,
    query: CatalogQuery,
}

impl PageKey {
    /// Roughly what the key and a page's bookkeeping take in memory, for the size bound.
    fn weight(&self) -> usize {
        256 + self.reader_org.as_ref().map_or(0, String::len) + self.query.text_len()
    }
}

struct Page {
    body: Bytes,
    fresh_until: Instant,
    /// Whether a search for this page has been started (or queued) in the background.
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
    /// Searched for this request.
    Computed,
    /// Searched earlier (or by a concurrent request this one waited for), less than `ttl`
    /// ago.
    Cached,
    /// Searched more than `ttl` ago, while a search for it runs in the background.
    Stale,
}

pub struct CatalogPages {
    /// `None` when the cache is turned off.
    pages: Option<Cache<PageKey, Arc<Page>>>,
    ttl: Duration,
    generation: Arc<AtomicU64>,
    /// One page is searched in the background at a time: a search ranked over a common word
    /// keeps a core busy for a while, and many pages expire together, so refreshing them
    /// all at once would starve the requests served from the cache meanwhile.
    refresh_turn: Arc<Semaphore>,
}

impl CatalogPages {
    /// Pages are served `ttl` (zero turns the cache off; at most [`MAX_TTL`]), then as the
    /// module says; all of them take `max_bytes` at most (zero turns the cache off too).
    pub fn new(ttl: Duration, max_bytes: u64) -> Self {
        let ttl = ttl.min(MAX_TTL);
        let pages = (!ttl.is_zero() && max_bytes > 0).then(|| {
            Cache::builder()
                .time_to_live(ttl + STALE_LIMIT)
                .max_capacity(max_bytes)
                .weigher(|key: &PageKey, page: &Arc<Page>| {
                    u32::try_from(page.body.len() + key.weight()).unwrap_or(u32::MAX)
                })
                .build()
        });
        CatalogPages {
            pages,
            ttl,
            generation: Arc::new(AtomicU64::new(0)),
            refresh_turn: Arc::new(Semaphore::new(1)),
        }
    }

    /// The page of `query` for `reader_org` (`None`: anonymous): from the cache, or from
    /// `compute`, whose result is then kept. An error is not kept.
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
        let search = |body: F| async move { Ok::<_, Error>(Page::new(body.await?, ttl)) };
        let mut entry = pages
            .entry_by_ref(&key)
            .or_try_insert_with(search(compute()))
            .await
            .map_err(Arc::unwrap_or_clone)?;
        let now = Instant::now();
        let too_old = !entry.is_fresh()
            && now >= entry.value().fresh_until + ttl
            && !entry.value().refreshing.load(Ordering::Acquire);
        if too_old {
            // Too old to serve while searching in the background: search for this reader.
            pages.invalidate(&key).await;
            entry = pages
                .entry_by_ref(&key)
                .or_try_insert_with(search(compute()))
                .await
                .map_err(Arc::unwrap_or_clone)?;
        }
        let fresh = entry.is_fresh();
        let page = entry.into_value();
        if fresh {
            return Ok((page.body.clone(), Served::Computed));
        }
        if now < page.fresh_until {
            return Ok((page.body.clone(), Served::Cached));
        }
        if !page.refreshing.swap(true, Ordering::AcqRel) {
            self.refresh_in_background(pages, key, page.clone(), compute());
        }
        Ok((page.body.clone(), Served::Stale))
    }

    /// Searches `key`'s page anew when its turn comes, unless by then the page has been
    /// replaced or a listing written (its generation is no longer read).
    fn refresh_in_background<F>(
        &self,
        pages: &Cache<PageKey, Arc<Page>>,
        key: PageKey,
        stale: Arc<Page>,
        compute: F,
    ) where
        F: Future<Output = Result<Bytes>> + Send + 'static,
    {
        let (pages, turn, generation) = (
            pages.clone(),
            self.refresh_turn.clone(),
            self.generation.clone(),
        );
        let ttl = self.ttl;
        tokio::spawn(async move {
            let Ok(_turn) = turn.acquire_owned().await else {
                return;
            };
            let current = pages.get(&key).await;
            if generation.load(Ordering::Acquire) != key.generation
                || !current.is_some_and(|page| Arc::ptr_eq(&page, &stale))
            {
                return;
            }
            match compute.await {
                Ok(body) => pages.insert(key, Page::new(body, ttl)).await,
                // The next reader tries again.
                Err(_) => stale.refreshing.store(false, Ordering::Release),
            }
        });
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

    /// Waits (a few seconds at most) until `searches` have run.
    async fn until_searched(searches: &AtomicUsize, n: usize) {
        for _ in 0..500 {
            if searches.load(Ordering::SeqCst) >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(searches.load(Ordering::SeqCst), n);
    }

    #[tokio::test]
    async fn pages_are_kept_per_reader_refreshed_when_old_and_dropped_on_change() {
        let ttl = Duration::from_secs(1);
        let pages = CatalogPages::new(ttl, 1 << 20);
        let searches = Arc::new(AtomicUsize::new(0));
        let get = |org: Option<&str>, q: &str| {
            pages.get_or_compute(org.map(String::from), query(q), counting(&searches))
        };
        let page = |body: &str, served: Served| Some((Bytes::from(body.to_string()), served));

        assert_eq!(get(None, "rain").await.ok(), page("1", Served::Computed));
        assert_eq!(get(None, "rain").await.ok(), page("1", Served::Cached));
        let b = get(Some("org_b"), "rain").await.ok();
        assert_eq!(b, page("2", Served::Computed));
        assert_eq!(get(None, "snow").await.ok(), page("3", Served::Computed));

        // Past its ttl the old page is served once more while it is searched anew.
        tokio::time::sleep(ttl + Duration::from_millis(100)).await;
        assert_eq!(get(None, "rain").await.ok(), page("1", Served::Stale));
        until_searched(&searches, 4).await;
        let mut refreshed = None;
        for _ in 0..100 {
            refreshed = get(None, "rain").await.ok();
            if refreshed != page("1", Served::Stale) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(refreshed, page("4", Served::Cached));

        // Past twice its ttl, with no search under way, it is searched for the reader.
        tokio::time::sleep(ttl * 2 + Duration::from_millis(100)).await;
        assert_eq!(get(None, "snow").await.ok(), page("5", Served::Computed));

        // A write: every page is searched anew, and a refresh queued before it is dropped.
        let turn = pages.refresh_turn.clone().acquire_owned().await;
        tokio::time::sleep(ttl + Duration::from_millis(100)).await;
        assert_eq!(get(None, "snow").await.ok(), page("5", Served::Stale));
        pages.listings_changed();
        drop(turn);
        assert_eq!(get(None, "snow").await.ok(), page("6", Served::Computed));
        let b = get(Some("org_b"), "rain").await.ok();
        assert_eq!(b, page("7", Served::Computed));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            searches.load(Ordering::SeqCst),
            7,
            "the dropped refresh did not search"
        );
    }

    #[tokio::test]
    async fn concurrent_readers_of_a_missing_page_wait_for_one_search() {
        let pages = CatalogPages::new(Duration::from_secs(60), 1 << 20);
        let searches = Arc::new(AtomicUsize::new(0));
        let slow = || {
            let searches = searches.clone();
            async move {
                searches.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(200)).await;
                Ok(Bytes::from("page"))
            }
        };
        let readers = (0..8).map(|_| pages.get_or_compute(None, query("rain"), slow));
        let served = futures_util::future::join_all(readers).await;
        assert_eq!(searches.load(Ordering::SeqCst), 1);
        let computed = served
            .iter()
            .filter(|r| matches!(r, Ok((_, Served::Computed))))
            .count();
        assert_eq!(computed, 1, "one reader searched, the others waited for it");
        assert!(served
            .iter()
            .all(|r| matches!(r, Ok((body, _)) if body == &Bytes::from("page"))));
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
