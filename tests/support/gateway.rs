//! A fake SMS gateway on loopback (the outside world) for the `carrier-http`
//! and Twilio plugins, on wiremock: records every call by Herald's message id
//! and by sender (the last path segment), and answers from a script, after a
//! delay, with an error body when it refuses.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// What the gateway answers to the `n`-th call (1-based) for one message id:
/// `(status, retry_after_seconds)`.
pub type Script = Arc<dyn Fn(usize) -> (u16, Option<u64>) + Send + Sync>;

/// The calls seen so far.
#[derive(Default)]
struct Seen {
    /// Calls per Herald message id.
    by_id: HashMap<String, usize>,
    /// Calls per sender: the last segment of the path posted to.
    by_sender: BTreeMap<String, usize>,
    /// Request bodies, in arrival order.
    bodies: Vec<Value>,
    /// When each call arrived (before the answer's delay), and its sender.
    arrivals: Vec<(Instant, String)>,
}

/// Answers by the script, counting calls per message id on arrival: a call
/// whose answer the caller never read (timed out, killed) still reached us.
struct Scripted {
    script: Script,
    delay: Duration,
    /// The JSON body of refusals (status ≥ 400), e.g. a Twilio error.
    error_body: Option<Value>,
    seen: Arc<Mutex<Seen>>,
}

impl Respond for Scripted {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        // carrier-http sends JSON with the id; Twilio a form whose StatusCallback
        // URL names it.
        let body: Value = serde_json::from_slice(&request.body).unwrap_or_else(|_| {
            Value::Object(
                form_urlencoded::parse(&request.body)
                    .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
                    .collect(),
            )
        });
        let id = match body["StatusCallback"].as_str() {
            Some(callback) => message_id_of(callback).unwrap_or_default(),
            None => body["id"].as_str().unwrap_or_default().to_string(),
        };
        let sender = request.url.path().rsplit('/').next().unwrap_or_default().to_string();
        let call = {
            let mut seen = self.seen.lock().unwrap();
            seen.arrivals.push((Instant::now(), sender.clone()));
            *seen.by_sender.entry(sender).or_default() += 1;
            seen.bodies.push(body);
            let calls = seen.by_id.entry(id.clone()).or_default();
            *calls += 1;
            *calls
        };
        let (status, retry_after) = (self.script)(call);
        let mut answer = ResponseTemplate::new(status).set_delay(self.delay);
        if let Some(seconds) = retry_after {
            answer = answer.insert_header("retry-after", seconds.to_string());
        }
        match &self.error_body {
            Some(error) if status >= 400 => answer.set_body_json(error),
            _ => answer.set_body_json(json!({ "id": format!("gw-{id}"), "sid": twilio_sid(&id), "status": "queued" })),
        }
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

#[derive(Clone)]
pub struct FakeGateway {
    /// Where `carrier-http` posts: `<base>/send`.
    pub url: String,
    seen: Arc<Mutex<Seen>>,
    _server: Arc<MockServer>,
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

    /// Answers every POST from `script` after `delay`; refusals (status ≥ 400) carry `error_body`.
    pub async fn launch(script: Script, delay: Duration, error_body: Option<Value>) -> Self {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let server = MockServer::builder().disable_request_recording().start().await;
        let responder = Scripted {
            script,
            delay,
            error_body,
            seen: seen.clone(),
        };
        Mock::given(wiremock::matchers::method("POST"))
            .respond_with(responder)
            .mount(&server)
            .await;
        Self {
            url: format!("{}/send", server.uri()),
            seen,
            _server: Arc::new(server),
        }
    }

    /// Calls seen per message id.
    pub fn calls(&self) -> HashMap<String, usize> {
        self.seen.lock().unwrap().by_id.clone()
    }

    /// Calls seen per sender: the last segment of the path posted to.
    pub fn by_sender(&self) -> BTreeMap<String, usize> {
        self.seen.lock().unwrap().by_sender.clone()
    }

    pub fn total_calls(&self) -> usize {
        self.seen.lock().unwrap().bodies.len()
    }

    /// Distinct message ids called.
    pub fn distinct_ids(&self) -> usize {
        self.seen.lock().unwrap().by_id.len()
    }

    /// Request bodies, in arrival order.
    pub fn bodies(&self) -> Vec<Value> {
        self.seen.lock().unwrap().bodies.clone()
    }

    /// When each call arrived (as it reached the gateway, before its answer's
    /// delay) and its sender, in arrival order.
    pub fn arrivals(&self) -> Vec<(Instant, String)> {
        self.seen.lock().unwrap().arrivals.clone()
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
