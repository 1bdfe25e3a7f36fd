//! Test harness: starts the real Herald (same composition root as `herald serve`)
//! on a loopback port, against a fresh SQLite file or this run's PostgreSQL
//! database, and talks to it over real HTTP.
//!
//! Two stacks: the embedded defaults (SQLite, in-process transport) and the
//! production stack (PostgreSQL + NATS JetStream). `Backend::Postgres` means
//! the latter: each server gets its own stream and subject prefixes on the
//! NATS server at `TEST_NATS_URL` (default `nats://127.0.0.1:4222`).
//!
//! PostgreSQL: `TEST_POSTGRES_URL` names a database to use as is (CI
//! creates one per run); otherwise a database `herald_test_<unix time>_<pid>` is
//! created on `postgres://postgres@127.0.0.1:5432/postgres` for this process, and
//! leftovers of runs older than two hours are dropped. When PostgreSQL cannot be
//! reached the PostgreSQL variant of each test is skipped with a notice, except
//! under `CI=true`, where it fails.

use std::path::PathBuf;

use chrono::Utc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use herald::clock::ManualClock;

use herald::config::Config;
use herald::server::Herald;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use salvo::conn::{Listener, TcpListener};
use serde_json::{Value, json};
use sqlx::Connection;
use tokio::sync::{OnceCell, oneshot};
use uuid::Uuid;

pub use serde_json;

pub mod gateway;

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
    config
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

const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const STALE_AFTER: Duration = Duration::from_secs(2 * 3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generates one `#[tokio::test]` per backend for each listed test body:
/// `mod name { fn sqlite(); fn postgres(); }`.
#[macro_export]
macro_rules! on_both_backends {
    ($(#[$meta:meta])* async fn $name:ident($server:ident) $body:block $($rest:tt)*) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn run($server: $crate::TestServer) $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                run($crate::TestServer::start($crate::Backend::Sqlite).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(server) = $crate::TestServer::start_if_available($crate::Backend::Postgres, |_| {}).await {
                    run(server).await;
                }
            }
        }
        $crate::on_both_backends!($($rest)*);
    };
    () => {};
}

/// A running Herald with its own data directory.
pub struct TestServer {
    pub base: String,
    pub backend: Backend,
    pub database_url: String,
    /// The configuration it runs with (bus prefixes, carriers…).
    pub config: Config,
    /// Set when the server was started on a manual clock.
    pub clock: Option<Arc<ManualClock>>,
    client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    _data_dir: tempfile::TempDir,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A response with its body parsed as JSON (`Value::Null` when empty or not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the status, showing the body when it differs.
    #[track_caller]
    pub fn expect(self, status: u16) -> Self {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.text);
        self
    }

    /// Asserts a problem document with this status; returns its `errors[].field`.
    #[track_caller]
    pub fn expect_problem(self, status: u16) -> Vec<String> {
        let reply = self.expect(status);
        assert_eq!(
            reply.header("content-type"),
            Some("application/problem+json"),
            "{}",
            reply.text
        );
        assert_eq!(reply.body["status"], status, "{}", reply.text);
        assert!(
            reply.body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{}",
            reply.text
        );
        reply.body["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .map(|e| e["field"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
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
            Backend::Postgres => own_schema(&postgres_url().await?).await,
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
            let run = unique_prefix();
            config.bus.nats_url = Some(url);
            config.bus.stream_prefix = format!("HT_{run}");
            config.bus.subject_prefix = format!("ht{run}");
        }
        configure(&mut config);
        // RUST_LOG=herald=debug shows the server's log in a test's output.
        if std::env::var_os("RUST_LOG").is_some() {
            herald::telemetry::init_logging(&config.log);
        }
        let plugins = plugins_for(&config);
        let system_clock: Arc<dyn herald::clock::Clock> = Arc::new(herald::clock::SystemClock);
        let used_clock = clock
            .clone()
            .map_or(system_clock, |c| c as Arc<dyn herald::clock::Clock>);
        let mut herald = Herald::open_with(config.clone(), true, plugins, used_clock)
            .await
            .expect("herald opens");
        herald.with_dispatcher = with_dispatcher;
        let acceptor = TcpListener::new("127.0.0.1:0").bind().await;
        let port = acceptor.local_addr().expect("bound address").port();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = herald
                .serve(acceptor, async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Some(Self {
            base: format!("http://127.0.0.1:{port}"),
            backend,
            database_url,
            config,
            clock,
            client: http_client().build().expect("HTTP client"),
            stop: Some(stop),
            _data_dir: data_dir,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A new user and a valid token for it.
    pub fn new_user(&self) -> User {
        let id = Uuid::now_v7();
        User {
            id,
            token: hs256_token(SECRET, json!({ "sub": id.to_string(), "exp": in_an_hour() })),
        }
    }

    /// An anonymous POST to `path`, to finish with headers and a body and
    /// pass to [`TestServer::send_request`].
    pub fn client_post(&self, path: &str) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::POST, path, None)
    }

    pub async fn send_request(&self, request: reqwest::RequestBuilder) -> Reply {
        self.send(request).await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.expect("request reaches the server");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            text,
            body,
        }
    }

    fn request(&self, method: reqwest::Method, path: &str, token: Option<&str>) -> reqwest::RequestBuilder {
        let request = self.client.request(method, self.url(path));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    pub async fn get(&self, path: &str, user: &User) -> Reply {
        self.send(self.request(reqwest::Method::GET, path, Some(&user.token)))
            .await
    }

    pub async fn get_anonymous(&self, path: &str) -> Reply {
        self.send(self.request(reqwest::Method::GET, path, None)).await
    }

    /// GET with a raw `Authorization` header value (or none).
    pub async fn get_with_authorization(&self, path: &str, authorization: Option<&str>) -> Reply {
        let mut request = self.request(reqwest::Method::GET, path, None);
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        self.send(request).await
    }

    /// GET with one extra header (for oversized header sections).
    pub async fn get_with_header(&self, path: &str, user: &User, name: &str, value: &str) -> Reply {
        self.send(
            self.request(reqwest::Method::GET, path, Some(&user.token))
                .header(name, value),
        )
        .await
    }

    pub async fn post(&self, path: &str, user: &User, body: Value) -> Reply {
        self.send(self.request(reqwest::Method::POST, path, Some(&user.token)).json(&body))
            .await
    }

    /// POST without a token (webhooks).
    pub async fn post_anonymous(&self, path: &str, body: Value) -> Reply {
        self.send(self.request(reqwest::Method::POST, path, None).json(&body))
            .await
    }

    /// A signed form POST, as Twilio's webhooks send it.
    pub async fn post_form(&self, path: &str, body: String, signature: &str) -> Reply {
        let request = self
            .request(reqwest::Method::POST, path, None)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-twilio-signature", signature)
            .body(body);
        self.send(request).await
    }

    /// POST of JSON to a log-carrier webhook, with its shared secret when given.
    pub async fn post_webhook(&self, path: &str, body: Value, secret: Option<&str>) -> Reply {
        let mut request = self.request(reqwest::Method::POST, path, None).json(&body);
        if let Some(secret) = secret {
            request = request.header(LOG_WEBHOOK_SECRET_HEADER, secret);
        }
        self.send(request).await
    }

    pub async fn post_anonymous_raw(&self, path: &str, body: Vec<u8>) -> Reply {
        self.send(self.request(reqwest::Method::POST, path, None).body(body))
            .await
    }

    pub async fn put(&self, path: &str, user: &User, body: Value) -> Reply {
        self.send(self.request(reqwest::Method::PUT, path, Some(&user.token)).json(&body))
            .await
    }

    pub async fn patch(&self, path: &str, user: &User, body: Value) -> Reply {
        self.send(
            self.request(reqwest::Method::PATCH, path, Some(&user.token))
                .json(&body),
        )
        .await
    }

    pub async fn delete(&self, path: &str, user: &User) -> Reply {
        self.send(self.request(reqwest::Method::DELETE, path, Some(&user.token)))
            .await
    }

    /// Sends raw bytes as a JSON body (for malformed and oversized bodies).
    pub async fn send_raw(&self, method: reqwest::Method, path: &str, user: &User, body: Vec<u8>) -> Reply {
        let request = self
            .request(method, path, Some(&user.token))
            .header("content-type", "application/json")
            .body(body);
        self.send(request).await
    }

    /// Uploads `bytes` as the multipart field `field`.
    pub async fn upload(&self, path: &str, user: &User, field: &str, bytes: Vec<u8>) -> Reply {
        let part = reqwest::multipart::Part::bytes(bytes).file_name("contacts.csv");
        let form = reqwest::multipart::Form::new().part(field.to_string(), part);
        self.send(
            self.request(reqwest::Method::POST, path, Some(&user.token))
                .multipart(form),
        )
        .await
    }

    /// Creates a campaign with the given extra fields and returns its id.
    pub async fn create_campaign(&self, user: &User, extra: Value) -> String {
        let mut body = json!({ "name": "Campaign", "message_template": "Hi {{name}}" });
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        let reply = self.post("/api/v1/campaigns", user, body).await.expect(201);
        reply.body["id"].as_str().expect("id").to_string()
    }

    /// A campaign's `GET /stats` body.
    pub async fn stats(&self, user: &User, campaign: &str) -> Value {
        self.get(&format!("/api/v1/campaigns/{campaign}/stats"), user)
            .await
            .expect(200)
            .body
    }

    /// Waits until the campaign has no pending message and `sent + failed`
    /// reaches `expected`; returns the stats.
    pub async fn wait_settled(&self, user: &User, campaign: &str, expected: u64, timeout: Duration) -> Value {
        eventually(&format!("{expected} final messages in {campaign}"), timeout, || async {
            let stats = self.stats(user, campaign).await;
            let done = stats["messages_sent"].as_u64()? + stats["messages_failed"].as_u64()?;
            (done >= expected && stats["messages_pending"] == 0).then_some(stats)
        })
        .await
    }

    /// Runs a dispatcher in this process, as `herald serve --role dispatcher`
    /// would: its own bus connection, no database. It stops with the returned guard.
    pub fn spawn_dispatcher(&self) -> oneshot::Sender<()> {
        let (stop, stopped) = oneshot::channel::<()>();
        let config = self.config.clone();
        let plugins = plugins_for(&config);
        let clock: Arc<dyn herald::clock::Clock> = match &self.clock {
            Some(clock) => clock.clone(),
            None => Arc::new(herald::clock::SystemClock),
        };
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            herald::server::run_dispatcher(config, plugins, clock, shutdown)
                .await
                .expect("dispatcher runs");
        });
        stop
    }

    /// Starts reading the user's Server-Sent Events; events arrive in the log.
    pub async fn listen(&self, user: &User) -> EventLog {
        let log = EventLog::default();
        let response = self
            .request(reqwest::Method::GET, "/api/v1/events", Some(&user.token))
            .send()
            .await
            .expect("event stream opens");
        assert_eq!(response.status().as_u16(), 200);
        let events = log.events.clone();
        tokio::spawn(async move {
            let mut response = response;
            let mut buffer = String::new();
            while let Ok(Some(chunk)) = response.chunk().await {
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buffer.find("\n\n") {
                    let frame: String = buffer.drain(..end + 2).collect();
                    let data: String = frame
                        .lines()
                        .filter_map(|line| line.strip_prefix("data:"))
                        .map(str::trim_start)
                        .collect::<Vec<_>>()
                        .join("\n");
                    if let Ok(event) = serde_json::from_str::<Value>(&data) {
                        events.lock().unwrap().push(event);
                    }
                }
            }
        });
        log
    }

    /// Moves a campaign through PUT status changes.
    pub async fn set_status(&self, user: &User, id: &str, status: &str) -> Reply {
        self.put(&format!("/api/v1/campaigns/{id}"), user, json!({ "status": status }))
            .await
    }
}

/// Campaign fields for a send window open every day for hours around now (tests
/// on the system clock): a fixed-offset zone where it is about noon.
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
    })
}
/// CloudEvents received over SSE.
#[derive(Clone, Default)]
pub struct EventLog {
    events: Arc<std::sync::Mutex<Vec<Value>>>,
}

impl EventLog {
    pub fn all(&self) -> Vec<Value> {
        self.events.lock().unwrap().clone()
    }

    /// Events of CloudEvents `type` (e.g. `herald.message.sent`).
    pub fn of_type(&self, kind: &str) -> Vec<Value> {
        self.all().into_iter().filter(|e| e["type"] == kind).collect()
    }
}

/// A user of the API with its bearer token.
#[derive(Debug, Clone)]
pub struct User {
    pub id: Uuid,
    pub token: String,
}

/// The plugins of `config`: the shared set when its carriers are the defaults.
fn plugins_for(config: &Config) -> herald::plugin::Plugins {
    let defaults = test_defaults();
    let same = serde_json::to_value(&config.carriers).ok() == serde_json::to_value(&defaults.carriers).ok()
        && config.template == defaults.template
        && config.template_settings == defaults.template_settings
        && config.plugins == defaults.plugins;
    if same {
        shared_plugins().clone()
    } else {
        herald::plugin::Plugins::load(config).expect("the test's plugins load")
    }
}

/// A schema of its own in this run's database, so each server's scheduler sees
/// only its own campaigns (tests run in parallel on one database, and some on a
/// manual clock).
async fn own_schema(database_url: &str) -> String {
    let schema = format!("s_{}", unique_prefix());
    let mut admin = sqlx::PgConnection::connect(database_url)
        .await
        .expect("PostgreSQL connects");
    let create = format!("CREATE SCHEMA \"{schema}\"");
    sqlx::raw_sql(sqlx::AssertSqlSafe(create))
        .execute(&mut admin)
        .await
        .expect("schema created");
    let _ = admin.close().await;
    let separator = if database_url.contains('?') { '&' } else { '?' };
    format!("{database_url}{separator}options=-c%20search_path%3D{schema}")
}

/// A prefix unique to this process and server: `<unix time>_<pid>_<n>`.
fn unique_prefix() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
    format!("{now}_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The NATS server for the production stack, checked once per process; stale
/// test streams (over two hours old) are deleted on the way.
pub async fn nats_url() -> Option<String> {
    static URL: OnceCell<Option<String>> = OnceCell::const_new();
    URL.get_or_init(|| async {
        let url = std::env::var("TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
        match prepare_nats(&url).await {
            Ok(()) => Some(url),
            Err(e) if in_ci() => panic!("NATS is required under CI=true but unusable at {url}: {e:#}"),
            Err(e) => {
                eprintln!("note: PostgreSQL tests run without NATS, which is unusable at {url}: {e:#}");
                None
            }
        }
    })
    .await
    .clone()
}

async fn prepare_nats(url: &str) -> anyhow::Result<()> {
    use futures::TryStreamExt;
    let client = tokio::time::timeout(Duration::from_secs(5), async_nats::connect(url)).await??;
    let jetstream = async_nats::jetstream::new(client);
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let names: Vec<String> = jetstream.stream_names().try_collect().await?;
    for name in names {
        let created = name
            .strip_prefix("HT_")
            .and_then(|rest| rest.split('_').next())
            .and_then(|t| t.parse::<u64>().ok());
        if created.is_some_and(|t| now.saturating_sub(t) > STALE_AFTER.as_secs()) {
            let _ = jetstream.delete_stream(&name).await;
        }
    }
    Ok(())
}

/// Polls `check` until it returns `Some`, for up to `timeout`; panics naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(done) = check().await {
            return done;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The shipped plugins, compiled once per test process and shared by every
/// server (compiling them is most of a server's start-up).
fn shared_plugins() -> &'static herald::plugin::Plugins {
    static PLUGINS: std::sync::OnceLock<herald::plugin::Plugins> = std::sync::OnceLock::new();
    PLUGINS.get_or_init(|| herald::plugin::Plugins::load(&test_defaults()).expect("shipped plugins load"))
}

/// An HTTP client builder for tests. The workspace builds reqwest without a
/// default TLS provider (Herald installs ring for plugin HTTP), so install it here too.
pub fn http_client() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
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

/// The Python of `TEST_PYTHON` (default `python3`) when it can import `module`;
/// otherwise `None` after a notice saying how to install `requirements` (a
/// requirements file under tests/), or a panic under `CI=true`.
pub fn python_with(module: &str, requirements: &str) -> Option<String> {
    let python = std::env::var("TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = std::process::Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    if probe.is_ok_and(|status| status.success()) {
        return Some(python);
    }
    let help = format!(
        "this test needs a Python with `{module}`, and `{python}` (TEST_PYTHON, default python3) has \
         none. Install it with:\n    python3 -m venv /var/tmp/herald-ci-venv\n    \
         /var/tmp/herald-ci-venv/bin/pip install -r {requirements}\nthen run with \
         TEST_PYTHON=/var/tmp/herald-ci-venv/bin/python (.ci/run does both)"
    );
    if in_ci() {
        panic!("{help}");
    }
    eprintln!("note: skipping: {help}");
    None
}

/// Whether this is a CI run (`CI=true`), where unavailable services fail tests.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// This process's PostgreSQL database URL, created and migrated once.
async fn postgres_url() -> Option<String> {
    static URL: OnceCell<Option<String>> = OnceCell::const_new();
    URL.get_or_init(|| async {
        match prepare_postgres().await {
            Ok(url) => Some(url),
            Err(e) if in_ci() => panic!("PostgreSQL is required under CI=true but unusable: {e:#}"),
            Err(e) => {
                eprintln!("note: skipping PostgreSQL tests, PostgreSQL is unusable: {e:#}");
                None
            }
        }
    })
    .await
    .clone()
}

async fn prepare_postgres() -> anyhow::Result<String> {
    if let Ok(url) = std::env::var("TEST_POSTGRES_URL") {
        return Ok(url);
    }
    let admin_url = std::env::var("TEST_POSTGRES_ADMIN_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.into());
    let mut admin = tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(&admin_url)).await??;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let stale: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'herald\\_test\\_%'")
            .fetch_all(&mut admin)
            .await?;
    for name in stale {
        let created = name.split('_').nth(2).and_then(|t| t.parse::<u64>().ok());
        if created.is_some_and(|t| now.saturating_sub(t) > STALE_AFTER.as_secs()) {
            let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(drop)).execute(&mut admin).await;
        }
    }
    let name = format!("herald_test_{now}_{}", std::process::id());
    let create = format!("CREATE DATABASE \"{name}\"");
    sqlx::raw_sql(sqlx::AssertSqlSafe(create)).execute(&mut admin).await?;
    admin.close().await?;
    let base = admin_url.rsplit_once('/').map_or(admin_url.as_str(), |(base, _)| base);
    Ok(format!("{base}/{name}"))
}
