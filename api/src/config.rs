//! Configuration: command-line flags, each with an environment variable and a default; an
//! optional TOML file fills in what neither sets (flags > environment > file > default).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use ipnet::IpNet;

/// Settings every command needs: where data lives and which database.
#[derive(Debug, Clone, Args)]
pub struct CommonSettings {
    /// Directory for the SQLite file, local objects and mail files.
    #[arg(
        long,
        env = "MARKETPLACE_DATA_DIR",
        default_value = "./data",
        global = true
    )]
    pub data_dir: PathBuf,

    /// `sqlite://PATH` or `postgres://USER@HOST/DB`. Default: `sqlite://<data dir>/marketplace.sqlite3`.
    #[arg(long, env = "MARKETPLACE_DATABASE_URL", global = true)]
    pub database_url: Option<String>,

    /// Database connections per process.
    #[arg(
        long,
        env = "MARKETPLACE_DATABASE_POOL_SIZE",
        default_value_t = 8,
        global = true
    )]
    pub database_pool_size: u32,

    /// Log format: `text` for people, `json` for log collectors. Levels come from `RUST_LOG`.
    #[arg(long, env = "MARKETPLACE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl CommonSettings {
    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}",
                self.data_dir.join("marketplace.sqlite3").display()
            )
        })
    }

    /// Creates the data directory, where the default database and local files live.
    pub fn ensure_data_dir(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.data_dir).with_context(|| {
            format!(
                "cannot create the data directory {}",
                self.data_dir.display()
            )
        })
    }
}

/// Settings of `marketplace serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeSettings {
    /// Address and port to listen on.
    #[arg(long, env = "MARKETPLACE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,

    /// Sign-up, token and refresh requests per minute per client address.
    #[arg(long, env = "MARKETPLACE_AUTH_RATE_LIMIT", default_value_t = 20)]
    pub auth_rate_limit: u32,

    /// Comma-separated proxy addresses or networks whose `X-Forwarded-For` is believed.
    #[arg(long, env = "MARKETPLACE_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_network)]
    pub trusted_proxies: Vec<IpNet>,

    /// Lifetime of access tokens, in seconds (1 to 86,400: a removed member's token is
    /// refused at once, but a token of a session revoked by refresh-token reuse lives on).
    #[arg(long, env = "MARKETPLACE_ACCESS_TOKEN_TTL", default_value_t = 900,
          value_parser = clap::value_parser!(i64).range(1..=86_400))]
    pub access_token_ttl: i64,

    /// Default tax on invoices, basis points (per-customer overrides via billing settings).
    #[arg(long, env = "MARKETPLACE_DEFAULT_TAX_RATE_BPS", default_value_t = 0,
          value_parser = basis_points())]
    pub default_tax_rate_bps: i32,

    /// Default marketplace fee on providers' gross, basis points (per-provider overrides).
    #[arg(long, env = "MARKETPLACE_DEFAULT_FEE_BPS", default_value_t = 300,
          value_parser = basis_points())]
    pub default_fee_bps: i32,

    /// Seconds between passes of the lifecycle worker (renewals, expiries); 0 turns it off.
    #[arg(long, env = "MARKETPLACE_JOBS_INTERVAL", default_value_t = 30)]
    pub jobs_interval: u64,

    /// HTTP worker threads (default: one per CPU core).
    #[arg(long, env = "MARKETPLACE_WORKERS")]
    pub workers: Option<usize>,

    /// S3 bucket for asset bytes; unset: local files under `<data dir>/objects`.
    /// Credentials come from the usual `AWS_*` variables.
    #[arg(long, env = "MARKETPLACE_S3_BUCKET")]
    pub s3_bucket: Option<String>,

    /// Endpoint of an S3-compatible service (`http://` allowed, for a local server).
    #[arg(long, env = "MARKETPLACE_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,

    /// Region of the bucket (default: `AWS_DEFAULT_REGION`, else `us-east-1`).
    #[arg(long, env = "MARKETPLACE_S3_REGION")]
    pub s3_region: Option<String>,

    /// Largest asset upload accepted, in bytes (413 beyond).
    #[arg(long, env = "MARKETPLACE_MAX_ASSET_BYTES", default_value_t = DEFAULT_MAX_ASSET_BYTES)]
    pub max_asset_bytes: u64,

    /// Base of the absolute URLs the server hands out (signed download URLs), such as
    /// `https://data.example.com`. Default: `http://<listen address>`.
    #[arg(long, env = "MARKETPLACE_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// SMTP server for e-mails: `smtp://[user:pass@]host[:port]` (no TLS, for local relays),
    /// `smtp://…?tls=required` (STARTTLS) or `smtps://…`. Unset: e-mails are written as
    /// `.eml` files under `<data dir>/mail`.
    #[arg(long, env = "MARKETPLACE_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,

    /// Sender of the e-mails, `Name <address>` or an address.
    #[arg(long, env = "MARKETPLACE_MAIL_FROM", default_value = DEFAULT_MAIL_FROM)]
    pub mail_from: String,

    /// Let webhook endpoints be loopback, private, link-local or other non-public
    /// addresses (for local development and tests; never in production).
    #[arg(long, env = "MARKETPLACE_WEBHOOK_ALLOW_PRIVATE", value_parser = clap::builder::BoolishValueParser::new())]
    pub webhook_allow_private: bool,

    /// Milliseconds between passes of the outbox worker (e-mails, webhooks); 0 turns it off.
    #[arg(long, env = "MARKETPLACE_OUTBOX_POLL_MS", default_value_t = 1000)]
    pub outbox_poll_ms: u64,

    /// Milliseconds a catalog page (`GET /v1/listings` without `mine`) is served from memory
    /// (at most a day); a listing written through this instance shows at once, one written
    /// through another instance within twice this time, or this time and 60 s while that
    /// instance is too busy to search anew. 0 turns the cache off.
    #[arg(long, env = "MARKETPLACE_CATALOG_CACHE_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(0..=86_400_000))]
    pub catalog_cache_ms: u64,

    /// How many of the most recently created matches `sort=relevance` ranks by their text
    /// rank; older matches follow them, most recently created first. Larger ranks more of a
    /// catalog where a word is common, at a cost per ranked match on each such search.
    #[arg(long, env = "MARKETPLACE_CATALOG_RELEVANCE_WINDOW", default_value_t = 1000,
          value_parser = clap::value_parser!(i64).range(1..=1_000_000))]
    pub catalog_relevance_window: i64,

    /// Memory for cached catalog pages, in MiB (0 turns the cache off).
    #[arg(long, env = "MARKETPLACE_CATALOG_CACHE_MIB", default_value_t = 64)]
    pub catalog_cache_mib: u64,

    /// Payment collection (Stripe) and the grace period before unpaid invoices suspend grants.
    #[command(flatten)]
    pub payments: PaymentSettings,
}

/// Payment collection with Stripe and the grace period; read by `serve` and `jobs run-once`.
#[derive(Debug, Clone, Args)]
pub struct PaymentSettings {
    /// Stripe secret key (`sk_…`). Unset: invoices are paid manually only (`…/pay`).
    #[arg(long, env = "MARKETPLACE_STRIPE_SECRET_KEY", hide_env_values = true)]
    pub stripe_secret_key: Option<Secret>,

    /// Comma-separated signing secrets (`whsec_…`) of the Stripe webhook endpoint; a
    /// signature made with any of them is accepted (several while a secret is rotated).
    #[arg(
        long,
        env = "MARKETPLACE_STRIPE_WEBHOOK_SECRETS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub stripe_webhook_secrets: Vec<Secret>,

    /// Base URL of the Stripe API (a local mock in tests).
    #[arg(long, env = "MARKETPLACE_STRIPE_API_BASE", default_value = DEFAULT_STRIPE_API_BASE)]
    pub stripe_api_base: String,

    /// Days after finalization an invoice may stay unpaid before the customer's grants are
    /// suspended (restored once nothing overdue is left).
    #[arg(long, env = "MARKETPLACE_GRACE_DAYS", default_value_t = DEFAULT_GRACE_DAYS)]
    pub grace_days: u32,
}

pub const DEFAULT_STRIPE_API_BASE: &str = "https://api.stripe.com";
pub const DEFAULT_GRACE_DAYS: u32 = 14;

impl Default for PaymentSettings {
    fn default() -> Self {
        PaymentSettings {
            stripe_secret_key: None,
            stripe_webhook_secrets: Vec::new(),
            stripe_api_base: DEFAULT_STRIPE_API_BASE.into(),
            grace_days: DEFAULT_GRACE_DAYS,
        }
    }
}

impl PaymentSettings {
    /// The Stripe secret key, if one is set (an empty value counts as unset).
    pub fn stripe_key(&self) -> Option<&str> {
        self.stripe_secret_key
            .as_ref()
            .map(|k| k.expose().trim())
            .filter(|k| !k.is_empty())
    }

    /// The webhook signing secrets, blanks dropped.
    pub fn webhook_secrets(&self) -> Vec<String> {
        self.stripe_webhook_secrets
            .iter()
            .map(|s| s.expose().trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    }
}

/// A setting that must never reach a log: its `Debug` shows nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

pub const DEFAULT_MAIL_FROM: &str = "Data Marketplace <no-reply@marketplace.localhost>";

/// 5 GiB.
pub const DEFAULT_MAX_ASSET_BYTES: u64 = 5 * 1024 * 1024 * 1024;

impl Default for ServeSettings {
    fn default() -> Self {
        ServeSettings {
            listen: "127.0.0.1:0".into(),
            auth_rate_limit: 20,
            trusted_proxies: Vec::new(),
            access_token_ttl: 900,
            jobs_interval: 0,
            default_tax_rate_bps: 0,
            default_fee_bps: 300,
            workers: None,
            s3_bucket: None,
            s3_endpoint: None,
            s3_region: None,
            max_asset_bytes: DEFAULT_MAX_ASSET_BYTES,
            public_url: None,
            smtp_url: None,
            mail_from: DEFAULT_MAIL_FROM.into(),
            webhook_allow_private: false,
            // Tests deliver the outbox when they choose.
            outbox_poll_ms: 0,
            catalog_cache_ms: 5000,
            catalog_cache_mib: 64,
            catalog_relevance_window: 1000,
            payments: PaymentSettings::default(),
        }
    }
}

fn parse_network(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{s}` is not an IP address or network"))
}

/// A share in basis points: 0 to 10,000 (100 %).
pub fn basis_points() -> clap::builder::RangedI64ValueParser<i32> {
    clap::value_parser!(i32).range(0..=10_000)
}

/// Reads the config file named by `--config FILE` or `MARKETPLACE_CONFIG` and exports each
/// key as its `MARKETPLACE_*` variable unless that is already set. Keys are the flags' names
/// (`listen = "0.0.0.0:8080"`, `auth_rate_limit = 50`).
pub fn load_config_file(args: &[String]) -> anyhow::Result<()> {
    let from_flag = args
        .windows(2)
        .find(|w| w[0] == "--config")
        .map(|w| PathBuf::from(&w[1]))
        .or_else(|| {
            args.iter()
                .find_map(|a| a.strip_prefix("--config=").map(PathBuf::from))
        });
    let Some(path) =
        from_flag.or_else(|| std::env::var_os("MARKETPLACE_CONFIG").map(PathBuf::from))
    else {
        return Ok(());
    };
    for (name, value) in read_config(&path)? {
        if std::env::var_os(&name).is_none() {
            // Runs first thing in main, before any thread exists.
            std::env::set_var(name, value);
        }
    }
    Ok(())
}

fn read_config(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("config file {} is not valid TOML", path.display()))?;
    table
        .into_iter()
        .map(|(key, value)| {
            let value = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Array(items) => items
                    .into_iter()
                    .map(|v| {
                        v.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| v.to_string())
                    })
                    .collect::<Vec<_>>()
                    .join(","),
                other => anyhow::bail!("config key `{key}`: unsupported value {other}"),
            };
            Ok((
                format!("MARKETPLACE_{}", key.to_ascii_uppercase().replace('-', "_")),
                value,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_file_keys_become_variables() {
        let dir = std::env::temp_dir().join(format!("mkt-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("marketplace.toml");
        std::fs::write(&file, "listen = \"0.0.0.0:9000\"\nauth_rate_limit = 5\ntrusted_proxies = [\"10.0.0.0/8\", \"127.0.0.1\"]\n")
            .unwrap();
        let mut vars = read_config(&file).unwrap();
        vars.sort();
        assert_eq!(
            vars,
            vec![
                ("MARKETPLACE_AUTH_RATE_LIMIT".to_string(), "5".to_string()),
                ("MARKETPLACE_LISTEN".to_string(), "0.0.0.0:9000".to_string()),
                (
                    "MARKETPLACE_TRUSTED_PROXIES".to_string(),
                    "10.0.0.0/8,127.0.0.1".to_string()
                ),
            ]
        );
        assert!(parse_network("10.1.2.3").is_ok());
        assert!(parse_network("nonsense").is_err());
    }

    #[test]
    fn settings_out_of_range_are_refused_at_start() {
        #[derive(clap::Parser)]
        struct Args {
            #[command(flatten)]
            serve: ServeSettings,
        }
        let parse = |flag: &str, value: &str| {
            <Args as clap::Parser>::try_parse_from(["marketplace", flag, value]).map(|a| a.serve)
        };
        for (flag, value) in [
            ("--access-token-ttl", "0"),
            ("--access-token-ttl", "-5"),
            ("--access-token-ttl", "86401"),
            ("--default-tax-rate-bps", "-1"),
            ("--default-fee-bps", "10001"),
        ] {
            assert!(parse(flag, value).is_err(), "{flag} {value}");
        }
        assert_eq!(
            parse("--access-token-ttl", "1").unwrap().access_token_ttl,
            1
        );
    }

    #[test]
    fn stripe_settings_split_secrets_and_never_show_them() {
        #[derive(clap::Parser)]
        struct Args {
            #[command(flatten)]
            payments: PaymentSettings,
        }
        let args = <Args as clap::Parser>::try_parse_from([
            "marketplace",
            "--stripe-webhook-secrets",
            "whsec_old, whsec_new,",
            "--stripe-secret-key",
            "sk_live_secret",
        ])
        .unwrap();
        let p = args.payments;
        assert_eq!(p.webhook_secrets(), vec!["whsec_old", "whsec_new"]);
        assert_eq!(p.stripe_key(), Some("sk_live_secret"));
        assert_eq!(p.stripe_api_base, DEFAULT_STRIPE_API_BASE);
        assert_eq!(p.grace_days, DEFAULT_GRACE_DAYS);
        let shown = format!("{p:?}");
        assert!(
            !shown.contains("sk_live_secret") && !shown.contains("whsec_"),
            "{shown}"
        );
        assert_eq!(PaymentSettings::default().stripe_key(), None);
    }
}
