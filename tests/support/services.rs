//! The real services the production stack runs on, isolated per test run.
//!
//! PostgreSQL: `TEST_POSTGRES_URL` names a database to use as is (CI creates one
//! per run); otherwise a database `herald_test_<unix time>_<pid>` is created on
//! `TEST_POSTGRES_ADMIN_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`)
//! for this process, and leftovers of runs older than two hours are dropped.
//! Each server gets a schema of its own in it.
//!
//! NATS: the server at `TEST_NATS_URL` (default `nats://127.0.0.1:4222`), each
//! server with stream and subject prefixes of its own (`HT_<unix time>_…`,
//! swept after two hours); tests that stop the bus run a `nats-server` of their
//! own from the `PATH`.
//!
//! A service that cannot be used skips its tests with a notice, except under
//! `CI=true`, where it fails them.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herald::config::BusConfig;
use sqlx::Connection;
use tokio::sync::OnceCell;

use crate::eventually;

const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
const STALE_AFTER: Duration = Duration::from_secs(2 * 3600);

/// Whether this is a CI run (`CI=true`), where unavailable services fail tests.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
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
    unavailable("a Python for this test", &help)
}

/// Under CI a missing service fails the test; elsewhere it is skipped with a notice.
pub fn unavailable<T>(what: &str, error: &str) -> Option<T> {
    if in_ci() {
        panic!("{what} is required under CI=true but unusable: {error}");
    }
    eprintln!("note: skipping, {what} is unusable: {error}");
    None
}

/// A prefix unique to this process and call: `<unix time>_<pid>_<n>`.
pub fn unique_prefix() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}_{}_{}",
        unix_now(),
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()
}

/// A URL of a new schema of its own in this run's PostgreSQL database, so each
/// server's scheduler sees only its own campaigns (tests run in parallel on one
/// database, some on a manual clock); `None` when PostgreSQL is unusable outside CI.
pub async fn postgres_schema() -> Option<String> {
    let database_url = postgres_url().await?;
    let schema = format!("s_{}", unique_prefix());
    let mut admin = sqlx::PgConnection::connect(&database_url)
        .await
        .expect("PostgreSQL connects");
    let create = format!("CREATE SCHEMA \"{schema}\"");
    sqlx::raw_sql(sqlx::AssertSqlSafe(create))
        .execute(&mut admin)
        .await
        .expect("schema created");
    let _ = admin.close().await;
    let separator = if database_url.contains('?') { '&' } else { '?' };
    Some(format!("{database_url}{separator}options=-c%20search_path%3D{schema}"))
}

/// This process's PostgreSQL database URL, created once.
async fn postgres_url() -> Option<String> {
    static URL: OnceCell<Option<String>> = OnceCell::const_new();
    URL.get_or_init(|| async {
        match prepare_postgres().await {
            Ok(url) => Some(url),
            Err(e) => unavailable("PostgreSQL", &format!("{e:#}")),
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
    let stale: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'herald\\_test\\_%'")
            .fetch_all(&mut admin)
            .await?;
    for name in stale {
        let created = name.split('_').nth(2).and_then(|t| t.parse::<u64>().ok());
        if created.is_some_and(|t| unix_now().saturating_sub(t) > STALE_AFTER.as_secs()) {
            let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(drop)).execute(&mut admin).await;
        }
    }
    let name = format!("herald_test_{}_{}", unix_now(), std::process::id());
    let create = format!("CREATE DATABASE \"{name}\"");
    sqlx::raw_sql(sqlx::AssertSqlSafe(create)).execute(&mut admin).await?;
    admin.close().await?;
    let base = admin_url.rsplit_once('/').map_or(admin_url.as_str(), |(base, _)| base);
    Ok(format!("{base}/{name}"))
}

/// Rows of `query` on the database at `url` (SQLite or PostgreSQL), read over
/// a connection of its own: what the server committed, not what it caches.
pub async fn query_rows<T>(url: &str, query: &'static str) -> Vec<T>
where
    T: Send + Unpin,
    T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
{
    if url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(url).await.expect("SQLite opens");
        let rows = sqlx::query_as(query).fetch_all(&mut conn).await.expect("rows read");
        let _ = conn.close().await;
        rows
    } else {
        let mut conn = sqlx::PgConnection::connect(url).await.expect("PostgreSQL connects");
        let rows = sqlx::query_as(query).fetch_all(&mut conn).await.expect("rows read");
        let _ = conn.close().await;
        rows
    }
}

/// The shared NATS server's URL, checked once per process; stale test streams
/// (over two hours old) are deleted on the way. `None` when it is unusable outside CI.
pub async fn nats_url() -> Option<String> {
    static URL: OnceCell<Option<String>> = OnceCell::const_new();
    URL.get_or_init(|| async {
        let url = std::env::var("TEST_NATS_URL").unwrap_or_else(|_| DEFAULT_NATS_URL.into());
        match prepare_nats(&url).await {
            Ok(()) => Some(url),
            Err(e) => unavailable(&format!("NATS at {url}"), &format!("{e:#}")),
        }
    })
    .await
    .clone()
}

async fn prepare_nats(url: &str) -> anyhow::Result<()> {
    use futures::TryStreamExt;
    let client = tokio::time::timeout(Duration::from_secs(5), async_nats::connect(url)).await??;
    let jetstream = async_nats::jetstream::new(client);
    let names: Vec<String> = jetstream.stream_names().try_collect().await?;
    for name in names {
        let created = name
            .strip_prefix("HT_")
            .and_then(|rest| rest.split('_').next())
            .and_then(|t| t.parse::<u64>().ok());
        if created.is_some_and(|t| unix_now().saturating_sub(t) > STALE_AFTER.as_secs()) {
            let _ = jetstream.delete_stream(&name).await;
        }
    }
    Ok(())
}

/// The bus of one server (or one set of processes) on the NATS server at
/// `url`: stream and subject prefixes of its own.
pub fn own_bus(url: String) -> BusConfig {
    let run = unique_prefix();
    BusConfig {
        nats_url: Some(url),
        stream_prefix: format!("HT_{run}"),
        subject_prefix: format!("ht{run}"),
    }
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A nats-server of the test's own (`nats-server` from the `PATH`), for tests
/// that stop the bus: JetStream storage and its log (`nats.log`) in its
/// directory, so a restart keeps the streams. Killed when dropped.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    _temporary: Option<tempfile::TempDir>,
}

impl NatsServer {
    /// Starts with its storage in a temporary directory; `None` (after a
    /// notice) when `nats-server` cannot run, outside CI.
    pub async fn start() -> Option<Self> {
        let temporary = tempfile::tempdir().expect("temp dir");
        Self::launch(temporary.path().to_path_buf(), Some(temporary)).await
    }

    /// Starts with its storage and log in `dir` (kept with a failed test's logs).
    pub async fn start_in(dir: &Path) -> Option<Self> {
        Self::launch(dir.to_path_buf(), None).await
    }

    async fn launch(dir: PathBuf, temporary: Option<tempfile::TempDir>) -> Option<Self> {
        let mut server = Self {
            child: None,
            port: free_port(),
            dir,
            _temporary: temporary,
        };
        if let Err(e) = server.spawn() {
            return unavailable("nats-server (from the PATH)", &e.to_string());
        }
        server.wait_ready().await;
        Some(server)
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("nats.log"))?;
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(self.dir.join("jetstream"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    async fn wait_ready(&self) {
        eventually("nats-server to listen", Duration::from_secs(20), || async {
            TcpStream::connect(("127.0.0.1", self.port)).ok().map(drop)
        })
        .await;
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: the bus is gone at once.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and storage.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().expect("nats-server starts again");
        self.wait_ready().await;
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
