//! Process-level reliability of the sending pipeline (SPEC §1, §9): the real
//! `herald` binary is killed with SIGKILL mid-campaign (the host, a dispatcher)
//! or loses its NATS server, and every message must still end final exactly once
//! in the database, the fake carrier having seen each message id at least once.
//!
//! Each test runs its own processes against a loopback fake gateway living in
//! the test process (the `builtin:http` carrier plugin posts `{"id": <message id>,
//! ...}` to `/send/<process name>`, so the gateway knows which process sent what).
//! The PostgreSQL tests use a database of their own on the server of
//! `TEST_POSTGRES_ADMIN_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`)
//! and stream prefixes of their own
//! on the NATS server at 127.0.0.1:4222 (the NATS-restart test runs `nats-server`
//! from the `PATH`); when either is unreachable they are
//! skipped with a notice, except under `CI=true`, where they fail.
//!
//! On failure the tail of every process's log is printed and the scratch
//! directory is kept (always with `PIPELINE_KEEP=1`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use salvo::conn::Listener;
use salvo::prelude::*;
use serde_json::{Value, json};
use sqlx::Connection;
use uuid::Uuid;

const SECRET: &str = "pipeline-test-secret-0123456789abcdef-xyz";
/// PostgreSQL to create the tests' databases on, unless `TEST_POSTGRES_ADMIN_URL` names another.
const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const SHARED_NATS: &str = "nats://127.0.0.1:4222";
/// The NATS server binary, found on the `PATH` like the other tests' servers.
const NATS_SERVER: &str = "nats-server";
/// Leftover databases of crashed runs older than this are dropped (the shared
/// harness does the same for `HT_<unix time>_…` streams).
const STALE_AFTER: Duration = Duration::from_secs(2 * 3600);
/// Contacts per campaign: `daily_limit` is capped at 1,000 by the spec (§4), so a
/// campaign sends at most 1,000 messages today and larger sends are several campaigns.
const PER_CAMPAIGN: usize = 1000;
/// How long a started process may take to answer (plugins compile at start).
const STARTUP: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// Embedded defaults (SQLite, in-process transport): 10 × 1,000 messages, the
/// process killed mid-way and started again on the same data directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_host_killed_mid_campaign_finishes_every_message_after_restart() {
    // 16 calls at once of ≥ 10 ms each: at most 1,600/s, so 10,000 take several seconds.
    let tuning = Tuning {
        lease_secs: 120,
        max_in_flight: 5000,
        max_concurrency: 16,
        gateway_delay: Duration::from_millis(10),
    };
    let stack = Stack::new("embedded", Database::Sqlite, None, tuning).await;
    let total = 10 * PER_CAMPAIGN;

    let mut first = stack.herald("herald-1", "all");
    stack.api.wait_ready(&mut first).await;
    stack.note("herald-1 ready");
    let campaigns = stack.api.campaigns(10, PER_CAMPAIGN).await;
    stack.api.send_all(&campaigns).await;
    stack.note("10 campaigns of 1,000 sent");

    stack
        .gateway
        .wait_calls(total / 4, Duration::from_secs(60), &mut [&mut first])
        .await;
    first.kill9();
    let (calls, ids) = (stack.gateway.total(), stack.gateway.distinct());
    assert!(ids < total, "killed too late: {ids} of {total} already sent");
    stack.note(&format!(
        "killed herald-1 after {calls} gateway calls ({ids} message ids)"
    ));

    let mut second = stack.herald("herald-2", "all");
    stack.api.wait_ready(&mut second).await;
    stack.note("herald-2 ready");
    stack
        .wait_settled(&campaigns, Duration::from_secs(90), &mut [&mut second])
        .await;
    second.terminate(Duration::from_secs(15));

    // In process, the jobs and results in memory die with the process: calls in
    // progress and results not yet applied (at most a batch of 500) are repeated
    // after the restart.
    stack.verify(total, tuning.max_concurrency as usize + 500).await;
    let by_sender = stack.gateway.by_sender();
    assert!(
        by_sender.get("herald-2").is_some_and(|&n| n > 0),
        "the restarted process sent the rest"
    );
}

/// PostgreSQL + NATS, separate roles: the only dispatcher is killed mid-campaign
/// and a new one started; the jobs it held come back (redelivery or recovery).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_dispatcher_is_replaced_and_every_message_is_final_once() {
    let Some(stack) = Stack::on_postgres_and_nats("dispatcher-kill", production_tuning()).await else {
        return;
    };
    let total = 2 * PER_CAMPAIGN;
    let mut api = stack.herald("api-1", "api");
    let mut first = stack.herald("dispatcher-1", "dispatcher");
    stack.api.wait_ready(&mut api).await;
    wait_dispatcher(&mut first).await;
    stack.note("api-1 and dispatcher-1 ready");
    let campaigns = stack.api.campaigns(2, PER_CAMPAIGN).await;
    stack.api.send_all(&campaigns).await;
    stack.note("2 campaigns of 1,000 sent");

    let waiting = Duration::from_secs(60);
    stack
        .gateway
        .wait_calls(total / 4, waiting, &mut [&mut api, &mut first])
        .await;
    first.kill9();
    let (calls, ids) = (stack.gateway.total(), stack.gateway.distinct());
    assert!(ids < total, "killed too late: {ids} of {total} already sent");
    stack.note(&format!(
        "killed dispatcher-1 after {calls} gateway calls ({ids} message ids)"
    ));

    let mut second = stack.herald("dispatcher-2", "dispatcher");
    wait_dispatcher(&mut second).await;
    stack.note("dispatcher-2 ready");
    // The jobs the killed dispatcher held are past their deadline (claim + 5 s
    // lease) when JetStream redelivers them after its 30 s ack wait, and are
    // dropped: the lease's re-hand-out must bring them back, within seconds.
    stack
        .wait_settled(&campaigns, Duration::from_secs(45), &mut [&mut api, &mut second])
        .await;
    // Only what the killed dispatcher had in hand can go twice.
    stack.verify(total, stack.tuning.max_in_flight as usize).await;
}

/// PostgreSQL + NATS, separate roles: the api process is killed mid-campaign and
/// started again; the dispatcher keeps going and its results wait on the bus.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_api_host_restarts_and_every_message_is_final_once() {
    let Some(stack) = Stack::on_postgres_and_nats("api-kill", production_tuning()).await else {
        return;
    };
    let total = 2 * PER_CAMPAIGN;
    let mut first = stack.herald("api-1", "api");
    let mut dispatcher = stack.herald("dispatcher-1", "dispatcher");
    stack.api.wait_ready(&mut first).await;
    wait_dispatcher(&mut dispatcher).await;
    stack.note("api-1 and dispatcher-1 ready");
    let campaigns = stack.api.campaigns(2, PER_CAMPAIGN).await;
    stack.api.send_all(&campaigns).await;
    stack.note("2 campaigns of 1,000 sent");

    let waiting = Duration::from_secs(60);
    stack
        .gateway
        .wait_calls(total / 4, waiting, &mut [&mut first, &mut dispatcher])
        .await;
    first.kill9();
    let (calls, ids) = (stack.gateway.total(), stack.gateway.distinct());
    assert!(ids < total, "killed too late: {ids} of {total} already sent");
    stack.note(&format!("killed api-1 after {calls} gateway calls ({ids} message ids)"));
    // Down for a moment: the dispatcher finishes what it holds, results pile up on the bus.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut second = stack.herald("api-2", "api");
    stack.api.wait_ready(&mut second).await;
    stack.note("api-2 ready");
    // Results the killed process had pulled but not applied come back after the
    // bus's ack wait (30 s).
    stack
        .wait_settled(&campaigns, Duration::from_secs(60), &mut [&mut second, &mut dispatcher])
        .await;
    // Jobs and results survive on the bus, so normally nothing is sent twice; but
    // with a lease (5 s) shorter than that ack wait, messages whose results wait
    // there may be handed out again.
    stack.verify(total, stack.tuning.max_in_flight as usize).await;
}

/// PostgreSQL + NATS: two dispatchers consume one campaign's jobs; both work,
/// and no message reaches the carrier twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_dispatchers_share_a_campaign_without_sending_twice() {
    // Nothing crashes here: a long lease keeps a busy machine's queueing from
    // making jobs stale (a stale job is handed out again, and could go twice).
    let tuning = Tuning {
        lease_secs: 60,
        ..production_tuning()
    };
    let Some(stack) = Stack::on_postgres_and_nats("two-dispatchers", tuning).await else {
        return;
    };
    let total = 2 * PER_CAMPAIGN;
    let mut api = stack.herald("api-1", "api");
    let mut one = stack.herald("dispatcher-1", "dispatcher");
    let mut two = stack.herald("dispatcher-2", "dispatcher");
    stack.api.wait_ready(&mut api).await;
    wait_dispatcher(&mut one).await;
    wait_dispatcher(&mut two).await;
    stack.note("api-1, dispatcher-1 and dispatcher-2 ready");
    let campaigns = stack.api.campaigns(2, PER_CAMPAIGN).await;
    stack.api.send_all(&campaigns).await;
    stack.note("2 campaigns of 1,000 sent");
    let processes = &mut [&mut api, &mut one, &mut two];
    stack.wait_settled(&campaigns, Duration::from_secs(60), processes).await;

    stack.verify(total, 0).await;
    let by_sender = stack.gateway.by_sender();
    for name in ["dispatcher-1", "dispatcher-2"] {
        assert!(
            by_sender.get(name).is_some_and(|&n| n > 0),
            "{name} sent nothing: {by_sender:?}"
        );
    }
}

/// PostgreSQL + a NATS server of the test's own, killed mid-campaign and started
/// again on the same port and storage: the campaign completes when it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restarted_mid_campaign_and_the_campaign_completes() {
    let runs = Command::new(NATS_SERVER).arg("--version").output();
    if !runs.is_ok_and(|out| out.status.success()) {
        unavailable::<()>("nats-server", &format!("{NATS_SERVER} is not on the PATH"));
        return;
    }
    let Some(admin) = postgres_admin().await else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let mut nats = NatsServer::start(dir.path()).await;
    let bus = NatsBus::new(nats.url(), false);
    let database = Database::Postgres(PgDatabase::create(&admin).await);
    let stack = Stack::with_dir(dir, "nats-restart", database, Some(bus), production_tuning()).await;
    let total = 2 * PER_CAMPAIGN;

    let mut herald = stack.herald("herald-1", "all");
    stack.api.wait_ready(&mut herald).await;
    stack.note("nats-1 and herald-1 ready");
    let campaigns = stack.api.campaigns(2, PER_CAMPAIGN).await;
    stack.api.send_all(&campaigns).await;
    stack.note("2 campaigns of 1,000 sent");

    stack
        .gateway
        .wait_calls(total / 4, Duration::from_secs(60), &mut [&mut herald])
        .await;
    nats.process.kill9();
    let (calls, ids) = (stack.gateway.total(), stack.gateway.distinct());
    assert!(ids < total, "NATS stopped too late: {ids} of {total} already sent");
    stack.note(&format!(
        "killed nats-1 after {calls} gateway calls ({ids} message ids)"
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    nats.restart().await;
    stack.note(&format!("nats-2 ready; {} gateway calls so far", stack.gateway.total()));
    // Claims whose publish failed in the outage, and jobs that outlived their
    // deadline in it, are handed out again after the 5 s lease.

    stack
        .wait_settled(&campaigns, Duration::from_secs(45), &mut [&mut herald])
        .await;
    // Acknowledgements lost with the server make their jobs come again.
    stack.verify(total, stack.tuning.max_in_flight as usize).await;
}

// ---------------------------------------------------------------------------
// The stack under test
// ---------------------------------------------------------------------------

/// Settings that shape the timing of a run.
#[derive(Debug, Clone, Copy)]
struct Tuning {
    /// `dispatch.lease_secs`: after it an unanswered hand-off is handed out again
    /// (short where a crash must be recovered from quickly), and a job's deadline.
    lease_secs: u64,
    /// `dispatch.max_in_flight`: small next to the lease, so no job waits in the
    /// queue past its deadline (claim + lease) in normal operation.
    max_in_flight: u32,
    /// The carrier's `max_concurrency`; with the gateway's delay it bounds throughput.
    max_concurrency: u32,
    gateway_delay: Duration,
}

/// PostgreSQL + NATS runs: 8 calls at once of ≥ 20 ms each, at most 400/s, so
/// 2,000 messages take about five seconds or more.
fn production_tuning() -> Tuning {
    Tuning {
        lease_secs: 5,
        max_in_flight: 200,
        max_concurrency: 8,
        gateway_delay: Duration::from_millis(20),
    }
}

/// A `messages` row, as far as the checks need it.
#[derive(Debug, sqlx::FromRow)]
struct Row {
    id: Uuid,
    status: String,
    /// Hand-offs to a dispatcher (the job's deduplication key is `<id>.<hand_offs>`).
    hand_offs: i32,
    attempts: i32,
}

enum Database {
    /// `herald.db` in the shared data directory.
    Sqlite,
    Postgres(PgDatabase),
}

/// Everything one test runs against; herald processes are spawned from it.
struct Stack {
    /// Kept (not deleted) when the test fails, for its logs.
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    label: String,
    gateway: Gateway,
    database: Database,
    bus: Option<NatsBus>,
    api_port: u16,
    tuning: Tuning,
    api: Api,
    started: Instant,
}

impl Stack {
    async fn new(label: &str, database: Database, bus: Option<NatsBus>, tuning: Tuning) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::with_dir(dir, label, database, bus, tuning).await
    }

    async fn with_dir(
        dir: tempfile::TempDir,
        label: &str,
        database: Database,
        bus: Option<NatsBus>,
        tuning: Tuning,
    ) -> Self {
        let path = dir.path().to_path_buf();
        let gateway = Gateway::start(tuning.gateway_delay).await;
        let api_port = free_port();
        let database_name = match &database {
            Database::Sqlite => "SQLite".to_string(),
            Database::Postgres(db) => db.name.clone(),
        };
        let streams = bus.as_ref().map_or("in process", |bus| bus.stream_prefix.as_str());
        eprintln!(
            "[{label}] {database_name}, streams {streams}, scratch {}",
            path.display()
        );
        Self {
            dir: Some(dir),
            path,
            label: label.to_string(),
            gateway,
            database,
            bus,
            api_port,
            tuning,
            api: Api::new(format!("http://127.0.0.1:{api_port}")),
            started: Instant::now(),
        }
    }

    /// A fresh PostgreSQL database and fresh stream prefixes on the shared NATS
    /// server; `None` (after a notice) when either is unreachable outside CI.
    async fn on_postgres_and_nats(label: &str, tuning: Tuning) -> Option<Self> {
        let admin = postgres_admin().await?;
        let nats = shared_nats().await?;
        let database = Database::Postgres(PgDatabase::create(&admin).await);
        Some(Self::new(label, database, Some(NatsBus::new(nats, true)), tuning).await)
    }

    /// Logs a step with the time since the stack was set up.
    fn note(&self, what: &str) {
        eprintln!("[{} +{:.1?}] {what}", self.label, self.started.elapsed());
    }

    fn data_dir(&self) -> PathBuf {
        self.path.join("data")
    }

    fn database_url(&self) -> String {
        match &self.database {
            Database::Sqlite => format!("sqlite://{}", self.data_dir().join("herald.db").display()),
            Database::Postgres(db) => db.url.clone(),
        }
    }

    /// Writes the configuration of process `name`: its carrier posts to
    /// `/send/<name>` on the gateway, so calls can be told apart by sender.
    fn config_file(&self, name: &str) -> PathBuf {
        let Tuning {
            max_in_flight,
            max_concurrency,
            ..
        } = self.tuning;
        let text = format!(
            r#"data_dir = {data:?}

[log]
# Not every request: start-up, bus and recovery lines are what a failure needs.
level = "info,herald::api=warn,herald::dispatch=debug"

[auth]
jwt_secret = "{SECRET}"

[database]
max_connections = 8

[dispatch]
max_in_flight = {max_in_flight}
tick_ms = 100

[[carriers]]
name = "gateway"
plugin = "builtin:http"
default = true
allowed_hosts = ["127.0.0.1"]
allow_insecure_http = true
max_per_second = 2000
max_concurrency = {max_concurrency}

[carriers.settings]
url = "{url}/send/{name}"
"#,
            data = self.data_dir().display().to_string(),
            url = self.gateway.base,
        );
        let file = self.path.join(format!("{name}.toml"));
        std::fs::write(&file, text).expect("config written");
        file
    }

    /// Starts `herald serve --role <role>` as process `name`. The database URL is
    /// given to the api role only: a dispatcher must work without it.
    fn herald(&self, name: &str, role: &str) -> Proc {
        let config = self.config_file(name);
        let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
        command
            .args(["serve", "--role", role, "--config"])
            .arg(&config)
            .current_dir(&self.path);
        for (var, _) in std::env::vars_os() {
            if var.to_string_lossy().starts_with("HERALD_") {
                command.env_remove(var);
            }
        }
        command
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .env("HERALD_SERVER__BIND", format!("127.0.0.1:{}", self.api_port))
            .env("HERALD_DISPATCH__LEASE_SECS", self.tuning.lease_secs.to_string());
        if role != "dispatcher" {
            command.env("HERALD_DATABASE__URL", self.database_url());
        }
        if let Some(bus) = &self.bus {
            command
                .env("HERALD_BUS__NATS_URL", &bus.url)
                .env("HERALD_BUS__STREAM_PREFIX", &bus.stream_prefix)
                .env("HERALD_BUS__SUBJECT_PREFIX", &bus.subject_prefix);
        }
        Proc::spawn(name, command, &self.path)
    }

    /// Waits until every campaign has all its messages final; on timeout, fails
    /// showing where the unfinished ones are.
    async fn wait_settled(&self, campaigns: &[String], timeout: Duration, processes: &mut [&mut Proc]) {
        let Err(progress) = self.api.settled(campaigns, PER_CAMPAIGN, timeout, processes).await else {
            return self.note("settled");
        };
        let calls = self.gateway.calls();
        let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
        // Unfinished messages by (status, hand-off number, reached the gateway).
        let mut stuck: BTreeMap<(String, i32, bool), usize> = BTreeMap::new();
        for Row {
            id, status, hand_offs, ..
        } in self.messages().await
        {
            *by_status.entry(status.clone()).or_default() += 1;
            if status == "queued" || status == "sending" {
                let seen = calls.contains_key(&id.to_string());
                *stuck.entry((status, hand_offs, seen)).or_default() += 1;
            }
        }
        panic!(
            "campaigns not settled after {timeout:?}: {progress}; messages by status {by_status:?}; \
             unfinished by (status, hand_offs, seen by the gateway): {stuck:?}"
        );
    }

    /// Every message row.
    async fn messages(&self) -> Vec<Row> {
        const QUERY: &str = "SELECT id, status, hand_offs, attempts FROM messages";
        match &self.database {
            Database::Sqlite => {
                let url = format!("{}?mode=ro", self.database_url());
                let mut conn = sqlx::SqliteConnection::connect(&url).await.expect("SQLite opens");
                let rows = sqlx::query_as(QUERY).fetch_all(&mut conn).await.expect("messages read");
                let _ = conn.close().await;
                rows
            }
            Database::Postgres(db) => {
                let mut conn = sqlx::PgConnection::connect(&db.url).await.expect("PostgreSQL connects");
                let rows = sqlx::query_as(QUERY).fetch_all(&mut conn).await.expect("messages read");
                let _ = conn.close().await;
                rows
            }
        }
    }

    /// Asserts the outcome of a run: `expected` messages, each `sent` once in the
    /// database and seen by the gateway at least once, and nothing sent that the
    /// database does not know. At most `max_twice` ids may have reached the
    /// gateway more than once.
    async fn verify(&self, expected: usize, max_twice: usize) {
        let rows = self.messages().await;
        let calls = self.gateway.calls();
        let by_sender = self.gateway.by_sender();
        let mut by_status: BTreeMap<&str, usize> = BTreeMap::new();
        for row in &rows {
            *by_status.entry(row.status.as_str()).or_default() += 1;
        }
        let twice = calls.values().filter(|&&n| n > 1).count();
        let most = calls.values().copied().max().unwrap_or(0);
        self.note(&format!(
            "messages by status {by_status:?}; {} gateway calls for {} ids, by process {by_sender:?}; \
             {twice} ids called more than once (at most {most} times)",
            calls.values().sum::<usize>(),
            calls.len()
        ));
        assert_eq!(rows.len(), expected, "message rows: {by_status:?}");
        let ids: HashSet<String> = rows.iter().map(|row| row.id.to_string()).collect();
        assert_eq!(ids.len(), expected, "message ids are unique");
        // The gateway accepts every call, so every message ends `sent`, its one
        // accepted call counted once however often it was handed out.
        assert_eq!(
            by_status.get("sent"),
            Some(&expected),
            "all sent, none stuck: {by_status:?}"
        );
        let recounted: Vec<&Row> = rows.iter().filter(|row| row.attempts != 1).take(5).collect();
        assert!(recounted.is_empty(), "messages whose attempts are not 1: {recounted:?}");
        let missing = ids.iter().filter(|id| !calls.contains_key(*id)).count();
        assert_eq!(missing, 0, "sent messages that never reached the gateway");
        let unknown: Vec<&String> = calls.keys().filter(|id| !ids.contains(*id)).collect();
        assert!(
            unknown.is_empty(),
            "the gateway got ids that are no message: {unknown:?}"
        );
        assert!(
            twice <= max_twice,
            "{twice} ids sent more than once (allowed {max_twice})"
        );
        if let Some(bus) = &self.bus {
            // SPEC §6: one `message.sent` event per message on the events stream,
            // however the results reached the database. Events of results a killed
            // api process had committed but not announced come when JetStream
            // redelivers those results (its 30 s ack wait), so wait past that.
            let deadline = Instant::now() + Duration::from_secs(60);
            let events = loop {
                let events = bus.count_events("message.sent").await;
                if events == Some(expected) || Instant::now() > deadline {
                    break events;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            };
            self.note(&format!("message.sent events on the events stream: {events:?}"));
            assert_eq!(events, Some(expected), "message.sent events on the events stream");
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::env::var_os("PIPELINE_KEEP").is_some()
            && let Some(dir) = self.dir.take()
        {
            eprintln!(
                "----- {}: kept {} (PIPELINE_KEEP) -----",
                self.label,
                dir.keep().display()
            );
        }
        if !std::thread::panicking() {
            return;
        }
        let mut logs: Vec<PathBuf> = std::fs::read_dir(&self.path)
            .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        logs.retain(|p| p.extension().is_some_and(|e| e == "log"));
        logs.sort();
        for log in logs {
            eprintln!("----- {}: last lines of {} -----", self.label, log.display());
            eprintln!("{}", tail(&log, 40));
        }
        if let Some(dir) = self.dir.take() {
            eprintln!("----- {}: kept {} -----", self.label, dir.keep().display());
        }
    }
}

/// Waits for `--role dispatcher` to say it runs (it has no HTTP listener).
async fn wait_dispatcher(process: &mut Proc) {
    let deadline = Instant::now() + STARTUP;
    while !process.log_text().contains("dispatcher running") {
        process.assert_alive();
        assert!(
            Instant::now() < deadline,
            "{} did not start in {STARTUP:?}",
            process.name
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------

/// A child process, killed (SIGKILL) when dropped; its stdout and stderr go to
/// `<name>.log` in the scratch directory.
struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, mut command: Command, dir: &Path) -> Self {
        let log = dir.join(format!("{name}.log"));
        let file = File::create(&log).expect("log file");
        command
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file);
        let child = command.spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self {
            name: name.to_string(),
            child: Some(child),
            log,
        }
    }

    /// SIGKILL: no chance to finish anything.
    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then SIGKILL if it has not stopped within `grace`.
    fn terminate(&mut self, grace: Duration) {
        let Some(child) = self.child.as_mut() else { return };
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                self.child = None;
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{} ignored SIGTERM for {grace:?}; killing it", self.name);
        self.kill9();
    }

    #[track_caller]
    fn assert_alive(&mut self) {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            panic!("{} exited unexpectedly ({status})", self.name);
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `<unix time>_<pid>_<n>`, unique per process and call.
fn unique() -> String {
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

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Under CI a missing service fails the test; elsewhere it is skipped with a notice.
fn unavailable<T>(what: &str, error: &str) -> Option<T> {
    if in_ci() {
        panic!("{what} is required under CI=true but unusable: {error}");
    }
    eprintln!("note: skipping, {what} is unusable: {error}");
    None
}

// ---------------------------------------------------------------------------
// The HTTP API
// ---------------------------------------------------------------------------

struct Api {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    fn new(base: String) -> Self {
        // reqwest is built without a TLS provider of its own (Herald installs ring).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let claims = json!({ "sub": Uuid::now_v7().to_string(), "exp": unix_now() + 3600 });
        let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
        let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).expect("token signed");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("HTTP client");
        Self { base, token, http }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> reqwest::Result<(u16, Value)> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
    }

    async fn expect(&self, method: reqwest::Method, path: &str, body: Value, status: u16) -> Value {
        let (got, reply) = self
            .call(method.clone(), path, Some(body))
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert_eq!(got, status, "{method} {path}: {reply}");
        reply
    }

    /// Waits until `/readyz` answers 200 (database and bus reachable).
    async fn wait_ready(&self, process: &mut Proc) {
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Ok((200, _)) = self.call(reqwest::Method::GET, "/readyz", None).await {
                return;
            }
            process.assert_alive();
            assert!(Instant::now() < deadline, "{} not ready in {STARTUP:?}", process.name);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `count` active campaigns of `contacts` contacts each, sending now.
    async fn campaigns(&self, count: usize, contacts: usize) -> Vec<String> {
        let mut ids = Vec::with_capacity(count);
        for c in 0..count {
            let mut body = open_now();
            body["name"] = json!(format!("Pipeline {c}"));
            body["message_template"] = json!(format!("Hi {{{{name}}}}, this is campaign {c}"));
            body["daily_limit"] = json!(PER_CAMPAIGN);
            let created = self.expect(reqwest::Method::POST, "/api/v1/campaigns", body, 201).await;
            let id = created["id"].as_str().expect("campaign id").to_string();
            // Distinct numbers across campaigns: +1 212 5cc nnnn.
            let list: Vec<Value> = (0..contacts)
                .map(|i| json!({ "phone_number": format!("+12125{:02}{i:04}", c % 100), "name": format!("Ada {i}") }))
                .collect();
            let path = format!("/api/v1/campaigns/{id}/contacts");
            self.expect(reqwest::Method::POST, &path, json!({ "contacts": list }), 201)
                .await;
            let path = format!("/api/v1/campaigns/{id}");
            self.expect(reqwest::Method::PUT, &path, json!({ "status": "active" }), 200)
                .await;
            ids.push(id);
        }
        ids
    }

    async fn send_all(&self, campaigns: &[String]) {
        for id in campaigns {
            let path = format!("/api/v1/campaigns/{id}/send");
            let accepted = self.expect(reqwest::Method::POST, &path, json!({}), 202).await;
            assert_eq!(accepted["queued"], PER_CAMPAIGN, "{accepted}");
        }
    }

    /// `(final, pending)` of each campaign, or `None` while the API does not answer.
    async fn progress(&self, campaigns: &[String]) -> Option<Vec<(u64, u64)>> {
        let mut out = Vec::with_capacity(campaigns.len());
        for id in campaigns {
            let (status, stats) = self
                .call(reqwest::Method::GET, &format!("/api/v1/campaigns/{id}/stats"), None)
                .await
                .ok()?;
            if status != 200 {
                return None;
            }
            let done = stats["messages_sent"].as_u64()? + stats["messages_failed"].as_u64()?;
            out.push((done, stats["messages_pending"].as_u64()?));
        }
        Some(out)
    }

    /// `Ok` once every campaign has `each` final messages and none pending;
    /// `Err` with the last progress seen after `timeout`. Fails early if one of
    /// `processes` dies.
    async fn settled(
        &self,
        campaigns: &[String],
        each: usize,
        timeout: Duration,
        processes: &mut [&mut Proc],
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Some(progress) = self.progress(campaigns).await {
                if progress
                    .iter()
                    .all(|&(done, pending)| done == each as u64 && pending == 0)
                {
                    return Ok(());
                }
                last = Some(progress);
            }
            for process in processes.iter_mut() {
                process.assert_alive();
            }
            if Instant::now() > deadline {
                return Err(format!("(final, pending) per campaign: {last:?}"));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Campaign fields that open the send window now, whatever the time of day: a
/// fixed-offset zone where it is about noon, 06:00–23:00, every day.
fn open_now() -> Value {
    use chrono::Timelike;
    let ahead = 12 - chrono::Utc::now().hour() as i32;
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

// ---------------------------------------------------------------------------
// The fake carrier gateway
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Seen {
    /// Calls per Herald message id.
    by_id: HashMap<String, usize>,
    /// Calls per sending process (the last path segment).
    by_sender: BTreeMap<String, usize>,
}

struct GatewayState {
    seen: Mutex<Seen>,
    delay: Duration,
}

/// A loopback SMS gateway for `builtin:http`: accepts everything after `delay`,
/// counting calls per message id and per sender.
struct Gateway {
    base: String,
    state: Arc<GatewayState>,
}

#[handler]
async fn accept(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let state = depot.get_typed::<Arc<GatewayState>>().expect("state").clone();
    let sender = req.param::<String>("sender").unwrap_or_default();
    let bytes = req.payload().await.map(|b| b.to_vec()).unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let id = body["id"].as_str().unwrap_or_default().to_string();
    {
        // Counted on arrival: a call whose answer the killed sender never read still reached us.
        let mut seen = state.seen.lock().unwrap();
        *seen.by_id.entry(id.clone()).or_default() += 1;
        *seen.by_sender.entry(sender).or_default() += 1;
    }
    tokio::time::sleep(state.delay).await;
    res.render(Json(json!({ "id": format!("gw-{id}"), "status": "queued" })));
}

impl Gateway {
    async fn start(delay: Duration) -> Self {
        let state = Arc::new(GatewayState {
            seen: Mutex::new(Seen::default()),
            delay,
        });
        let acceptor = salvo::conn::TcpListener::new("127.0.0.1:0").bind().await;
        let port = acceptor.local_addr().expect("bound address").port();
        let router = Router::new()
            .hoop(salvo::affix_state::inject(state.clone()))
            .push(Router::with_path("send/{sender}").post(accept));
        tokio::spawn(async move { Server::new(acceptor).serve(router).await });
        Self {
            base: format!("http://127.0.0.1:{port}"),
            state,
        }
    }

    fn calls(&self) -> HashMap<String, usize> {
        self.state.seen.lock().unwrap().by_id.clone()
    }

    fn by_sender(&self) -> BTreeMap<String, usize> {
        self.state.seen.lock().unwrap().by_sender.clone()
    }

    fn total(&self) -> usize {
        self.state.seen.lock().unwrap().by_sender.values().sum()
    }

    fn distinct(&self) -> usize {
        self.state.seen.lock().unwrap().by_id.len()
    }

    /// Waits for `n` calls in all (mid-campaign); returns the count reached.
    async fn wait_calls(&self, n: usize, timeout: Duration, processes: &mut [&mut Proc]) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let total = self.total();
            if total >= n {
                return total;
            }
            for process in processes.iter_mut() {
                process.assert_alive();
            }
            assert!(
                Instant::now() < deadline,
                "only {total} of {n} gateway calls after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

// ---------------------------------------------------------------------------
// PostgreSQL and NATS
// ---------------------------------------------------------------------------

/// The admin URL when PostgreSQL answers; stale test databases are dropped on the way.
async fn postgres_admin() -> Option<String> {
    let admin_url = std::env::var("TEST_POSTGRES_ADMIN_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.into());
    let connected = tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(&admin_url)).await;
    let mut admin = match connected {
        Ok(Ok(admin)) => admin,
        Ok(Err(e)) => return unavailable("PostgreSQL", &e.to_string()),
        Err(_) => return unavailable("PostgreSQL", "connection timed out"),
    };
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'herald\\_pipe\\_%'")
            .fetch_all(&mut admin)
            .await
            .unwrap_or_default();
    for name in names {
        let created = name.split('_').nth(2).and_then(|t| t.parse::<u64>().ok());
        if created.is_some_and(|t| unix_now().saturating_sub(t) > STALE_AFTER.as_secs()) {
            let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(drop)).execute(&mut admin).await;
        }
    }
    let _ = admin.close().await;
    Some(admin_url)
}

/// A database of the test's own, dropped when the test ends.
struct PgDatabase {
    admin: String,
    name: String,
    url: String,
}

impl PgDatabase {
    async fn create(admin_url: &str) -> Self {
        let name = format!("herald_pipe_{}", unique());
        let mut admin = sqlx::PgConnection::connect(admin_url)
            .await
            .expect("PostgreSQL connects");
        let create = format!("CREATE DATABASE \"{name}\"");
        sqlx::raw_sql(sqlx::AssertSqlSafe(create))
            .execute(&mut admin)
            .await
            .expect("database created");
        let _ = admin.close().await;
        let base = admin_url.rsplit_once('/').map_or(admin_url, |(base, _)| base);
        Self {
            admin: admin_url.to_string(),
            url: format!("{base}/{name}"),
            name,
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop runs inside the test's runtime: do the async work on a thread of its own.
        let done = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
            let Ok(runtime) = runtime else { return };
            runtime.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(drop)).execute(&mut conn).await;
                    let _ = conn.close().await;
                }
            });
        });
        let _ = done.join();
    }
}

/// The shared NATS server's URL when it answers with JetStream.
async fn shared_nats() -> Option<String> {
    let url = std::env::var("TEST_NATS_URL").unwrap_or_else(|_| SHARED_NATS.to_string());
    let probe = async {
        let client = async_nats::connect(url.as_str()).await.map_err(|e| e.to_string())?;
        let reply = client
            .request("$JS.API.INFO", Vec::new().into())
            .await
            .map_err(|e| e.to_string())?;
        let info: Value = serde_json::from_slice(&reply.payload).map_err(|e| e.to_string())?;
        match info.get("error") {
            None => Ok(()),
            Some(error) => Err(format!("JetStream: {error}")),
        }
    };
    match tokio::time::timeout(Duration::from_secs(5), probe).await {
        Ok(Ok(())) => Some(url),
        Ok(Err(e)) => unavailable(&format!("NATS at {url}"), &e),
        Err(_) => unavailable(&format!("NATS at {url}"), "no answer in 5 s"),
    }
}

/// Stream and subject prefixes of the test's own; on the shared server its
/// streams are deleted at the end (`HT_<unix time>_…` is what the shared
/// harness sweeps after two hours, should this cleanup not run).
struct NatsBus {
    url: String,
    stream_prefix: String,
    subject_prefix: String,
    cleanup: bool,
}

impl NatsBus {
    fn new(url: String, cleanup: bool) -> Self {
        let run = unique();
        Self {
            url,
            stream_prefix: format!("HT_{run}"),
            subject_prefix: format!("ht{run}"),
            cleanup,
        }
    }
}

impl NatsBus {
    /// Events of `<entity>.<action>` stored on this run's events stream.
    async fn count_events(&self, kind: &str) -> Option<usize> {
        use futures::TryStreamExt;
        let work = async {
            let client = async_nats::connect(self.url.as_str()).await.ok()?;
            let jetstream = async_nats::jetstream::new(client);
            let stream = jetstream
                .get_stream(format!("{}_EVENTS", self.stream_prefix))
                .await
                .ok()?;
            let subjects = format!("{}.events.*.{kind}", self.subject_prefix);
            let counts: Vec<(String, usize)> = stream
                .info_with_subjects(subjects)
                .await
                .ok()?
                .try_collect()
                .await
                .ok()?;
            Some(counts.into_iter().map(|(_, n)| n).sum())
        };
        tokio::time::timeout(Duration::from_secs(10), work).await.ok().flatten()
    }
}

impl Drop for NatsBus {
    fn drop(&mut self) {
        if !self.cleanup {
            return;
        }
        let (url, prefix) = (self.url.clone(), self.stream_prefix.clone());
        let done = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
            let Ok(runtime) = runtime else { return };
            runtime.block_on(async {
                let work = async {
                    let client = async_nats::connect(url.as_str()).await.ok()?;
                    let jetstream = async_nats::jetstream::new(client);
                    for stream in ["JOBS", "RESULTS", "EVENTS"] {
                        let _ = jetstream.delete_stream(format!("{prefix}_{stream}")).await;
                    }
                    Some(())
                };
                let _ = tokio::time::timeout(Duration::from_secs(10), work).await;
            });
        });
        let _ = done.join();
    }
}

/// A nats-server of the test's own (never the shared one), with JetStream
/// storage in the scratch directory so a restart keeps the streams.
struct NatsServer {
    process: Proc,
    port: u16,
    dir: PathBuf,
    starts: u32,
}

impl NatsServer {
    async fn start(dir: &Path) -> Self {
        let port = free_port();
        let mut server = Self {
            process: Self::spawn(dir, port, 1),
            port,
            dir: dir.to_path_buf(),
            starts: 1,
        };
        server.wait_ready().await;
        server
    }

    fn spawn(dir: &Path, port: u16, start: u32) -> Proc {
        let mut command = Command::new(NATS_SERVER);
        command
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir.join("jetstream"));
        Proc::spawn(&format!("nats-{start}"), command, dir)
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts it again on the same port and storage.
    async fn restart(&mut self) {
        self.process.kill9();
        self.starts += 1;
        self.process = Self::spawn(&self.dir, self.port, self.starts);
        self.wait_ready().await;
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.process.log_text().contains("Server is ready") {
            self.process.assert_alive();
            assert!(Instant::now() < deadline, "nats-server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
