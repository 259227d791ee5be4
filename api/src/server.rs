//! Wiring: builds the pool, loads the signing keys, and starts the HTTP server on a listener
//! (port 0 in tests, so they can read the port back).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};
use anyhow::Context as _;

use crate::config::{CommonSettings, ServeSettings};
use crate::domain::clock::SharedClock;
use crate::domain::commerce::lifecycle;
use crate::domain::invoicing::stripe::Stripe;
use crate::domain::invoicing::{grace, payments};
use crate::domain::outbox::{Courier, CourierSettings};
use crate::domain::storage::{Storage, StorageConfig};
use crate::domain::tokens::{TokenKeys, JWT_PURPOSE};
use crate::domain::{accounts, idempotency, secrets, Error};
use crate::middleware;
use crate::routes;
use crate::state::AppState;

pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
    courier: Arc<Courier>,
    /// The Stripe gateway, when a key is set (`None`: payments are manual).
    stripe: Option<Arc<Stripe>>,
}

impl Application {
    /// Connects and migrates the database, then binds `serve.listen`.
    pub fn build(
        common: &CommonSettings,
        serve: ServeSettings,
        clock: SharedClock,
    ) -> anyhow::Result<Application> {
        common.ensure_data_dir()?;
        let pool = schema::connect(
            &common.database_url(),
            common.database_pool_size,
            true,
            schema::FileReads::Mapped,
        )
        .context("cannot open the database")?;
        let tokens = {
            let mut conn = pool.get().context("cannot get a database connection")?;
            // Not a reason to refuse to start: the next start tries again.
            match accounts::normalize_stored_emails(&mut conn) {
                Ok(0) => {}
                Ok(rewritten) => tracing::info!(rewritten, "stored e-mail addresses normalized"),
                Err(e) => tracing::warn!(error = %e, "stored e-mail addresses not normalized"),
            }
            let current = secrets::current_or_create(&mut conn, clock.as_ref(), JWT_PURPOSE)
                .map_err(anyhow_of)?;
            let all = secrets::all(&mut conn, JWT_PURPOSE).map_err(anyhow_of)?;
            Arc::new(TokenKeys::new(current, all, serve.access_token_ttl))
        };
        let listener = TcpListener::bind(&serve.listen)
            .with_context(|| format!("cannot listen on {}", serve.listen))?;
        let port = listener.local_addr()?.port();
        let public_url = public_url(&serve, listener.local_addr()?)?;
        let storage = Storage::open(&storage_config(common, &serve)?).map_err(anyhow_of)?;
        tracing::info!(storage = storage.describe(), "asset storage");
        let courier = Arc::new(
            Courier::new(
                pool.clone(),
                clock.clone(),
                CourierSettings {
                    smtp_url: serve.smtp_url.clone(),
                    mail_from: serve.mail_from.clone(),
                    mail_dir: common.data_dir.join("mail"),
                    webhook_allow_private: serve.webhook_allow_private,
                },
            )
            .map_err(|e| anyhow::anyhow!(e))?,
        );
        tracing::info!(mail = courier.describe_mail(), "outbox");
        let stripe =
            payments::gateway(serve.payments.stripe_key(), &serve.payments.stripe_api_base)
                .map_err(|e| anyhow::anyhow!(e))?;
        match &stripe {
            Some(_) => {
                tracing::info!(api = %serve.payments.stripe_api_base, "payments: collected with Stripe");
                if serve.payments.webhook_secrets().is_empty() {
                    tracing::warn!("MARKETPLACE_STRIPE_WEBHOOK_SECRETS is not set: Stripe's webhooks will be refused");
                }
            }
            None => tracing::info!("payments: manual (no MARKETPLACE_STRIPE_SECRET_KEY)"),
        }
        let workers = serve.workers;
        let pool_size = common.database_pool_size;
        let state = web::Data::new(AppState::new(
            pool, clock, tokens, serve, storage, public_url,
        ));
        let app_state = state.clone();
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(app_state.clone())
                .configure(routes::configure)
                .configure(crate::console::configure)
                .default_service(web::to(not_found))
                .wrap(from_fn(middleware::idempotency))
                .wrap(from_fn(middleware::replace_nul_characters))
                .wrap(from_fn(middleware::problems_everywhere))
                .wrap(from_fn(middleware::catch_panic))
                .wrap(from_fn(middleware::observe))
        })
        // Database work runs on the blocking pool; more threads than connections only wait.
        .worker_max_blocking_threads(pool_size.max(2) as usize)
        .listen(listener)?;
        if let Some(n) = workers {
            server = server.workers(n);
        }
        Ok(Application {
            port,
            server: server.run(),
            state,
            courier,
            stripe,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The outbox's courier: `serve` runs it every poll interval; tests call
    /// `deliver_due` on it to deliver at once.
    pub fn courier(&self) -> Arc<Courier> {
        self.courier.clone()
    }

    /// Stops the server from elsewhere (tests stop theirs when they end).
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serves until the process is told to stop, with the background housekeeping running.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let state = self.state.clone();
        let housekeeping = actix_web::rt::spawn(async move {
            let mut tick = actix_web::rt::time::interval(Duration::from_secs(3600));
            loop {
                tick.tick().await;
                let clock = state.clock.clone();
                match state
                    .db(move |conn| idempotency::purge(conn, clock.as_ref()))
                    .await
                {
                    Ok(n) if n > 0 => {
                        tracing::info!(purged = n, "expired idempotency keys removed")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "idempotency purge failed"),
                }
            }
        });
        let lifecycle = spawn_lifecycle_worker(self.state.clone(), self.stripe.clone());
        let outbox_poll = Duration::from_millis(self.state.settings.outbox_poll_ms);
        let outbox = (!outbox_poll.is_zero())
            .then(|| actix_web::rt::spawn(self.courier.clone().run(outbox_poll)));
        let result = self.server.await;
        housekeeping.abort();
        if let Some(worker) = outbox {
            worker.abort();
        }
        if let Some(worker) = lifecycle {
            worker.abort();
        }
        result
    }
}

/// Renewals, expiries and period changes, then the grace pass and payment collection, every
/// `jobs_interval` seconds (0: off).
fn spawn_lifecycle_worker(
    state: web::Data<AppState>,
    stripe: Option<Arc<Stripe>>,
) -> Option<actix_web::rt::task::JoinHandle<()>> {
    let every = state.settings.jobs_interval;
    (every > 0).then(|| {
        actix_web::rt::spawn(async move {
            let mut tick = actix_web::rt::time::interval(Duration::from_secs(every));
            loop {
                tick.tick().await;
                let clock = state.clock.clone();
                match state
                    .db(move |conn| lifecycle::run_once(conn, clock.as_ref()))
                    .await
                {
                    Ok(report) if report != lifecycle::Report::default() => {
                        tracing::info!(?report, "lifecycle pass")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "lifecycle pass failed"),
                }
                let (clock, days) = (state.clock.clone(), state.settings.payments.grace_days);
                match state
                    .db(move |conn| grace::run_once(conn, clock.as_ref(), days))
                    .await
                {
                    Ok(report) if report != grace::Report::default() => {
                        tracing::info!(?report, "grace pass")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "grace pass failed"),
                }
                if let Some(stripe) = &stripe {
                    match payments::collect_due(&state.pool, state.clock.clone(), stripe).await {
                        Ok(report) if report != payments::Report::default() => {
                            tracing::info!(?report, "payment collection")
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "payment collection failed"),
                    }
                }
            }
        })
    })
}

async fn not_found() -> Result<actix_web::HttpResponse, Error> {
    Err(Error::NotFound("route"))
}

/// Local files under `<data dir>/objects`, or the S3 bucket if one is named.
fn storage_config(common: &CommonSettings, serve: &ServeSettings) -> anyhow::Result<StorageConfig> {
    let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
    match nonempty(&serve.s3_bucket) {
        Some(bucket) => Ok(StorageConfig::S3 {
            bucket,
            endpoint: nonempty(&serve.s3_endpoint),
            region: nonempty(&serve.s3_region),
        }),
        None if nonempty(&serve.s3_endpoint).is_some() => {
            anyhow::bail!("MARKETPLACE_S3_ENDPOINT is set but MARKETPLACE_S3_BUCKET is not")
        }
        None => Ok(StorageConfig::Local {
            root: common.data_dir.join("objects"),
        }),
    }
}

/// `MARKETPLACE_PUBLIC_URL`, or `http://` and the bound address (loopback for a wildcard).
fn public_url(serve: &ServeSettings, bound: SocketAddr) -> anyhow::Result<String> {
    if let Some(url) = serve.public_url.as_deref().filter(|u| !u.trim().is_empty()) {
        let url = url.trim().trim_end_matches('/');
        if !(url.starts_with("http://") || url.starts_with("https://")) || url.contains(['?', '#'])
        {
            anyhow::bail!(
                "MARKETPLACE_PUBLIC_URL must be an http:// or https:// base URL, got `{url}`"
            );
        }
        return Ok(url.to_string());
    }
    let mut address = bound;
    if address.ip().is_unspecified() {
        address.set_ip(match address.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    Ok(format!("http://{address}"))
}

fn anyhow_of(e: Error) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}
