//! The served OpenAPI document as standard tools read it: valid against the
//! official OpenAPI 3.1 schema (openapi-spec-validator), and complete enough
//! for openapi-python-client to generate a client that drives the README
//! walkthrough against a running server. The scripts are in tests/openapi/ and
//! run on `TEST_PYTHON` with tests/openapi/requirements.txt; without those
//! packages the tests are skipped with a notice, or fail under `CI=true`.

use std::path::PathBuf;
use std::process::Command;

use herald_tests::serde_json::{Value, json};
use herald_tests::{Backend, TestServer, python_with, window_open_now};

const REQUIREMENTS: &str = "tests/openapi/requirements.txt";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_document_is_valid_openapi_3_1() {
    let Some(python) = python_with("openapi_spec_validator", REQUIREMENTS) else {
        return;
    };
    let server = TestServer::start(Backend::Sqlite).await;
    let report = run(&python, "validate.py", vec![server.url("/api/v1/openapi.json")]).await;
    assert!(report.ends_with("0 errors\n"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_python_client_drives_the_walkthrough() {
    let Some(python) = python_with("openapi_python_client", REQUIREMENTS) else {
        return;
    };
    let server = TestServer::start(Backend::Sqlite).await;
    let user = server.new_user();
    let campaign: Value = json!({ "window": window_open_now() });
    let report = run(
        &python,
        "client_walkthrough.py",
        vec![server.base.clone(), user.token.clone(), campaign.to_string()],
    )
    .await;
    assert!(
        report.ends_with("the generated client drove the walkthrough\n"),
        "{report}"
    );
}

/// Runs a script of tests/openapi/ to its end and returns what it printed;
/// fails the test, showing its output, unless it exits 0.
async fn run(python: &str, script: &str, args: Vec<String>) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("openapi").join(script);
    let mut command = Command::new(python);
    command.arg(&path).args(&args);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("the script's runner")
        .unwrap_or_else(|e| panic!("{script} does not start: {e}"));
    let shown = format!(
        "{script}:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{shown}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}
