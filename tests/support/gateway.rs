//! A fake SMS gateway on loopback (the outside world) for the `carrier-http`
//! and Twilio plugins: records every call by Herald's message id and answers
//! from a script, after a delay, with an error body when it refuses.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use salvo::conn::{Listener, TcpListener};
use salvo::prelude::*;
use serde_json::Value;

/// What the gateway answers to the `n`-th call (1-based) for one message id:
/// `(status, retry_after_seconds)`.
pub type Script = Arc<dyn Fn(usize) -> (u16, Option<u64>) + Send + Sync>;

#[derive(Clone)]
pub struct FakeGateway {
    pub url: String,
    state: Arc<GatewayState>,
}

struct GatewayState {
    script: Script,
    calls: Mutex<HashMap<String, usize>>,
    bodies: Mutex<Vec<Value>>,
    delay: Duration,
    /// The JSON body of refusals (status ≥ 400), e.g. a Twilio error.
    error_body: Option<Value>,
}

#[handler]
async fn accept(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let state = depot.get_typed::<Arc<GatewayState>>().expect("state").clone();
    // carrier-http sends JSON with the id; Twilio a form whose StatusCallback
    // URL names it.
    let bytes = req.payload().await.map(|b| b.to_vec()).unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
        Value::Object(
            form_urlencoded::parse(&bytes)
                .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
                .collect(),
        )
    });
    let id = match body["StatusCallback"].as_str() {
        Some(callback) => message_id_of(callback).unwrap_or_default(),
        None => body["id"].as_str().unwrap_or_default().to_string(),
    };
    let call = {
        let mut calls = state.calls.lock().unwrap();
        let n = calls.entry(id.clone()).or_default();
        *n += 1;
        *n
    };
    state.bodies.lock().unwrap().push(body);
    if !state.delay.is_zero() {
        tokio::time::sleep(state.delay).await;
    }
    let (status, retry_after) = (state.script)(call);
    res.status_code(StatusCode::from_u16(status).unwrap());
    if let Some(seconds) = retry_after {
        res.headers_mut()
            .insert("retry-after", seconds.to_string().parse().unwrap());
    }
    match &state.error_body {
        Some(error) if status >= 400 => res.render(Json(error.clone())),
        _ => res.render(Json(
            serde_json::json!({ "id": format!("gw-{id}"), "sid": twilio_sid(&id), "status": "queued" }),
        )),
    }
}

/// The Twilio message sid the gateway gives Herald's message `id`.
pub fn twilio_sid(id: &str) -> String {
    format!("SM{}", id.replace('-', ""))
}

/// Herald's message id in a status callback URL (`herald_message_id`).
pub fn message_id_of(callback: &str) -> Option<String> {
    let query = callback.split_once('?')?.1;
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == "herald_message_id")
        .map(|(_, value)| value.into_owned())
}

impl FakeGateway {
    /// Accepts every message.
    pub async fn start() -> Self {
        Self::start_scripted(Arc::new(|_| (200, None)), Duration::ZERO).await
    }

    pub async fn start_scripted(script: Script, delay: Duration) -> Self {
        Self::launch(script, delay, None).await
    }

    /// Refuses every message with `status` and the JSON `body`.
    pub async fn start_refusing(status: u16, body: Value) -> Self {
        Self::launch(Arc::new(move |_| (status, None)), Duration::ZERO, Some(body)).await
    }

    /// Answers from `script` after `delay`; refusals (status ≥ 400) carry `error_body`.
    pub async fn launch(script: Script, delay: Duration, error_body: Option<Value>) -> Self {
        let state = Arc::new(GatewayState {
            script,
            calls: Mutex::new(HashMap::new()),
            bodies: Mutex::new(Vec::new()),
            delay,
            error_body,
        });
        let acceptor = TcpListener::new("127.0.0.1:0").bind().await;
        let port = acceptor.local_addr().expect("bound address").port();
        let router = Router::new()
            .hoop(salvo::affix_state::inject(state.clone()))
            .push(Router::with_path("{**rest}").post(accept));
        tokio::spawn(async move { Server::new(acceptor).serve(router).await });
        Self {
            url: format!("http://127.0.0.1:{port}/send"),
            state,
        }
    }

    /// Calls seen per message id.
    pub fn calls(&self) -> HashMap<String, usize> {
        self.state.calls.lock().unwrap().clone()
    }

    pub fn total_calls(&self) -> usize {
        self.state.calls.lock().unwrap().values().sum()
    }

    /// Request bodies, in arrival order.
    pub fn bodies(&self) -> Vec<Value> {
        self.state.bodies.lock().unwrap().clone()
    }

    /// The base URL (for Twilio's `base_url`).
    pub fn base(&self) -> String {
        self.url.trim_end_matches("/send").to_string()
    }

    /// A `[[carriers]]` entry for `carrier-http` pointing here.
    pub fn carrier(&self, name: &str) -> herald::config::CarrierConfig {
        herald::config::CarrierConfig {
            name: name.into(),
            plugin: "builtin:http".into(),
            default: true,
            allowed_hosts: vec!["127.0.0.1".into()],
            allow_insecure_http: true,
            max_per_second: 10_000,
            max_concurrency: 64,
            idempotent: false,
            settings: [("url".to_string(), self.url.clone())].into_iter().collect(),
        }
    }
}

/// A `[[carriers]]` entry for the Twilio plugin against `gateway`, with auth
/// token `token`. Its status callback URL is a placeholder: tests post the
/// callbacks themselves, to the server's own URL, with the same query.
pub fn twilio_carrier(gateway: &FakeGateway, token: &str) -> herald::config::CarrierConfig {
    herald::config::CarrierConfig {
        name: "twilio".into(),
        plugin: "builtin:twilio".into(),
        settings: [
            ("account_sid", "AC0123"),
            ("auth_token", token),
            ("from", "+12125550100"),
            ("base_url", gateway.base().as_str()),
            ("status_callback", "https://herald.invalid/webhooks/twilio/status"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        ..gateway.carrier("twilio")
    }
}
