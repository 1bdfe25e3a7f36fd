//! Process-level reliability of the sending pipeline (SPEC §1, §9): the real
//! `herald` binary is killed with SIGKILL mid-campaign (the host, a dispatcher)
//! or loses its NATS server, and every message must still end final exactly once
//! in the database, the fake carrier having seen each message id at least once.
//!
//! Each test runs its own processes against a fake gateway living in the test
//! process (the `builtin:http` carrier plugin posts `{"id": <message id>, ...}`
//! to `/send/<process name>`, so the gateway knows which process sent what).
//! PostgreSQL, NATS and `nats-server` are found and isolated per run as for
//! every integration test (`herald_tests::services`: a schema and stream
//! prefixes of the test's own; skipped with a notice when unreachable, except
//! under `CI=true`, where they fail).
//!
//! On failure the tail of every process's log is printed and the scratch
//! directory is kept (always with `PIPELINE_KEEP=1`).

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald::config::BusConfig;
use herald_tests::gateway::FakeGateway;
use herald_tests::services::{NatsServer, free_port, nats_url, own_bus, postgres_schema, query_rows};
use herald_tests::{Client, SECRET, User, eventually, phones, poll_until, window_open_now};
use serde_json::json;
use uuid::Uuid;

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
        max_per_second: 2000,
        alone: false,
    };
    let stack = Stack::embedded("embedded", tuning).await;
    let total = 10 * PER_CAMPAIGN;

    let mut first = stack.herald("herald-1", "all");
    stack.wait_ready(&mut first).await;
    stack.note("herald-1 ready");
    let campaigns = stack.campaigns(10, PER_CAMPAIGN).await;
    stack.send_all(&campaigns).await;
    stack.note("10 campaigns of 1,000 sent");

    stack
        .wait_calls(total / 4, Duration::from_secs(60), &mut [&mut first])
        .await;
    first.kill9();
    let (calls, ids) = (stack.gateway.total_calls(), stack.gateway.distinct_ids());
    assert!(ids < total, "killed too late: {ids} of {total} already sent");
    stack.note(&format!(
        "killed herald-1 after {calls} gateway calls ({ids} message ids)"
    ));

    let mut second = stack.herald("herald-2", "all");
    stack.wait_ready(&mut second).await;
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
    stack.wait_ready(&mut api).await;
    wait_dispatcher(&mut first).await;
    stack.note("api-1 and dispatcher-1 ready");
    let campaigns = stack.campaigns(2, PER_CAMPAIGN).await;
    stack.send_all(&campaigns).await;
    stack.note("2 campaigns of 1,000 sent");

    let waiting = Duration::from_secs(60);
    stack.wait_calls(total / 4, waiting, &mut [&mut api, &mut first]).await;
    first.kill9();
    let (calls, ids) = (stack.gateway.total_calls(), stack.gateway.distinct_ids());
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
    stack.wait_ready(&mut first).await;
    wait_dispatcher(&mut dispatcher).await;
    stack.note("api-1 and dispatcher-1 ready");
    let campaigns = stack.campaigns(2, PER_CAMPAIGN).await;
    stack.send_all(&campaigns).await;
    stack.note("2 campaigns of 1,000 sent");

    let waiting = Duration::from_secs(60);
    stack
        .wait_calls(total / 4, waiting, &mut [&mut first, &mut dispatcher])
        .await;
    first.kill9();
    let (calls, ids) = (stack.gateway.total_calls(), stack.gateway.distinct_ids());
    assert!(ids < total, "killed too late: {ids} of {total} already sent");
    stack.note(&format!("killed api-1 after {calls} gateway calls ({ids} message ids)"));
    // Down for a moment: the dispatcher finishes what it holds, results pile up on the bus.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut second = stack.herald("api-2", "api");
    stack.wait_ready(&mut second).await;
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
    stack.wait_ready(&mut api).await;
    wait_dispatcher(&mut one).await;
    wait_dispatcher(&mut two).await;
    stack.note("api-1, dispatcher-1 and dispatcher-2 ready");
    let campaigns = stack.campaigns(2, PER_CAMPAIGN).await;
    stack.send_all(&campaigns).await;
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

/// PostgreSQL + NATS: three dispatchers send one campaign through a carrier with a
/// low `max_per_second`; the limit holds for all of them together (SPEC §8),
/// measured where a carrier counts it: the arrival times at the gateway. Each
/// message is one SMS segment, so calls are segments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_dispatchers_together_keep_the_carriers_max_per_second() {
    const RATE: usize = 20;
    // Slots of the shared budget are 1/RATE apart across processes (50 ms), each
    // used by one call no earlier than its time (docs/delivery.md). A 1 s window
    // can hold one slot more than RATE at its edges, and at most one lease per
    // dispatcher (here one slot) can go out late into it, bunching with the next
    // slots: its claim's round trip, or a stall of this busy two-core machine
    // (a dispatcher's first call also sets up its plugin). A limit per process
    // shows 3 × RATE and more (before the shared budget this test saw 119).
    const TOLERANCE: usize = 1 + 3;
    const CONTACTS: usize = 300;
    let tuning = Tuning {
        // Jobs wait their turn in the dispatchers: a long lease keeps them fresh.
        lease_secs: 60,
        // Two seconds of work in flight: enough to keep three dispatchers busy,
        // few enough that each gets a share.
        max_in_flight: 40,
        max_per_second: RATE as u32,
        alone: true,
        ..production_tuning()
    };
    let Some(stack) = Stack::on_postgres_and_nats("three-dispatchers-rate", tuning).await else {
        return;
    };
    let mut api = stack.herald("api-1", "api");
    let names = ["dispatcher-1", "dispatcher-2", "dispatcher-3"];
    let mut dispatchers: Vec<Proc> = names.iter().map(|name| stack.herald(name, "dispatcher")).collect();
    stack.wait_ready(&mut api).await;
    for dispatcher in &mut dispatchers {
        wait_dispatcher(dispatcher).await;
    }
    stack.note("api-1 and three dispatchers ready");
    let campaigns = stack.campaigns(1, CONTACTS).await;
    stack.send_all(&campaigns).await;
    stack.note(&format!("a campaign of {CONTACTS} sent at {RATE}/s"));
    let [one, two, three] = &mut dispatchers[..] else {
        unreachable!("three dispatchers")
    };
    let processes = &mut [&mut api, one, two, three];
    stack.wait_settled(&campaigns, Duration::from_secs(90), processes).await;
    stack.verify(CONTACTS, 0).await;

    let arrivals = stack.gateway.arrivals();
    let mut times: Vec<Instant> = arrivals.iter().map(|(at, _)| *at).collect();
    times.sort();
    let busiest = busiest_second(&times);
    let span = times[times.len() - 1].duration_since(times[0]);
    let overall = (times.len() - 1) as f64 / span.as_secs_f64();
    let by_sender = stack.gateway.by_sender();
    stack.note(&format!(
        "{} calls in {span:.2?}: {overall:.1}/s overall, at most {busiest} in a 1 s window (limit {RATE}); by process {by_sender:?}",
        times.len()
    ));
    assert!(
        busiest <= RATE + TOLERANCE,
        "{busiest} calls in one second: the carrier's limit is {RATE}/s for all dispatchers together"
    );
    // 20.0/s on a quiet machine; as low as 16.6/s seen when other work stalled
    // the processes.
    assert!(
        overall >= 0.75 * RATE as f64,
        "{overall:.1} calls/s: the dispatchers together should use most of the {RATE}/s"
    );
    for name in names {
        assert!(
            by_sender.get(name).is_some_and(|&n| n >= CONTACTS / 10),
            "{name} did little of the work: {by_sender:?}"
        );
    }
}

/// PostgreSQL + a NATS server of the test's own, killed mid-campaign and started
/// again on the same port and storage: the campaign completes when it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restarted_mid_campaign_and_the_campaign_completes() {
    let Some((stack, mut nats)) = Stack::on_postgres_and_own_nats("nats-restart", production_tuning()).await else {
        return;
    };
    let total = 2 * PER_CAMPAIGN;

    let mut herald = stack.herald("herald-1", "all");
    stack.wait_ready(&mut herald).await;
    stack.note("nats-1 and herald-1 ready");
    let campaigns = stack.campaigns(2, PER_CAMPAIGN).await;
    stack.send_all(&campaigns).await;
    stack.note("2 campaigns of 1,000 sent");

    stack
        .wait_calls(total / 4, Duration::from_secs(60), &mut [&mut herald])
        .await;
    nats.kill();
    let (calls, ids) = (stack.gateway.total_calls(), stack.gateway.distinct_ids());
    assert!(ids < total, "NATS stopped too late: {ids} of {total} already sent");
    stack.note(&format!(
        "killed nats-1 after {calls} gateway calls ({ids} message ids)"
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    nats.restart().await;
    stack.note(&format!(
        "nats-2 ready; {} gateway calls so far",
        stack.gateway.total_calls()
    ));
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
    /// The carrier's `max_per_second`: high enough not to limit, except where a
    /// test is about it.
    max_per_second: u32,
    /// Whether the run measures timing, and so runs alone (no other run of
    /// this binary loading the machine at the same time).
    alone: bool,
}

/// Contacts of the campaign killed while it queues: far more than the send
/// call queues itself, so most are queued in the background.
const QUEUEING: usize = 40_000;

/// Embedded defaults: the process is killed right after a big send answered,
/// while the rest of its contacts are being queued in the background; after
/// a restart every contact has exactly one message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_host_killed_while_queueing_resumes_with_one_message_per_contact() {
    let stack = Stack::embedded("queueing-kill", production_tuning()).await;
    killed_while_queueing(&stack, "all").await;
}

/// The same on PostgreSQL + NATS, killing the api process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_host_killed_while_queueing_resumes_with_one_message_per_contact() {
    let Some(stack) = Stack::on_postgres_and_nats("queueing-kill-pg", production_tuning()).await else {
        return;
    };
    killed_while_queueing(&stack, "api").await;
}

async fn killed_while_queueing(stack: &Stack, role: &str) {
    let mut first = stack.herald("api-1", role);
    stack.wait_ready(&mut first).await;
    // Local noon in the campaign's zone, its window 06:00–07:00: closed, so
    // the test sees queueing alone and nothing is handed to the gateway.
    let mut body = window_open_now();
    body["send_window_end"] = json!("07:00");
    let numbers: Vec<String> = (0..QUEUEING).map(|i| format!("+1555{i:07}")).collect();
    let campaign = stack.api.active_campaign(&stack.user, body, &numbers).await;
    stack.note(&format!("campaign of {QUEUEING} ready"));
    let accepted = stack.api.send_campaign(&stack.user, &campaign).await;
    first.kill9();
    let queued_at_kill = stack.message_count().await;
    stack.note(&format!(
        "killed api-1 after the send answered {accepted}: {queued_at_kill} messages queued"
    ));
    assert!(
        queued_at_kill < QUEUEING as i64,
        "killed too late: the background had queued every contact"
    );

    let mut second = stack.herald("api-2", role);
    stack.wait_ready(&mut second).await;
    let task = format!("/api/v1/tasks/{}", accepted["task_id"].as_str().expect("task id"));
    let report = eventually("the task queued to its end", Duration::from_secs(120), || {
        second.assert_alive();
        async {
            let report = stack.api.get(&task, &stack.user).await.expect(200).body;
            (report["status"] != "queuing").then_some(report)
        }
    })
    .await;
    stack.note(&format!("after the restart: {report}"));
    assert_eq!(report["queued"], QUEUEING, "{report}");
    let (messages, contacts): (i64, i64) = query_rows(
        &stack.database_url(),
        "SELECT COUNT(*), COUNT(DISTINCT contact_id) FROM messages",
    )
    .await
    .remove(0);
    assert_eq!(
        (messages, contacts),
        (QUEUEING as i64, QUEUEING as i64),
        "one message per contact"
    );
    second.terminate(Duration::from_secs(15));
    stack.verify_counters();
}

/// PostgreSQL + NATS runs: 8 calls at once of ≥ 20 ms each, at most 400/s, so
/// 2,000 messages take about five seconds or more.
fn production_tuning() -> Tuning {
    Tuning {
        lease_secs: 5,
        max_in_flight: 200,
        max_concurrency: 8,
        gateway_delay: Duration::from_millis(20),
        max_per_second: 2000,
        alone: false,
    }
}

/// A campaign created for a run, and how many messages it sends.
struct Campaign {
    id: String,
    size: usize,
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

/// Everything one test runs against; herald processes are spawned from it.
struct Stack {
    /// Kept (not deleted) when the test fails, for its logs.
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    label: String,
    gateway: FakeGateway,
    /// `None`: SQLite in the data directory.
    postgres_url: Option<String>,
    bus: Option<BusConfig>,
    api_port: u16,
    tuning: Tuning,
    api: Client,
    user: User,
    started: Instant,
    /// This run's turn on the machine: shared with other runs, or alone.
    _turn: Turn,
}

/// Runs that measure timing take the machine alone (from this test binary's
/// other runs, which would load it); the others share it.
static MACHINE: std::sync::RwLock<()> = std::sync::RwLock::new(());

#[allow(dead_code)] // held for its lifetime only
enum Turn {
    Shared(std::sync::RwLockReadGuard<'static, ()>),
    Alone(std::sync::RwLockWriteGuard<'static, ()>),
}

impl Turn {
    fn take(alone: bool) -> Self {
        // A run that failed holding its turn does not fail the others.
        if alone {
            Self::Alone(MACHINE.write().unwrap_or_else(|e| e.into_inner()))
        } else {
            Self::Shared(MACHINE.read().unwrap_or_else(|e| e.into_inner()))
        }
    }
}

impl Stack {
    /// The embedded defaults: SQLite, in-process transport.
    async fn embedded(label: &str, tuning: Tuning) -> Self {
        Self::new(tempfile::tempdir().expect("temp dir"), label, None, None, tuning).await
    }

    /// A schema of its own in this run's PostgreSQL database and stream prefixes
    /// of its own on the shared NATS server; `None` (after a notice) when either
    /// is unusable outside CI.
    async fn on_postgres_and_nats(label: &str, tuning: Tuning) -> Option<Self> {
        let postgres = postgres_schema().await?;
        let bus = own_bus(nats_url().await?);
        let dir = tempfile::tempdir().expect("temp dir");
        Some(Self::new(dir, label, Some(postgres), Some(bus), tuning).await)
    }

    /// As [`Stack::on_postgres_and_nats`], on a NATS server of the test's own
    /// (storage and log in the scratch directory) that the test can kill.
    async fn on_postgres_and_own_nats(label: &str, tuning: Tuning) -> Option<(Self, NatsServer)> {
        let postgres = postgres_schema().await?;
        let dir = tempfile::tempdir().expect("temp dir");
        let nats = NatsServer::start_in(dir.path()).await?;
        let bus = own_bus(nats.url());
        Some((Self::new(dir, label, Some(postgres), Some(bus), tuning).await, nats))
    }

    async fn new(
        dir: tempfile::TempDir,
        label: &str,
        postgres_url: Option<String>,
        bus: Option<BusConfig>,
        tuning: Tuning,
    ) -> Self {
        let turn = Turn::take(tuning.alone);
        let path = dir.path().to_path_buf();
        let accept_all = Arc::new(|_| (200, None));
        let gateway = FakeGateway::start_scripted(accept_all, tuning.gateway_delay).await;
        let api_port = free_port();
        let database = postgres_url.as_deref().unwrap_or("SQLite");
        let streams = bus.as_ref().map_or("in process", |bus| bus.stream_prefix.as_str());
        eprintln!("[{label}] {database}, streams {streams}, scratch {}", path.display());
        Self {
            dir: Some(dir),
            path,
            label: label.to_string(),
            gateway,
            postgres_url,
            bus,
            api_port,
            tuning,
            api: Client::new(format!("http://127.0.0.1:{api_port}")),
            user: User::new(SECRET),
            started: Instant::now(),
            _turn: turn,
        }
    }

    /// Logs a step with the time since the stack was set up.
    fn note(&self, what: &str) {
        eprintln!("[{} +{:.1?}] {what}", self.label, self.started.elapsed());
    }

    fn data_dir(&self) -> PathBuf {
        self.path.join("data")
    }

    fn database_url(&self) -> String {
        match &self.postgres_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir().join("herald.db").display()),
        }
    }

    /// Writes the configuration of process `name`: its carrier posts to
    /// `/send/<name>` on the gateway, so calls can be told apart by sender.
    fn config_file(&self, name: &str) -> PathBuf {
        let Tuning {
            max_in_flight,
            max_concurrency,
            max_per_second,
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
max_per_second = {max_per_second}
max_concurrency = {max_concurrency}

[carriers.settings]
url = "{url}/{name}"
"#,
            data = self.data_dir().display().to_string(),
            url = self.gateway.url,
        );
        let file = self.path.join(format!("{name}.toml"));
        std::fs::write(&file, text).expect("config written");
        file
    }

    /// Starts `herald serve --role <role>` as process `name`. The database URL is
    /// given to the api role only: a dispatcher must work without it.
    fn herald(&self, name: &str, role: &str) -> Proc {
        let mut command = self.command(name, &["serve", "--role", role]);
        command
            .env("NO_COLOR", "1")
            .env("HERALD_SERVER__BIND", format!("127.0.0.1:{}", self.api_port))
            .env("HERALD_DISPATCH__LEASE_SECS", self.tuning.lease_secs.to_string());
        if role != "dispatcher" {
            command.env("HERALD_DATABASE__URL", self.database_url());
        }
        if let Some(bus) = &self.bus {
            command
                .env("HERALD_BUS__NATS_URL", bus.nats_url.as_deref().unwrap_or_default())
                .env("HERALD_BUS__STREAM_PREFIX", &bus.stream_prefix)
                .env("HERALD_BUS__SUBJECT_PREFIX", &bus.subject_prefix);
        }
        Proc::spawn(name, command, &self.path)
    }

    /// `herald <args> --config <name's file>`, in the scratch directory, with
    /// none of this process's `HERALD_*` settings (figment would read them).
    fn command(&self, name: &str, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
        command
            .args(args)
            .arg("--config")
            .arg(self.config_file(name))
            .current_dir(&self.path)
            .env_remove("RUST_LOG");
        for (var, _) in std::env::vars_os() {
            if var.to_string_lossy().starts_with("HERALD_") {
                command.env_remove(var);
            }
        }
        command
    }

    /// Waits until every campaign has all its messages final; on timeout, fails
    /// showing where the unfinished ones are.
    async fn wait_settled(&self, campaigns: &[Campaign], timeout: Duration, processes: &mut [&mut Proc]) {
        let all_final = |progress: &[(u64, u64)]| {
            progress
                .iter()
                .zip(campaigns)
                .all(|(&(done, pending), campaign)| done == campaign.size as u64 && pending == 0)
        };
        let settled = poll_until(Duration::from_millis(250), timeout, || {
            processes.iter_mut().for_each(|process| process.assert_alive());
            async { self.progress(campaigns).await.filter(|p| all_final(p)) }
        });
        if settled.await.is_some() {
            return self.note("settled");
        }
        let progress = self.progress(campaigns).await;
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
            "campaigns not settled after {timeout:?}: (final, pending) per campaign {progress:?}; messages by status {by_status:?}; \
             unfinished by (status, hand_offs, seen by the gateway): {stuck:?}"
        );
    }

    /// Waits for `n` gateway calls in all (mid-campaign), failing early if one of
    /// `processes` dies.
    async fn wait_calls(&self, n: usize, timeout: Duration, processes: &mut [&mut Proc]) {
        eventually(&format!("{n} gateway calls"), timeout, || {
            processes.iter_mut().for_each(|process| process.assert_alive());
            let total = self.gateway.total_calls();
            async move { (total >= n).then_some(()) }
        })
        .await;
    }

    /// Waits until `/readyz` answers 200 (database and bus reachable).
    async fn wait_ready(&self, process: &mut Proc) {
        let what = format!("{} to be ready", process.name);
        eventually(&what, STARTUP, || {
            process.assert_alive();
            async {
                let ready = self
                    .api
                    .try_send(self.api.request(reqwest::Method::GET, "/readyz", None));
                ready.await.filter(|reply| reply.status == 200).map(drop)
            }
        })
        .await;
    }

    /// `count` active campaigns of `contacts` contacts each, sending now.
    async fn campaigns(&self, count: usize, contacts: usize) -> Vec<Campaign> {
        let mut campaigns = Vec::with_capacity(count);
        for c in 0..count {
            let mut body = window_open_now();
            body["name"] = json!(format!("Pipeline {c}"));
            body["message_template"] = json!(format!("Hi {{{{name}}}}, this is campaign {c}"));
            body["daily_limit"] = json!(PER_CAMPAIGN);
            // Distinct numbers across campaigns.
            let phones = phones(contacts, c * contacts);
            let id = self.api.active_campaign(&self.user, body, &phones).await;
            campaigns.push(Campaign { id, size: contacts });
        }
        campaigns
    }

    async fn send_all(&self, campaigns: &[Campaign]) {
        for campaign in campaigns {
            let accepted = self.api.send_campaign(&self.user, &campaign.id).await;
            assert_eq!(accepted["queued"], campaign.size, "{accepted}");
        }
    }

    /// `(final, pending)` of each campaign, or `None` while the API does not answer.
    async fn progress(&self, campaigns: &[Campaign]) -> Option<Vec<(u64, u64)>> {
        let mut out = Vec::with_capacity(campaigns.len());
        for campaign in campaigns {
            let path = format!("/api/v1/campaigns/{}/stats", campaign.id);
            let request = self.api.request(reqwest::Method::GET, &path, Some(&self.user));
            let stats = self
                .api
                .try_send(request)
                .await
                .filter(|reply| reply.status == 200)?
                .body;
            let done = stats["messages_sent"].as_u64()? + stats["messages_failed"].as_u64()?;
            out.push((done, stats["messages_pending"].as_u64()?));
        }
        Some(out)
    }

    async fn message_count(&self) -> i64 {
        let (n,): (i64,) = query_rows(&self.database_url(), "SELECT COUNT(*) FROM messages")
            .await
            .remove(0);
        n
    }

    /// Every message row.
    async fn messages(&self) -> Vec<Row> {
        query_rows(
            &self.database_url(),
            "SELECT id, status, hand_offs, attempts FROM messages",
        )
        .await
    }

    /// `herald verify`: the counters stats, tasks and /metrics read equal a
    /// recount of the messages, whatever the kills interrupted. (On SQLite the
    /// serving process must be stopped first: it owns the file.)
    fn verify_counters(&self) {
        let output = self
            .command("verify", &["verify"])
            .env("HERALD_DATABASE__URL", self.database_url())
            .output()
            .expect("herald verify runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        self.note(&format!("herald verify: {}", stdout.trim()));
        assert!(
            output.status.success() && stdout.contains("counters match the messages"),
            "counters drifted: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
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
        self.verify_counters();
        if let Some(bus) = &self.bus {
            // SPEC §6: one `message.sent` event per message on the events stream,
            // however the results reached the database. Events of results a killed
            // api process had committed but not announced come when JetStream
            // redelivers those results (its 30 s ack wait), so wait past that.
            let on_the_stream = || async { count_events(bus, "message.sent").await.filter(|&n| n == expected) };
            poll_until(Duration::from_millis(500), Duration::from_secs(60), on_the_stream).await;
            let events = count_events(bus, "message.sent").await;
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
    let what = format!("{} to run", process.name);
    eventually(&what, STARTUP, || {
        process.assert_alive();
        let running = process.log_text().contains("dispatcher running");
        async move { running.then_some(()) }
    })
    .await;
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

/// The most of `times` (in order) in any window of one second, `[t, t + 1 s)`.
fn busiest_second(times: &[Instant]) -> usize {
    let mut start = 0;
    let mut most = 0;
    for (end, at) in times.iter().enumerate() {
        while at.duration_since(times[start]) >= Duration::from_secs(1) {
            start += 1;
        }
        most = most.max(end + 1 - start);
    }
    most
}

/// Events of `<entity>.<action>` stored on `bus`'s events stream.
async fn count_events(bus: &BusConfig, kind: &str) -> Option<usize> {
    use futures::TryStreamExt;
    let work = async {
        let client = async_nats::connect(bus.nats_url.as_deref()?).await.ok()?;
        let jetstream = async_nats::jetstream::new(client);
        let stream = jetstream
            .get_stream(format!("{}_EVENTS", bus.stream_prefix))
            .await
            .ok()?;
        let subjects = format!("{}.events.*.{kind}", bus.subject_prefix);
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
