//! Plugin call overhead (SPEC §8: warm template render < 50 µs median).
//!
//! `cargo bench -p herald --bench plugins`. Every call is what production does:
//! a fresh instance from the plugin's `InstancePre` in a fresh `Store`, then the
//! call. Prints median and p99 over many calls after a warm-up.
//!
//! `BENCH_CARRIERS="js=/path/js.wasm python=/path/python.wasm"` adds carriers
//! behaving like carrier-http (the examples in `sdk/examples/`, built with their
//! `build.sh`): load time compiling and from the code cache, and send calls.

use std::time::{Duration, Instant};

use herald::plugin::carrier::{CarrierPlugin, Encoding, Message};
use herald::plugin::http::PluginHttp;
use herald::plugin::template::TemplatePlugin;
use herald::plugin::{PluginIdentity, PluginLimits, PluginRuntime, builtin};

const WARM_UP: usize = 500;
const CALLS: usize = 5_000;

fn identity(name: &str) -> PluginIdentity {
    PluginIdentity {
        name: name.into(),
        settings: Default::default(),
    }
}

async fn measure<F, Fut>(label: &str, call: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    measure_n(label, WARM_UP, CALLS, call).await
}

async fn measure_n<F, Fut>(label: &str, warm_up: usize, calls: usize, mut call: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    for _ in 0..warm_up {
        call().await;
    }
    let mut samples: Vec<Duration> = Vec::with_capacity(calls);
    for _ in 0..calls {
        let started = Instant::now();
        call().await;
        samples.push(started.elapsed());
    }
    samples.sort();
    let median = samples[calls / 2];
    let p99 = samples[calls * 99 / 100];
    println!(
        "{label:<48} median {:>8.1} µs   p99 {:>8.1} µs",
        micros(median),
        micros(p99)
    );
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[tokio::main]
async fn main() {
    let runtime = PluginRuntime::new(PluginLimits::default(), None).expect("runtime");
    let wasm = builtin::resolve("builtin:default").expect("built in");
    let started = Instant::now();
    let template = TemplatePlugin::load(&runtime, identity("default"), &wasm)
        .await
        .expect("loads");
    println!(
        "{:<48} {:>8.1} ms",
        "load builtin:default (compile + link)",
        started.elapsed().as_secs_f64() * 1e3
    );

    let variables = vec![
        ("first_name".to_string(), "Ada".to_string()),
        ("city".to_string(), "Paris".to_string()),
    ];
    measure("template render (fresh instance + call)", || async {
        let rendered = template
            .render(
                "Hi {{ first_name | default:\"there\" }}, 20% off in {{ city | upper }} today!",
                &variables,
            )
            .await;
        assert!(matches!(rendered, Ok(Ok(_))));
    })
    .await;
    measure("template validate (fresh instance + call)", || async {
        assert!(matches!(template.validate("Hi {{ name }}").await, Ok(Ok(()))));
    })
    .await;

    if let Ok(log) = builtin::resolve("builtin:log") {
        let http = PluginHttp::new(&[], false, runtime.limits()).expect("http policy");
        let carrier = CarrierPlugin::load(&runtime, identity("log"), http, &log)
            .await
            .expect("loads");
        let message = Message {
            id: "01900000-0000-7000-8000-000000000000".into(),
            to: "+15551230001".into(),
            from: String::new(),
            body: "Hi Ada, 20% off today!".into(),
            segments: 1,
            encoding: Encoding::Gsm7,
            metadata: vec![],
        };
        measure("carrier-log send (fresh instance + call)", || async {
            assert!(matches!(carrier.send(&message).await.0, Ok(Ok(_))));
        })
        .await;

        // builtin:http against a loopback fake gateway: instance, call, and a real
        // HTTP round trip (new connection each time) through the host's http-fetch.
        let gateway = fake_gateway().await;
        let http = PluginHttp::new(&["127.0.0.1".to_string()], true, runtime.limits()).expect("http policy");
        let identity = PluginIdentity {
            name: "http".into(),
            settings: [("url".to_string(), format!("http://{gateway}/sms"))]
                .into_iter()
                .collect(),
        };
        let wasm = builtin::resolve("builtin:http").expect("built in");
        let carrier = CarrierPlugin::load(&runtime, identity, http, &wasm)
            .await
            .expect("loads");
        measure("carrier-http send to a loopback gateway", || async {
            assert!(matches!(carrier.send(&message).await.0, Ok(Ok(_))));
        })
        .await;

        for (name, path) in std::env::var("BENCH_CARRIERS")
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|entry| entry.split_once('='))
        {
            other_language(name, path, &gateway, &message).await;
        }
    }
}

/// Load and call costs of a carrier built by another toolchain.
async fn other_language(name: &str, path: &str, gateway: &std::net::SocketAddr, message: &Message) {
    let wasm = std::fs::read(path).expect("BENCH_CARRIERS names readable files");
    let cache = tempfile::tempdir().expect("temp dir");
    let load = async |runtime: &PluginRuntime| {
        let http = PluginHttp::new(&["127.0.0.1".to_string()], true, runtime.limits()).expect("http policy");
        let identity = PluginIdentity {
            name: name.into(),
            settings: [("url".to_string(), format!("http://{gateway}/sms"))]
                .into_iter()
                .collect(),
        };
        let started = Instant::now();
        let carrier = CarrierPlugin::load(runtime, identity, http, &wasm)
            .await
            .expect("loads");
        (carrier, started.elapsed())
    };
    let fresh = PluginRuntime::new(PluginLimits::default(), Some(cache.path())).expect("runtime");
    let (_, compiling) = load(&fresh).await;
    let cached = PluginRuntime::new(PluginLimits::default(), Some(cache.path())).expect("runtime");
    let (carrier, mapping) = load(&cached).await;
    let size = wasm.len() as f64 / 1e6;
    println!(
        "{:<48} {:>8.1} ms",
        format!("load {name} ({size:.1} MB): compile + store"),
        compiling.as_secs_f64() * 1e3
    );
    println!(
        "{:<48} {:>8.1} ms   ({})",
        format!("load {name}: from the code cache"),
        mapping.as_secs_f64() * 1e3,
        carrier.footprint()
    );
    measure_n(&format!("{name} send to a loopback gateway"), 20, 500, || async {
        assert!(matches!(carrier.send(message).await.0, Ok(Ok(_))));
    })
    .await;
}

/// A minimal HTTP/1.1 server answering `{"id": "gw-1"}` to every request.
async fn fake_gateway() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = [0u8; 8192];
                let _ = socket.read(&mut buffer).await;
                let body = br#"{"id": "gw-1"}"#;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(body).await;
            });
        }
    });
    address
}
