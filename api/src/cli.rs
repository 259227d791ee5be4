//! The command line: `serve`, `migrate`, `admin create-operator`.

use std::io::BufRead;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{CommonSettings, LogFormat, PaymentSettings, ServeSettings};
use crate::domain::accounts;
use crate::domain::clock::SystemClock;
use crate::domain::commerce::lifecycle;
use crate::domain::invoicing::{grace, payments, runs, BillingDefaults};
use crate::domain::Error;
use crate::server::Application;

#[derive(Debug, Parser)]
#[command(
    name = "marketplace",
    version,
    about = "A self-hostable data marketplace: catalog, access grants, metering and billing."
)]
pub struct Cli {
    /// A TOML file of settings (keys are the flags' names); flags and environment win over it.
    #[arg(long, env = "MARKETPLACE_CONFIG", global = true)]
    pub config: Option<std::path::PathBuf>,

    #[command(flatten)]
    pub common: CommonSettings,

    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: the size of `Serve`'s settings next to the other variants costs
// nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server (migrates the database first).
    Serve(ServeSettings),
    /// Apply pending database migrations and exit.
    Migrate,
    /// Billing.
    Billing {
        #[command(subcommand)]
        command: BillingCommand,
    },
    /// Background jobs.
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// Platform administration.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum BillingCommand {
    /// Create or rebuild the drafts of a period (a progress bar on a terminal).
    Run {
        /// The calendar month, YYYY-MM (UTC).
        #[arg(long)]
        period: String,
        /// Default tax, basis points.
        #[arg(long, env = "MARKETPLACE_DEFAULT_TAX_RATE_BPS", default_value_t = 0,
              value_parser = crate::config::basis_points())]
        default_tax_rate_bps: i32,
        /// Default marketplace fee, basis points.
        #[arg(long, env = "MARKETPLACE_DEFAULT_FEE_BPS", default_value_t = 300,
              value_parser = crate::config::basis_points())]
        default_fee_bps: i32,
    },
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// One pass of the background jobs, then exit: the lifecycle worker (renewals, expiries,
    /// billing periods), the grace pass (suspending and restoring grants) and, with a Stripe
    /// key, payment collection.
    RunOnce {
        #[command(flatten)]
        payments: PaymentSettings,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create a platform user (the platform organization is created on first use). The
    /// password is read from standard input.
    CreateOperator {
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: String,
        #[arg(long, value_enum, default_value_t = PlatformRole::Operator)]
        role: PlatformRole,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PlatformRole {
    Operator,
    Finance,
}

/// Logs to standard error through a background writer, so a request never waits on the
/// terminal or pipe; keep the guard alive until exit, it flushes what is left.
pub fn init_tracing(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
    guard
}

/// The database of a one-shot command, migrated: one connection, reading pages as SQLite
/// does by default (a command reads most pages about once; see [`schema::FileReads`]).
fn command_pool(common: &CommonSettings) -> anyhow::Result<schema::DbPool> {
    common.ensure_data_dir()?;
    Ok(schema::connect(
        &common.database_url(),
        1,
        true,
        schema::FileReads::Copied,
    )?)
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let _log_flush = init_tracing(cli.common.log_format);
    match cli.command {
        Command::Serve(serve) => {
            let listen = serve.listen.clone();
            actix_web::rt::System::new().block_on(async move {
                let app = Application::build(&cli.common, serve, Arc::new(SystemClock))?;
                tracing::info!(%listen, port = app.port(), "marketplace serving");
                app.run_until_stopped().await.context("server failed")
            })
        }
        Command::Migrate => {
            cli.common.ensure_data_dir()?;
            let manager = schema::ConnectionManager::new(&cli.common.database_url());
            let mut conn = manager
                .establish()
                .context("cannot connect to the database")?;
            let applied = schema::migrate(&mut conn)?;
            println!("{applied} migration(s) applied");
            Ok(())
        }
        Command::Billing {
            command:
                BillingCommand::Run {
                    period,
                    default_tax_rate_bps,
                    default_fee_bps,
                },
        } => {
            let month = billing::charges::Month::parse(&period)
                .map_err(|m| anyhow::anyhow!("--period {m}"))?;
            let pool = command_pool(&cli.common)?;
            let mut conn = pool.get()?;
            let bar = indicatif::ProgressBar::new(0).with_style(
                indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} customers {elapsed}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
            }
            let defaults = BillingDefaults {
                tax_rate_bps: default_tax_rate_bps,
                fee_bps: default_fee_bps,
            };
            let run = runs::bill_period(
                &mut conn,
                &SystemClock,
                defaults,
                "cli",
                month,
                &mut |done, total| {
                    bar.set_length(total as u64);
                    bar.set_position(done as u64);
                },
            )
            .map_err(describe)?;
            bar.finish_and_clear();
            println!("{}", serde_json::to_string_pretty(&run)?);
            Ok(())
        }
        Command::Jobs {
            command: JobsCommand::RunOnce { payments: settings },
        } => {
            let stripe = payments::gateway(settings.stripe_key(), &settings.stripe_api_base)
                .map_err(|e| anyhow::anyhow!(e))?;
            let pool = command_pool(&cli.common)?;
            let (lifecycle, grace) = {
                let mut conn = pool.get()?;
                let lifecycle = lifecycle::run_once(&mut conn, &SystemClock).map_err(describe)?;
                let grace = grace::run_once(&mut conn, &SystemClock, settings.grace_days)
                    .map_err(describe)?;
                (lifecycle, grace)
            };
            let payments = match stripe {
                Some(stripe) => Some(
                    actix_web::rt::System::new()
                        .block_on(payments::collect_due(&pool, Arc::new(SystemClock), &stripe))
                        .map_err(describe)?,
                ),
                None => None,
            };
            let report = JobsReport {
                lifecycle,
                grace,
                payments,
            };
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Command::Admin {
            command: AdminCommand::CreateOperator { email, name, role },
        } => {
            let mut password = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut password)
                .context("cannot read the password from standard input")?;
            let password = password.trim_end_matches(['\r', '\n']);
            let pool = command_pool(&cli.common)?;
            let mut conn = pool.get()?;
            let role = match role {
                PlatformRole::Operator => "operator",
                PlatformRole::Finance => "finance",
            };
            let user = accounts::create_platform_user(
                &mut conn,
                &SystemClock,
                &email,
                &name,
                password,
                role,
            )
            .map_err(describe)?;
            println!("created {} user {} ({})", user.role, user.email, user.id);
            Ok(())
        }
    }
}

/// What `jobs run-once` did (`payments` is null without a Stripe key).
#[derive(serde::Serialize)]
struct JobsReport {
    #[serde(flatten)]
    lifecycle: lifecycle::Report,
    grace: grace::Report,
    payments: Option<payments::Report>,
}

fn describe(e: Error) -> anyhow::Error {
    match e {
        Error::Validation(errors) => anyhow::anyhow!(
            "invalid input: {}",
            errors
                .iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        other => anyhow::anyhow!("{other}"),
    }
}
