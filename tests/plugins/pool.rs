//! The instance pool and per-plugin limits: sized from what each component
//! needs (measured at load), and a full pool is back-pressure, not a trap.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

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

fn runtime(max_instances: u32) -> PluginRuntime {
    let limits = PluginLimits {
        max_instances,
        trip_after_traps: 1,
        ..PluginLimits::default()
    };
    PluginRuntime::new(limits, Some(&herald_tests::plugin_code_cache())).expect("runtime")
}

/// A loopback server answering after `delay`, recording the most requests it held at once.
async fn slow_server(delay: Duration) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (open, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let seen = most.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let (open, most) = (open.clone(), most.clone());
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let now = open.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                let mut buffer = [0u8; 4096];
                let _ = socket.read(&mut buffer).await;
                tokio::time::sleep(delay).await;
                open.fetch_sub(1, Ordering::SeqCst);
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                    .await;
            });
        }
    });
    (format!("http://127.0.0.1:{}/slow", address.port()), seen)
}

#[tokio::test]
async fn a_full_pool_makes_calls_wait_instead_of_trapping() {
    // Room for two calls at once; twelve arrive together, each holding its
    // instance while the carrier takes 150 ms to answer.
    let runtime = runtime(2);
    let wasm = std::fs::read(fixtures::FETCHER).unwrap();
    let http = PluginHttp::new(&["127.0.0.1".to_string()], true, runtime.limits()).unwrap();
    let carrier = CarrierPlugin::load(&runtime, identity("fetcher"), http, &wasm)
        .await
        .unwrap();
    let (url, most_at_once) = slow_server(Duration::from_millis(150)).await;
    let calls = (0..12).map(|i| {
        let (carrier, url) = (carrier.clone(), url.clone());
        tokio::spawn(async move {
            let message = Message {
                id: format!("m-{i}"),
                to: "+15551230001".into(),
                from: String::new(),
                body: url,
                segments: 1,
                encoding: Encoding::Gsm7,
                metadata: vec![],
            };
            carrier.send(&message).await.0
        })
    });
    for call in futures::future::join_all(calls).await {
        let accepted = call.unwrap().expect("no trap, no breaker").expect("accepted");
        assert_eq!(accepted.carrier_message_id, "200:2");
    }
    assert_eq!(most_at_once.load(Ordering::SeqCst), 2, "calls beyond the pool waited");
}

#[tokio::test]
async fn an_instance_takes_what_it_needs_and_a_limit_that_refuses_it_refuses_the_load() {
    let runtime = runtime(4);
    let template = TemplatePlugin::load(
        &runtime,
        identity("default"),
        &builtin::resolve("builtin:default").unwrap(),
    )
    .await
    .unwrap();
    let footprint = template.footprint();
    assert!(
        (1..=8).contains(&footprint.core_instances) && footprint.memories >= 1,
        "{footprint:?}"
    );

    let huge = std::fs::read(fixtures::HOSTILE_HUGE_MEMORY).unwrap();
    let Err(PluginError::Load { reason, .. }) = TemplatePlugin::load(&runtime, identity("huge"), &huge).await else {
        panic!("a component whose memory starts above the limit must be refused at load");
    };
    assert!(
        reason.contains("memory") && reason.contains("exceeds"),
        "names the limit: {reason}"
    );
    let roomy = PluginRuntime::new(
        PluginLimits {
            memory_mb: 64,
            ..PluginLimits::default()
        },
        None,
    )
    .unwrap();
    let loaded = TemplatePlugin::load(&roomy, identity("huge"), &huge).await.unwrap();
    assert!(
        matches!(loaded.render("x", &[]).await, Ok(Ok(_))),
        "it runs within a larger limit"
    );
}
