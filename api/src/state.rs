//! What every request handler shares: the pool, the clock, signing keys, settings, limiters.

use std::net::IpAddr;
use std::sync::Arc;

use actix_web::web;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use schema::{DbConnection, DbPool};

use crate::config::ServeSettings;
use crate::domain::catalog::pages::CatalogPages;
use crate::domain::clock::SharedClock;
use crate::domain::storage::Storage;
use crate::domain::tokens::TokenKeys;
use crate::domain::{Error, Result};
use crate::metrics::Metrics;

pub struct AppState {
    pub pool: DbPool,
    pub clock: SharedClock,
    pub tokens: Arc<TokenKeys>,
    pub settings: ServeSettings,
    /// Sign-up, token and refresh attempts per client address. Advisory, per process.
    pub auth_limiter: DefaultKeyedRateLimiter<IpAddr>,
    pub metrics: Metrics,
    /// Where asset bytes live.
    pub storage: Storage,
    /// Base of the absolute URLs handed out (signed download URLs), without a trailing `/`.
    pub public_url: String,
    /// Callers behind access tokens, read moments ago.
    pub callers: crate::domain::auth::CallerCache,
    /// Catalog pages computed moments ago.
    pub catalog_pages: CatalogPages,
}

impl AppState {
    pub fn new(
        pool: DbPool,
        clock: SharedClock,
        tokens: Arc<TokenKeys>,
        settings: ServeSettings,
        storage: Storage,
        public_url: String,
    ) -> Self {
        let per_minute = std::num::NonZeroU32::new(settings.auth_rate_limit.max(1))
            .unwrap_or(std::num::NonZeroU32::MIN);
        AppState {
            pool,
            clock,
            tokens,
            auth_limiter: RateLimiter::keyed(Quota::per_minute(per_minute)),
            metrics: Metrics::new(),
            storage,
            public_url,
            catalog_pages: CatalogPages::new(
                std::time::Duration::from_millis(settings.catalog_cache_ms),
                settings.catalog_cache_mib.saturating_mul(1024 * 1024),
            ),
            settings,
            callers: Default::default(),
        }
    }

    pub fn billing_defaults(&self) -> crate::domain::invoicing::BillingDefaults {
        crate::domain::invoicing::BillingDefaults {
            tax_rate_bps: self.settings.default_tax_rate_bps,
            fee_bps: self.settings.default_fee_bps,
        }
    }

    /// Runs database work on the blocking pool (diesel is synchronous), with a pooled connection.
    pub async fn db<T, F>(&self, work: F) -> Result<T>
    where
        F: FnOnce(&mut DbConnection) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let pool = self.pool.clone();
        web::block(move || {
            let mut conn = pool.get()?;
            work(&mut conn)
        })
        .await
        .map_err(|e| Error::internal(format!("blocking task failed: {e}")))?
    }
}

pub type State = web::Data<AppState>;
