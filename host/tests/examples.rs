//! The example carriers of `sdk/examples/<language>/` (plugins in any language,
//! SPEC §5) held to the Rust reference, `builtin:http` (`plugins/carrier-http`),
//! through the real `herald` binary. Every carrier, the reference included, gets
//! the same checks: `herald plugin inspect` loads it, `herald plugin send`
//! prints the same outcome as the reference for each kind of gateway answer,
//! and a campaign goes out through it end to end.
//!
//! An example is built once per test process by its `build.sh OUT.wasm` (the
//! same interface in every language; exit status 3 when its toolchain cannot
//! be installed). A language whose `build.sh` is missing or whose toolchain is
//! unavailable is skipped with a notice, except under `CI=true`, where its
//! tests fail.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use herald::config::CarrierConfig;
use herald_tests::gateway::FakeGateway;
use herald_tests::serde_json::{self, json};
use herald_tests::{Client, User, eventually, in_ci, phones, window_open_now};
use tokio::runtime::Runtime;

use common::{Run, Sandbox, free_port};

/// How long `herald serve` may take to start: unless an earlier test left it
/// in the code cache, it compiles the component first, minutes for an
/// engine-sized one (a JavaScript or Python runtime) in a debug build on a
/// busy machine.
const START_UP: Duration = Duration::from_secs(600);

/// The `plugin` of the Rust reference carrier.
const REFERENCE: &str = "builtin:http";

/// A carrier under test.
#[derive(Clone, Copy, Debug)]
enum Carrier {
    /// The Rust reference itself.
    Reference,
    /// The example in `sdk/examples/<language>/`.
    Example(&'static str),
}

impl Carrier {
    /// The `plugin` of its `[[carriers]]` entry; `None`, after a notice, when
    /// it cannot be built here (a panic under `CI=true`).
    fn plugin(self) -> Option<String> {
        match self {
            Carrier::Reference => Some(REFERENCE.to_string()),
            Carrier::Example(language) => built(language).map(|wasm| wasm.display().to_string()),
        }
    }
}

/// The example's component, built on first use in this test process.
fn built(language: &'static str) -> Option<PathBuf> {
    static BUILT: Mutex<BTreeMap<&str, Option<PathBuf>>> = Mutex::new(BTreeMap::new());
    // Held while building: the other tests of the language wait for this build.
    let mut built = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
    built
        .entry(language)
        .or_insert_with(|| build(language).inspect(|wasm| compile_once(wasm)))
        .clone()
}

/// Compiles the component into the shared code cache with one `plugin inspect`
/// while the other tests of the language wait, so their `herald` runs map it
/// instead of all compiling it at once.
fn compile_once(wasm: &Path) {
    let sandbox = Sandbox::new();
    let config = write_config(&sandbox, "warm", &[]);
    let started = Instant::now();
    let run = sandbox
        .run(
            &["--config", &config, "plugin", "inspect", &wasm.display().to_string()],
            &[],
        )
        .ok();
    let code = run.stdout.lines().find(|line| line.starts_with("code:")).unwrap_or("");
    eprintln!("{} {code} ({:.0?} in all)", wasm.display(), started.elapsed());
}

fn build(language: &str) -> Option<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ is in the workspace");
    let script = workspace.join("sdk/examples").join(language).join("build.sh");
    if !script.exists() {
        return unavailable(language, &format!("{} does not exist", script.display()));
    }
    let wasm = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("examples")
        .join(format!("{language}.wasm"));
    let started = Instant::now();
    let output = Command::new("bash")
        .arg(&script)
        .arg(&wasm)
        .output()
        .expect("bash runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    match output.status.code() {
        Some(0) => {
            let built = String::from_utf8_lossy(&output.stdout);
            eprintln!(
                "built the {language} example in {:.0?}: {}",
                started.elapsed(),
                built.trim()
            );
            Some(wasm)
        }
        Some(3) => unavailable(language, stderr.trim()),
        _ => panic!("{} failed ({}):\n{stderr}", script.display(), output.status),
    }
}

fn unavailable(language: &str, reason: &str) -> Option<PathBuf> {
    assert!(
        !in_ci(),
        "the {language} example cannot be built under CI=true: {reason}"
    );
    eprintln!("skipping the {language} example carrier: {reason}");
    None
}

/// A TOML basic string: JSON's escapes are TOML's.
fn toml_string(text: &str) -> String {
    serde_json::to_string(text).expect("a string serializes")
}

/// Writes a configuration file with `carriers` into the sandbox; returns its path.
fn write_config(sandbox: &Sandbox, name: &str, carriers: &[CarrierConfig]) -> String {
    // One code cache for every test: a component is compiled once, not by
    // every `herald` run (and kept across test runs).
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("examples/plugin-cache");
    let mut text = format!("[plugins]\ncache_dir = {}\n", toml_string(&cache.display().to_string()));
    let quoted = |items: &[String]| {
        items
            .iter()
            .map(|item| toml_string(item))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for carrier in carriers {
        text.push_str(&format!(
            "\n[[carriers]]\nname = {}\nplugin = {}\ndefault = {}\nallowed_hosts = [{}]\n\
             allow_insecure_http = {}\nmax_per_second = {}\nmax_concurrency = {}\nidempotent = {}\n\
             [carriers.settings]\n",
            toml_string(&carrier.name),
            toml_string(&carrier.plugin),
            carrier.default,
            quoted(&carrier.allowed_hosts),
            carrier.allow_insecure_http,
            carrier.max_per_second,
            carrier.max_concurrency,
            carrier.idempotent,
        ));
        for (key, value) in &carrier.settings {
            text.push_str(&format!("{} = {}\n", toml_string(key), toml_string(value)));
        }
    }
    let path = sandbox.path().join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("config written");
    path.display().to_string()
}

/// What `herald plugin send` printed as the plugin's result, the message id
/// (a new one each run) replaced by `<id>`.
fn outcome(run: &Run) -> String {
    let id = run
        .stdout
        .lines()
        .find_map(|line| line.strip_prefix("message "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no message line\nstdout: {}\nstderr: {}", run.stdout, run.stderr));
    let line = if run.success {
        run.stdout.lines().find(|line| line.starts_with("accepted:"))
    } else {
        run.stderr
            .lines()
            .find_map(|line| line.find("carrier refused:").map(|at| &line[at..]))
    };
    line.unwrap_or_else(|| panic!("no outcome\nstdout: {}\nstderr: {}", run.stdout, run.stderr))
        .replace(id, "<id>")
}

fn inspect_says_it_loads(carrier: Carrier) {
    let Some(plugin) = carrier.plugin() else { return };
    let sandbox = Sandbox::new();
    let config = write_config(&sandbox, "herald", &[]);
    let run = sandbox
        .run(&["--config", &config, "plugin", "inspect", &plugin], &[])
        .ok();
    eprintln!("{}", run.stdout);
    for expected in ["world:    carrier-plugin", "herald:plugin@0.1.0", "loadable: yes"] {
        assert!(
            run.stdout.contains(expected),
            "missing {expected:?} in:\n{}",
            run.stdout
        );
    }
    // Toolchains may export more (componentize-py adds `exports`); the carrier must be among them.
    let exports = run.stdout.lines().find_map(|line| line.strip_prefix("exports:"));
    assert!(
        exports.is_some_and(|exports| exports
            .split(", ")
            .any(|export| export.trim() == "herald:plugin/carrier@0.1.0")),
        "no carrier export in:\n{}",
        run.stdout
    );
}

/// Gateway answers `(status, Retry-After seconds)` and what the outcome
/// `herald plugin send` prints for each contains, the message id as `<id>`.
const ANSWERS: [(u16, Option<u64>, &str); 4] = [
    (200, None, r#"accepted: carrier message id "gw-<id>""#),
    (429, Some(2), "RateLimited(2000)"),
    (503, None, r#"Retryable("gateway HTTP 503: "#),
    (400, None, r#"Permanent("gateway refused (HTTP 400): "#),
];

fn plugin_send_matches_the_reference(carrier: Carrier) {
    let Some(plugin) = carrier.plugin() else { return };
    // Its worker threads serve the fake gateways while this thread waits for `herald`.
    let runtime = Runtime::new().expect("tokio runtime");
    let sandbox = Sandbox::new();
    for (status, retry_after, expected) in ANSWERS {
        let gateway = runtime.block_on(FakeGateway::launch(
            Arc::new(move |_| (status, retry_after)),
            Duration::ZERO,
            Some(json!({ "error": "no such number" })),
        ));
        let send = |name: &str, plugin: &str| {
            let entry = CarrierConfig {
                plugin: plugin.to_string(),
                ..gateway.carrier(name)
            };
            let config = write_config(&sandbox, name, &[entry]);
            let args = [
                "--config",
                &config,
                "plugin",
                "send",
                name,
                "--to",
                "+12125550100",
                "--body",
                "Hi",
            ];
            outcome(&sandbox.run(&args, &[]))
        };
        let reference = send("reference", REFERENCE);
        assert!(reference.contains(expected), "HTTP {status}: {reference}");
        assert_eq!(send("example", &plugin), reference, "HTTP {status}");
        assert_eq!(gateway.total_calls(), 2, "HTTP {status}: one request per send");
    }
}

fn a_campaign_goes_out(carrier: Carrier) {
    const CONTACTS: usize = 50;
    let Some(plugin) = carrier.plugin() else { return };
    let runtime = Runtime::new().expect("tokio runtime");
    let gateway = runtime.block_on(FakeGateway::start());
    let sandbox = Sandbox::new();
    let entry = CarrierConfig {
        plugin,
        ..gateway.carrier("example")
    };
    let config = write_config(&sandbox, "herald", &[entry]);
    let port = free_port();
    let mut server = sandbox.serve_with(port, &["--config", &config]);
    server.wait_ready_within(START_UP);
    // As an operator would: a token for the first user from `herald token`.
    let first_user = std::fs::read_to_string(sandbox.data_dir().join("first_user")).expect("first_user written");
    let first_user = first_user.trim();
    let token = sandbox
        .run(&["--config", &config, "token", "--sub", first_user], &[])
        .ok()
        .stdout;
    let user = User {
        id: first_user.parse().expect("first_user is a UUID"),
        token: token.trim().to_string(),
    };
    let client = Client::new(format!("http://127.0.0.1:{port}"));
    let started = Instant::now();
    runtime.block_on(async {
        let mut fields = window_open_now();
        fields["name"] = json!(format!("{carrier:?} example"));
        let campaign = client.active_campaign(&user, fields, &phones(CONTACTS, 0)).await;
        client.send_campaign(&user, &campaign).await;
        eventually(
            &format!("{CONTACTS} messages sent"),
            Duration::from_secs(120),
            || async {
                let stats = client.stats(&user, &campaign).await;
                (stats["messages_sent"] == CONTACTS).then_some(())
            },
        )
        .await;
    });
    eprintln!("{carrier:?}: {CONTACTS} messages sent in {:.1?}", started.elapsed());
    assert_eq!(gateway.distinct_ids(), CONTACTS, "one message id per contact");
    server.terminate();
}

/// The same tests for every carrier, in a module named after it
/// (`cargo test --test examples js::` runs the JavaScript example's).
macro_rules! carrier_tests {
    ($($module:ident => $carrier:expr;)*) => {$(
        mod $module {
            use super::*;

            #[test]
            fn plugin_inspect_says_it_loads() {
                inspect_says_it_loads($carrier);
            }

            #[test]
            fn plugin_send_prints_what_the_rust_carrier_prints() {
                plugin_send_matches_the_reference($carrier);
            }

            #[test]
            fn a_campaign_goes_out_through_it() {
                a_campaign_goes_out($carrier);
            }
        }
    )*};
}

carrier_tests! {
    builtin_http => Carrier::Reference;
    js => Carrier::Example("js");
    python => Carrier::Example("python");
}
