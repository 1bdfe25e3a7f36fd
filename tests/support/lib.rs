//! The test toolkit shared by every integration test: `herald-tests`' own
//! (`tests/api`, `tests/plugins`) and Herald's process-level tests
//! (`host/tests/pipeline.rs`).
//!
//! [`TestServer`] starts the real Herald (same composition root as `herald
//! serve`) on a loopback port, against a fresh SQLite file or a schema of its
//! own in this run's PostgreSQL database, and talks to it over real HTTP
//! ([`Client`]). Two stacks: the embedded defaults (SQLite, in-process
//! transport) and the production stack (PostgreSQL + NATS JetStream), where
//! `Backend::Postgres` means the latter; [`services`] says how each service is
//! found and isolated per run. Fake carriers are in [`gateway`].

use std::ops::Deref;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::Utc;
pub use herald::clock::ManualClock;
use herald::config::Config;
use herald::server::Herald;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use salvo::conn::{Listener, TcpListener};
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub use serde_json;

pub mod client;
pub mod gateway;
pub mod services;

pub use client::{Client, EventLog, Reply, User, http_client, phones};
pub use services::{in_ci, nats_url, python_with};

/// Paths of the compiled plugin fixtures in `tests/fixtures/plugins/`.
pub mod fixtures {
    include!(concat!(env!("OUT_DIR"), "/fixtures.rs"));
}

pub const SECRET: &str = "integration-test-secret-0123456789abcdef";

/// The header carrying the log carrier's webhook secret.
pub const LOG_WEBHOOK_SECRET_HEADER: &str = "x-herald-webhook-secret";
/// The webhook secret [`with_log_webhooks`] configures.
pub const LOG_WEBHOOK_SECRET: &str = "log-webhook-secret";

/// The default carrier of a test: the plugin at `plugin` (a fixture's path
/// or `builtin:…`), no HTTP, the shipped rate and concurrency defaults.
pub fn plugin_carrier(name: &str, plugin: &str) -> herald::config::CarrierConfig {
    let mut carrier = Config::default().carriers.remove(0);
    carrier.name = name.into();
    carrier.plugin = plugin.into();
    carrier
}

/// Retries after a few milliseconds instead of the production 30 s, so a
/// test sees every attempt a message gets.
pub fn fast_retries(config: &mut Config) {
    config.dispatch.retry_base_ms = 50;
    config.dispatch.retry_max_ms = 100;
}

/// The defaults every test server starts from: log-carrier webhooks enabled.
fn test_defaults() -> Config {
    let mut config = Config::default();
    with_log_webhooks(&mut config);
    config.plugins.cache_dir = Some(plugin_code_cache());
    config
}

/// Compiled plugin code shared by every test process (entries are keyed by
/// the component and the engine settings, and written atomically), so the
/// shipped and example plugins are compiled once per machine, not per test.
pub fn plugin_code_cache() -> PathBuf {
    std::env::temp_dir().join("herald-test-plugin-code")
}

/// Enables the default log carrier's webhooks with [`LOG_WEBHOOK_SECRET`].
pub fn with_log_webhooks(config: &mut Config) {
    for carrier in config.carriers.iter_mut().filter(|c| c.plugin == "builtin:log") {
        carrier
            .settings
            .insert("webhook_secret".into(), LOG_WEBHOOK_SECRET.into());
    }
}

/// Form body and `X-Twilio-Signature` for a Twilio webhook to `url` (HMAC-SHA1
/// of the URL and the sorted parameters, base64).
pub fn twilio_signed(url: &str, params: &[(&str, &str)], token: &str) -> (String, String) {
    use base64::Engine;
    use hmac::Mac;
    let mut sorted = params.to_vec();
    sorted.sort();
    let data: String = std::iter::once(url.to_string())
        .chain(sorted.iter().map(|(k, v)| format!("{k}{v}")))
        .collect();
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(token.as_bytes()).unwrap();
    mac.update(data.as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    (body, signature)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generates one `#[tokio::test]` per backend for each listed test body:
/// `mod name { fn sqlite(); fn postgres(); }`. A body taking `(server)` runs on
/// a server with the default test settings; one taking `(backend: Backend)`
/// starts the servers it needs itself (and returns early when
/// [`TestServer::launch`] says the stack is unavailable).
#[macro_export]
macro_rules! on_both_backends {
    ($(#[$meta:meta])* async fn $name:ident($backend:ident: Backend) $body:block $($rest:tt)*) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn run($backend: $crate::Backend) $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                run($crate::Backend::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                run($crate::Backend::Postgres).await;
            }
        }
        $crate::on_both_backends!($($rest)*);
    };
    ($(#[$meta:meta])* async fn $name:ident($server:ident) $body:block $($rest:tt)*) => {
        $crate::on_both_backends! {
            $(#[$meta])*
            async fn $name(backend: Backend) {
                let Some($server) = $crate::TestServer::start_if_available(backend, |_| {}).await else {
                    return;
                };
                $body
            }
            $($rest)*
        }
    };
    () => {};
}

/// A running Herald with its own data directory; its HTTP client is [`Client`].
pub struct TestServer {
    client: Client,
    pub backend: Backend,
    pub database_url: String,
    /// The configuration it runs with (bus prefixes, carriers…).
    pub config: Config,
    /// Set when the server was started on a manual clock.
    pub clock: Option<Arc<ManualClock>>,
    app: Arc<herald::api::App>,
    stop: Option<oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<()>>,
    _data_dir: tempfile::TempDir,
}

impl Deref for TestServer {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl TestServer {
    /// Starts on `backend` with default test settings; panics when it cannot.
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    pub async fn start_with(backend: Backend, configure: impl FnOnce(&mut Config)) -> Self {
        Self::start_if_available(backend, configure)
            .await
            .expect("backend available")
    }

    /// Starts on `backend`, or returns `None` (after a notice) when PostgreSQL is
    /// unreachable outside CI.
    pub async fn start_if_available(backend: Backend, configure: impl FnOnce(&mut Config)) -> Option<Self> {
        Self::launch(backend, None, true, configure).await
    }

    /// Starts with time read from `clock` (tests move it) and, unless
    /// `with_dispatcher`, no dispatcher in the process (start some with
    /// [`TestServer::spawn_dispatcher`]). Carriers other than the default are
    /// loaded from the configuration. `None` when the stack is unavailable outside CI.
    pub async fn launch(
        backend: Backend,
        clock: Option<Arc<ManualClock>>,
        with_dispatcher: bool,
        configure: impl FnOnce(&mut Config),
    ) -> Option<Self> {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let database_url = match backend {
            Backend::Sqlite => format!("sqlite://{}", data_dir.path().join("herald.db").display()),
            Backend::Postgres => services::postgres_schema().await?,
        };
        let mut config = Config {
            data_dir: data_dir.path().to_path_buf(),
            ..Config::default()
        };
        config.database.url = Some(database_url.clone());
        config.database.max_connections = 4;
        config.auth.jwt_secret = Some(SECRET.into());
        config.log.level = "warn".into();
        with_log_webhooks(&mut config);
        if backend == Backend::Postgres
            && let Some(url) = nats_url().await
        {
            config.bus = services::own_bus(url);
        }
        configure(&mut config);
        // RUST_LOG=herald=debug shows the server's log in a test's output.
        if std::env::var_os("RUST_LOG").is_some() {
            herald::telemetry::init_logging(&config.log);
        }
        let plugins = plugins_for(&config).await;
        let system_clock: Arc<dyn herald::clock::Clock> = Arc::new(herald::clock::SystemClock);
        let used_clock = clock
            .clone()
            .map_or(system_clock, |c| c as Arc<dyn herald::clock::Clock>);
        let mut herald = Herald::open_with(config.clone(), true, plugins, used_clock)
            .await
            .expect("herald opens");
        herald.with_dispatcher = with_dispatcher;
        let app = herald.app.clone();
        let acceptor = TcpListener::new("127.0.0.1:0").bind().await;
        let port = acceptor.local_addr().expect("bound address").port();
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(async move {
            let _ = herald
                .serve(acceptor, async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Some(Self {
            client: Client::new(format!("http://127.0.0.1:{port}")),
            backend,
            database_url,
            config,
            clock,
            app,
            stop: Some(stop),
            served: Some(served),
            _data_dir: data_dir,
        })
    }

    /// Stops the server and waits until it has: requests finished, background
    /// work stopped, database closed. (Dropping it only asks it to stop.)
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(served) = self.served.take() {
            let _ = served.await;
        }
    }

    /// A new user and a valid token for it.
    pub fn new_user(&self) -> User {
        User::new(SECRET)
    }

    /// Drives the scheduler through one pass now (reconciliation, then handing
    /// out everything due at the clock's time) and waits until every message
    /// it handed out has its result, so the stats then show all that the
    /// current state leads to. "Nothing happens" checks assert after a tick
    /// instead of sleeping and hoping the scheduler's own timer fired.
    pub async fn tick(&self) {
        self.app.scheduler.tick().await.expect("a scheduler pass");
        eventually("the handed-out messages' results", Duration::from_secs(60), || async {
            let (sending,): (i64,) = services::query_rows(
                &self.database_url,
                "SELECT count(*) FROM messages WHERE status = 'sending'",
            )
            .await
            .remove(0);
            (sending == 0).then_some(())
        })
        .await;
        self.assert_counters_match().await;
    }

    /// The counters stats, tasks and /metrics read equal a recount of the
    /// messages (every test that ticks checks this after each pass).
    pub async fn assert_counters_match(&self) {
        let drift = self.app.store.verify_counters(false).await.expect("verifying counters");
        assert!(drift.is_empty(), "counters drifted from the messages: {drift:#?}");
    }

    /// A campaign's stats after a [`TestServer::tick`].
    pub async fn stats_after_tick(&self, user: &User, campaign: &str) -> Value {
        self.tick().await;
        self.stats(user, campaign).await
    }

    /// Runs a dispatcher in this process, as `herald serve --role dispatcher`
    /// would: its own bus connection, no database. It stops with the returned guard.
    pub fn spawn_dispatcher(&self) -> oneshot::Sender<()> {
        let (stop, stopped) = oneshot::channel::<()>();
        let config = self.config.clone();
        let clock: Arc<dyn herald::clock::Clock> = match &self.clock {
            Some(clock) => clock.clone(),
            None => Arc::new(herald::clock::SystemClock),
        };
        tokio::spawn(async move {
            let plugins = plugins_for(&config).await;
            let shutdown = async move {
                let _ = stopped.await;
            };
            herald::server::run_dispatcher(config, plugins, clock, shutdown)
                .await
                .expect("dispatcher runs");
        });
        stop
    }
}

/// Campaign fields for a send window open every day for hours around now (tests
/// on the system clock): a fixed-offset zone where it is about noon. Recipients'
/// own hours (`quiet_hours = "recipient"`, the default) would hold a New York
/// number from 21:00 to 08:00 there and make such a test depend on the hour it
/// runs at: they are tested on a manual clock (tests/api/compliance.rs).
pub fn window_open_now() -> Value {
    use chrono::Timelike;
    let ahead = 12 - Utc::now().hour() as i32;
    // Etc/GMT-N is N hours ahead of UTC (the POSIX sign convention).
    let zone = match ahead {
        0 => "Etc/GMT".to_string(),
        n if n > 0 => format!("Etc/GMT-{n}"),
        n => format!("Etc/GMT+{}", -n),
    };
    json!({
        "timezone": zone,
        "send_window_start": "06:00",
        "send_window_end": "23:00",
        "send_days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
        "quiet_hours": "campaign",
    })
}

/// The plugins of `config`: the shared set when its carriers are the defaults.
async fn plugins_for(config: &Config) -> herald::plugin::Plugins {
    let defaults = test_defaults();
    let same = serde_json::to_value(&config.carriers).ok() == serde_json::to_value(&defaults.carriers).ok()
        && config.template == defaults.template
        && config.template_settings == defaults.template_settings
        && config.plugins == defaults.plugins;
    if same {
        shared_plugins().await.clone()
    } else {
        herald::plugin::Plugins::load(config)
            .await
            .expect("the test's plugins load")
    }
}

/// Polls `check` every `every` until it returns `Some`, for up to `timeout`.
pub async fn poll_until<T, F, Fut>(every: Duration, timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(done) = check().await {
            return Some(done);
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}

/// Polls `check` until it returns `Some`, for up to `timeout`; panics naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    match poll_until(Duration::from_millis(50), timeout, check).await {
        Some(done) => done,
        None => panic!("timed out after {timeout:?} waiting for {what}"),
    }
}

/// The shipped plugins, compiled once per test process and shared by every
/// server (compiling them is most of a server's start-up).
async fn shared_plugins() -> &'static herald::plugin::Plugins {
    static PLUGINS: tokio::sync::OnceCell<herald::plugin::Plugins> = tokio::sync::OnceCell::const_new();
    PLUGINS
        .get_or_init(async || {
            herald::plugin::Plugins::load(&test_defaults())
                .await
                .expect("shipped plugins load")
        })
        .await
}

pub fn in_an_hour() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() + 3600
}

pub fn hs256_token(secret: &str, claims: Value) -> String {
    let key = EncodingKey::from_secret(secret.as_bytes());
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).expect("sign")
}

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)
}

pub fn signed_token(algorithm: Algorithm, private_pem: &str, claims: Value) -> String {
    let pem = std::fs::read(fixture(private_pem)).expect("fixture");
    let key = match algorithm {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
        _ => EncodingKey::from_ec_pem(&pem),
    }
    .expect("key");
    jsonwebtoken::encode(&Header::new(algorithm), &claims, &key).expect("sign")
}
