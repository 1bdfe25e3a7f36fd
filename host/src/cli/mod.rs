//! The `herald` command line.

mod plugin_tool;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use salvo::conn::{Listener, TcpListener};
use uuid::Uuid;

use crate::auth;
use crate::config::Config;
use crate::server::Herald;
use crate::store;

#[derive(Debug, Parser)]
#[command(name = "herald", version, about = "Self-hostable SMS campaign platform")]
pub struct Cli {
    /// Configuration file (default: config/default.toml when present).
    #[arg(long, global = true, env = "HERALD_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run Herald: the HTTP API and the dispatcher, or one of them.
    Serve {
        /// Which role this process plays.
        #[arg(long, value_enum, default_value_t = Role::All)]
        role: Role,
        /// Do not apply pending database migrations at start.
        #[arg(long)]
        no_migrate: bool,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// Recount every campaign's messages and compare with the kept counters
    /// (stats, tasks, /metrics read them); exit 1 when any drifted.
    Verify {
        /// Replace the counters that drifted by the recount (safe while
        /// Herald runs on PostgreSQL; on SQLite stop `herald serve` first).
        #[arg(long)]
        repair: bool,
    },
    /// Print an HS256 bearer token signed with the configured secret.
    Token {
        /// User id (UUID) the token is for.
        #[arg(long)]
        sub: Uuid,
        /// Lifetime, e.g. 30m, 24h, 7d.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
    /// Tools for plugin authors.
    #[command(subcommand)]
    Plugin(PluginCommand),
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Print a component's world, WIT version, imports and exports, and whether this host can load it.
    Inspect {
        /// A `.wasm` component, or `builtin:<name>`.
        file: String,
    },
    /// Send one message through a configured carrier and print the carrier's answer.
    Send {
        /// A carrier name from the configuration (`[[carriers]] name`).
        carrier: String,
        /// Recipient, E.164 (or national NANP formatting).
        #[arg(long)]
        to: String,
        /// Message text (rendered by the template plugin, so `{{ }}` placeholders need defaults).
        #[arg(long)]
        body: String,
        /// Sender, when the carrier needs one from the caller.
        #[arg(long, default_value = "")]
        from: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// API and dispatcher in one process.
    All,
    /// HTTP API, storage, scheduler.
    Api,
    /// Consumes send jobs and runs plugins (no database access).
    Dispatcher,
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref())?;
    crate::telemetry::init_logging(&config.log);
    match cli.command {
        Command::Serve { role, no_migrate } => serve(config, role, !no_migrate).await,
        Command::Migrate => {
            let url = config.database_url();
            // Not under a running `herald serve` on SQLite: it owns the file.
            let _lock = store::lock_exclusive(&url)?;
            let store = store::connect(&url, &config.database).await?;
            store.migrate().await?;
            println!("migrations applied ({})", store.backend());
            Ok(())
        }
        Command::Verify { repair } => verify(&config, repair).await,
        Command::Plugin(command) => plugin_tool::run(&config, command).await,
        Command::Token { sub, ttl } => {
            let secret = auth::resolve_secret(&config.auth, &config.data_dir)?;
            println!("{}", auth::issue(&config.auth, &secret.value, sub, ttl)?);
            Ok(())
        }
    }
}

/// `herald verify [--repair]`: prints each drifted counter; fails when any
/// drifted and was not repaired.
async fn verify(config: &Config, repair: bool) -> anyhow::Result<()> {
    let url = config.database_url();
    let _lock = store::lock_exclusive(&url)?;
    let store = store::connect(&url, &config.database).await?;
    let drift = store.verify_counters(repair).await?;
    for d in &drift {
        let task = d.task_id.map_or_else(|| "-".to_string(), |t| t.to_string());
        println!(
            "drift: campaign {} task {task} variant {} status {}: counted {}, messages {}",
            d.campaign_id, d.variant, d.status, d.counted, d.actual
        );
    }
    match (drift.is_empty(), repair) {
        (true, _) => println!("counters match the messages ({})", store.backend()),
        (false, true) => println!("{} counters repaired ({})", drift.len(), store.backend()),
        (false, false) => anyhow::bail!(
            "{} counters drifted; `herald verify --repair` replaces them",
            drift.len()
        ),
    }
    Ok(())
}

async fn serve(config: Config, role: Role, migrate: bool) -> anyhow::Result<()> {
    if role == Role::Dispatcher {
        let plugins = crate::plugin::Plugins::load(&config)
            .await
            .context("loading the configured plugins")?;
        crate::server::release_freed_memory();
        let clock = std::sync::Arc::new(crate::clock::SystemClock);
        return crate::server::run_dispatcher(config, plugins, clock, shutdown_signal()).await;
    }
    if role == Role::Api && config.bus.nats_url.as_deref().is_none_or(str::is_empty) {
        anyhow::bail!(
            "--role api hands jobs to dispatchers over NATS: set bus.nats_url (HERALD_BUS__NATS_URL), or use --role all"
        );
    }
    let mut herald = Herald::open(config, migrate).await?;
    herald.with_dispatcher = role == Role::All;
    let bind = herald.app.config.server.bind;
    let listener = TcpListener::new(bind)
        .try_bind()
        .await
        .with_context(|| format!("cannot listen on {bind}"))?;
    tracing::info!(%bind, database = herald.app.store.backend(), bus = herald.app.bus.transport.kind(), "herald listening");
    herald.serve(listener, shutdown_signal()).await
}

/// Resolves on SIGTERM or ctrl-c.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = terminate => {},
    }
}
