//! Hostile plugins built from `tests/fixtures/plugins`: each misbehaviour fails
//! its own call and leaves the host serving.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use herald::plugin::carrier::{CarrierPlugin, Encoding, Message};
use herald::plugin::http::PluginHttp;
use herald::plugin::template::TemplatePlugin;
use herald::plugin::{PluginError, PluginIdentity, PluginLimits, PluginRuntime, builtin};
use herald_tests::fixtures;

fn identity(name: &str) -> PluginIdentity {
    PluginIdentity {
        name: name.into(),
        settings: Default::default(),
    }
}

fn runtime() -> PluginRuntime {
    PluginRuntime::new(
        PluginLimits {
            call_timeout_ms: 200,
            memory_mb: 16,
            max_response_bytes: 4096,
            http_timeout_ms: 2_000,
            ..PluginLimits::default()
        },
        Some(&herald_tests::plugin_code_cache()),
    )
    .expect("runtime")
}

async fn template(runtime: &PluginRuntime, path: &str) -> TemplatePlugin {
    TemplatePlugin::load(runtime, identity(path), &std::fs::read(path).unwrap())
        .await
        .expect("loads")
}

/// The host still serves: the shipped template renders on the same runtime.
async fn still_serving(runtime: &PluginRuntime) {
    let good = TemplatePlugin::load(
        runtime,
        identity("default"),
        &builtin::resolve("builtin:default").unwrap(),
    )
    .await
    .unwrap();
    let rendered = good
        .render("Hi {{name}}", &[("name".into(), "Ada".into())])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rendered.body, "Hi Ada");
}

#[tokio::test]
async fn an_endless_loop_is_stopped_at_the_deadline() {
    let runtime = runtime();
    let spin = template(&runtime, fixtures::HOSTILE_LOOP).await;
    let started = Instant::now();
    let error = spin.render("x", &[]).await.unwrap_err();
    assert!(matches!(error, PluginError::Trap(_)), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "stopped near the 200 ms deadline: {:?}",
        started.elapsed()
    );
    assert!(spin.render("x", &[]).await.is_err(), "and again on the next call");
    still_serving(&runtime).await;
}

#[tokio::test]
async fn unbounded_allocation_fails_cleanly() {
    let runtime = runtime();
    let hog = template(&runtime, fixtures::HOSTILE_ALLOC).await;
    let error = hog.render("x", &[]).await.unwrap_err();
    assert!(matches!(error, PluginError::Trap(_)), "{error}");
    still_serving(&runtime).await;
}

#[tokio::test]
async fn a_panic_fails_the_call_with_a_backtrace() {
    let runtime = runtime();
    let boom = template(&runtime, fixtures::HOSTILE_PANIC).await;
    let PluginError::Trap(trap) = boom.render("x", &[]).await.unwrap_err() else {
        panic!("a panic is a trap");
    };
    assert!(
        trap.contains("guest backtrace") || trap.contains("unreachable"),
        "{trap}"
    );
    still_serving(&runtime).await;
}

#[tokio::test]
async fn a_component_for_an_unknown_wit_version_is_refused_at_load() {
    let runtime = runtime();
    let wasm = std::fs::read(fixtures::FUTURE_VERSION).unwrap();
    let Err(PluginError::Load { reason, .. }) = TemplatePlugin::load(&runtime, identity("future"), &wasm).await else {
        panic!("must be refused");
    };
    assert!(
        reason.contains("9.0.0") && reason.contains("0.1.0"),
        "names both versions: {reason}"
    );
    let carrier = CarrierPlugin::load(
        &runtime,
        identity("template-as-carrier"),
        http(&[], false),
        &builtin::resolve("builtin:default").unwrap(),
    )
    .await;
    assert!(carrier.is_err(), "a template plugin is not a carrier");
}

/// A loopback HTTP server that counts connections and answers `body_len` bytes.
async fn fake_server(body_len: usize) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let seen = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buffer = [0u8; 4096];
                let _ = socket.read(&mut buffer).await;
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {body_len}\r\nconnection: close\r\n\r\n");
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(&vec![b'x'; body_len]).await;
            });
        }
    });
    (format!("127.0.0.1:{}", address.port()), connections)
}

fn http(allowed: &[&str], insecure: bool) -> PluginHttp {
    let allowed: Vec<String> = allowed.iter().map(|h| h.to_string()).collect();
    PluginHttp::new(&allowed, insecure, &runtime().limits().clone()).unwrap()
}

fn message(body: String) -> Message {
    Message {
        id: "m-1".into(),
        to: "+15551230001".into(),
        from: String::new(),
        body,
        segments: 1,
        encoding: Encoding::Gsm7,
        metadata: vec![],
    }
}

#[tokio::test]
async fn fetches_stay_on_the_allow_list_and_under_the_size_cap() {
    let runtime = runtime();
    let wasm = std::fs::read(fixtures::FETCHER).unwrap();
    let (address, connections) = fake_server(100).await;

    let allowed = CarrierPlugin::load(&runtime, identity("fetcher"), http(&["127.0.0.1"], true), &wasm)
        .await
        .unwrap();
    let accepted = allowed
        .send(&message(format!("http://{address}/ok")))
        .await
        .0
        .unwrap()
        .unwrap();
    assert_eq!(accepted.carrier_message_id, "200:100");
    assert_eq!(connections.load(Ordering::SeqCst), 1);

    let denied = CarrierPlugin::load(&runtime, identity("fetcher"), http(&["api.example.com"], true), &wasm)
        .await
        .unwrap();
    let refused = denied
        .send(&message(format!("http://{address}/nope")))
        .await
        .0
        .unwrap()
        .unwrap_err();
    assert!(format!("{refused:?}").contains("Denied"), "{refused:?}");
    let https_only = CarrierPlugin::load(&runtime, identity("fetcher"), http(&["127.0.0.1"], false), &wasm)
        .await
        .unwrap();
    let refused = https_only
        .send(&message(format!("http://{address}/plain")))
        .await
        .0
        .unwrap()
        .unwrap_err();
    assert!(format!("{refused:?}").contains("Denied"), "{refused:?}");
    assert_eq!(connections.load(Ordering::SeqCst), 1, "refused fetches never connect");

    let (big, _) = fake_server(10_000).await;
    let too_large = allowed
        .send(&message(format!("http://{big}/big")))
        .await
        .0
        .unwrap()
        .unwrap_err();
    assert!(format!("{too_large:?}").contains("TooLarge"), "{too_large:?}");
}

#[tokio::test]
async fn a_plugin_that_keeps_trapping_is_tripped() {
    let runtime = runtime();
    let boom = template(&runtime, fixtures::HOSTILE_PANIC).await;
    for _ in 0..runtime.limits().trip_after_traps {
        assert!(matches!(boom.render("x", &[]).await, Err(PluginError::Trap(_))));
    }
    let refused = boom.render("x", &[]).await.unwrap_err();
    assert!(matches!(refused, PluginError::Tripped { .. }), "{refused}");
    still_serving(&runtime).await;
}
