//! The composition root: builds the application from configuration and serves
//! it until asked to stop. Used by `herald serve` and by the integration tests.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use salvo::conn::Acceptor;
use salvo::prelude::*;

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::api::{self, App};
use crate::auth::{self, Secret, Verifier};
use crate::bus::{self, Bus};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::dispatch::Dispatcher;
use crate::outbox::EventOutbox;
use crate::plugin::Plugins;
use crate::scheduler::Scheduler;
use crate::store;

/// How long in-flight requests may take to finish after a stop is asked for.
const GRACE: Duration = Duration::from_secs(30);

pub struct Herald {
    pub app: Arc<App>,
    /// The HS256 secret, unless an identity provider's public key is configured.
    pub secret: Option<Secret>,
    /// Whether this process also runs a dispatcher (`--role all`).
    pub with_dispatcher: bool,
    /// Held until [`Herald::serve`] returns: one process per SQLite file.
    lock: Option<store::sqlite::DatabaseLock>,
}

impl Herald {
    /// Opens storage (migrating it if `migrate` and the configuration allow),
    /// loads the configured plugins and sets up authentication.
    pub async fn open(config: Config, migrate: bool) -> anyhow::Result<Self> {
        let plugins = Plugins::load(&config).await.context("loading the configured plugins")?;
        release_freed_memory();
        Self::open_with_plugins(config, migrate, plugins).await
    }

    /// As [`Herald::open`], with plugins already loaded (tests share one set).
    pub async fn open_with_plugins(config: Config, migrate: bool, plugins: Plugins) -> anyhow::Result<Self> {
        Self::open_with(config, migrate, plugins, Arc::new(SystemClock)).await
    }

    /// As [`Herald::open_with_plugins`], reading time from `clock` (tests move it).
    pub async fn open_with(
        config: Config,
        migrate: bool,
        plugins: Plugins,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        prepare_data_dir(&config.data_dir)?;
        let secret = match config.auth.jwt_public_key {
            Some(_) => None,
            None => Some(auth::resolve_secret(&config.auth, &config.data_dir)?),
        };
        let verifier = Verifier::new(&config.auth, secret.as_ref().map_or("", |s| s.value.as_str()))?;
        let url = config.database_url();
        // Before connecting: a second process must not even migrate the file.
        let lock = store::lock_exclusive(&url)?;
        let store = store::connect(&url, &config.database)
            .await
            .with_context(|| format!("cannot open the database (database.url = {})", redact(&url)))?;
        if migrate && config.database.migrate_on_start {
            store.migrate().await.context("database migration failed")?;
        }
        let rules = Arc::new(config.compliance.rule_set()?);
        let bus = connect_bus(&config).await?;
        let outbox = EventOutbox::new(store.clone(), bus.clone());
        let scheduler = Scheduler::new(
            store.clone(),
            bus.clone(),
            outbox.clone(),
            clock.clone(),
            config.dispatch.clone(),
            rules,
        );
        let app = Arc::new(App::new(config, store, verifier, clock, plugins, outbox, scheduler));
        Ok(Self {
            app,
            secret,
            with_dispatcher: true,
            lock,
        })
    }

    /// With a secret kept in the data directory (no configuration), logs a token
    /// for the first user so the first run needs no set-up.
    fn log_startup_token(&self) -> anyhow::Result<()> {
        let Some(secret) = self.secret.as_ref().filter(|s| s.from_data_dir) else {
            return Ok(());
        };
        let config = &self.app.config;
        let user = auth::first_user(&config.data_dir)?;
        let token = auth::issue(&config.auth, &secret.value, user, Duration::from_secs(24 * 3600))?;
        if secret.generated {
            let path = config.data_dir.join("jwt_secret");
            tracing::info!(path = %path.display(), "generated a JWT secret (first start)");
        }
        tracing::info!(user = %user, "ready-to-use bearer token (24h): {token}");
        Ok(())
    }

    /// Serves HTTP on `acceptor` until `shutdown` resolves, then lets in-flight
    /// requests finish and closes the database.
    pub async fn serve<A>(self, acceptor: A, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()>
    where
        A: Acceptor + Send + 'static,
    {
        self.log_startup_token()?;
        let (stop_work, work_stopped) = watch::channel(false);
        let mut work = JoinSet::new();
        work.spawn(crate::telemetry::metrics_upkeep(work_stopped.clone()));
        self.app.outbox.spawn(&mut work, work_stopped.clone());
        self.app.scheduler.spawn(&mut work, work_stopped.clone());
        if self.with_dispatcher {
            let app = &self.app;
            let dispatcher = Dispatcher::new(&app.config, app.bus.clone(), app.plugins.clone(), app.clock.clone());
            dispatcher.spawn(&mut work, work_stopped);
        }
        let server = Server::new(acceptor);
        let handle = server.handle();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down: finishing in-flight requests");
            handle.stop_graceful(Some(GRACE));
        });
        let store = self.app.store.clone();
        let lock = self.lock;
        server.try_serve(api::service(self.app)).await?;
        let _ = stop_work.send(true);
        work.shutdown().await;
        store.close().await;
        drop(lock);
        tracing::info!("stopped");
        Ok(())
    }
}

/// The transport the configuration names: NATS JetStream when `bus.nats_url`
/// is set, else in process.
pub async fn connect_bus(config: &Config) -> anyhow::Result<Bus> {
    let transport: Arc<dyn bus::Transport> = match config.bus.nats_url.as_deref().filter(|u| !u.is_empty()) {
        Some(url) => Arc::new(
            bus::nats::NatsTransport::connect(url, &config.bus.stream_prefix, &config.bus.subject_prefix)
                .await
                .with_context(|| format!("cannot set up NATS (bus.nats_url = {url})"))?,
        ),
        None => Arc::new(bus::memory::MemoryTransport::new()),
    };
    Ok(Bus::new(transport))
}

/// Runs a dispatcher alone (`--role dispatcher`): no database, no HTTP API;
/// stops when `shutdown` resolves, after finishing the jobs in hand.
pub async fn run_dispatcher(
    config: Config,
    plugins: Plugins,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    if config.bus.nats_url.as_deref().is_none_or(str::is_empty) {
        anyhow::bail!("the dispatcher role needs a shared bus: set bus.nats_url (HERALD_BUS__NATS_URL)");
    }
    let bus = connect_bus(&config).await?;
    let (stop, stopped) = watch::channel(false);
    let mut work = JoinSet::new();
    work.spawn(crate::telemetry::metrics_upkeep(stopped.clone()));
    Dispatcher::new(&config, bus, plugins, clock).spawn(&mut work, stopped);
    tracing::info!("dispatcher running");
    shutdown.await;
    tracing::info!("dispatcher stopping");
    let _ = stop.send(true);
    let _ = tokio::time::timeout(GRACE, async { while work.join_next().await.is_some() {} }).await;
    Ok(())
}

/// Compiling plugins allocates and frees tens of MiB; hand the freed pages back
/// to the OS now, since an idle server would otherwise keep them (mimalloc
/// purges on later allocator activity).
pub(crate) fn release_freed_memory() {
    // SAFETY: mi_collect takes no pointers and may be called at any time; with
    // another global allocator it only tidies mimalloc's own (empty) heaps.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// Creates the data directory owner-only: it holds the database (phone numbers)
/// and the JWT secret.
fn prepare_data_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    if dir.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create data_dir {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict data_dir {}", dir.display()))?;
    }
    Ok(())
}

/// Hides a password in a database URL before it is shown.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => match url[scheme + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
            None => url.to_string(),
        },
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted() {
        assert_eq!(super::redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(super::redact("sqlite://data/herald.db"), "sqlite://data/herald.db");
    }
}
