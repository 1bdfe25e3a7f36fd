//! The mock host: run a plugin's logic under plain `cargo test`, with no Wasm
//! runtime. Available on native targets only.
//!
//! On native targets every host call the SDK makes ([`log`](crate::log),
//! [`config`](crate::config), [`now_ms`](crate::now_ms),
//! [`http`](crate::http)) goes to this mock. Its state is **per thread**, and
//! `cargo test` runs each test on its own thread, so tests do not see each
//! other's settings, logs or requests; call [`reset`] to start over within one
//! test.
//!
//! ```
//! use herald_sdk::http::{Request, Response};
//! use herald_sdk::{Level, testing};
//!
//! testing::set_config("api_key", "k1");
//! testing::push_response(Ok(Response::new(202).with_json(&serde_json::json!({"id": "m-1"}))));
//!
//! // ... call your plugin's `send` here; for the example, do what it would do:
//! let key = herald_sdk::config::require("api_key").unwrap();
//! let response = Request::post("https://sms.example.com/send").bearer_auth(&key).send().unwrap();
//! herald_sdk::log::info("sent");
//!
//! assert_eq!(response.status, 202);
//! let requests = testing::requests();
//! assert_eq!(requests[0].header_value("authorization"), Some("Bearer k1"));
//! assert_eq!(testing::logs(), vec![(Level::Info, "sent".to_string())]);
//! ```

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};

use crate::http::{HttpError, Request, Response};
use crate::types::Level;

/// The clock's value until [`set_now`] or [`advance`] changes it:
/// 2023-11-14T22:13:20Z, in milliseconds since the Unix epoch.
pub const DEFAULT_NOW_MS: u64 = 1_700_000_000_000;

type Handler = Box<dyn FnMut(&Request) -> Result<Response, HttpError>>;

struct MockHost {
    config: HashMap<String, String>,
    logs: Vec<(Level, String)>,
    now: u64,
    queue: VecDeque<Result<Response, HttpError>>,
    handler: Option<Handler>,
    requests: Vec<Request>,
}

impl Default for MockHost {
    fn default() -> Self {
        Self {
            config: HashMap::new(),
            logs: Vec::new(),
            now: DEFAULT_NOW_MS,
            queue: VecDeque::new(),
            handler: None,
            requests: Vec::new(),
        }
    }
}

thread_local! {
    static HOST: RefCell<MockHost> = RefCell::new(MockHost::default());
}

fn with<R>(f: impl FnOnce(&mut MockHost) -> R) -> R {
    HOST.with(|host| f(&mut host.borrow_mut()))
}

/// Clears this thread's settings, logs, canned responses, handler and recorded
/// requests, and puts the clock back to [`DEFAULT_NOW_MS`].
pub fn reset() {
    with(|host| *host = MockHost::default());
}

/// Sets the plugin setting `key` (what [`config::get`](crate::config::get) returns).
pub fn set_config(key: impl Into<String>, value: impl Into<String>) {
    with(|host| host.config.insert(key.into(), value.into()));
}

/// Unsets the plugin setting `key`.
pub fn remove_config(key: &str) {
    with(|host| host.config.remove(key));
}

/// Every line logged so far on this thread, oldest first.
pub fn logs() -> Vec<(Level, String)> {
    with(|host| host.logs.clone())
}

/// Sets the clock ([`now_ms`](crate::now_ms)) to `ms` since the Unix epoch.
pub fn set_now(ms: u64) {
    with(|host| host.now = ms);
}

/// Moves the clock forward by `ms`.
pub fn advance(ms: u64) {
    with(|host| host.now = host.now.saturating_add(ms));
}

/// Queues the outcome of the next HTTP request. Queued outcomes are used first,
/// in order; then the [`on_request`] handler answers.
pub fn push_response(outcome: Result<Response, HttpError>) {
    with(|host| host.queue.push_back(outcome));
}

/// Answers every HTTP request that finds the queue empty with `handler`
/// (replacing any previous handler). A request with neither a queued outcome
/// nor a handler panics, failing the test with the request in the message.
pub fn on_request(handler: impl FnMut(&Request) -> Result<Response, HttpError> + 'static) {
    with(|host| host.handler = Some(Box::new(handler)));
}

/// Every HTTP request made so far on this thread, oldest first.
pub fn requests() -> Vec<Request> {
    with(|host| host.requests.clone())
}

pub(crate) fn log(level: Level, message: &str) {
    eprintln!("[plugin {level:?}] {message}");
    with(|host| host.logs.push((level, message.to_string())));
}

pub(crate) fn config_get(key: &str) -> Option<String> {
    with(|host| host.config.get(key).cloned())
}

pub(crate) fn now() -> u64 {
    with(|host| host.now)
}

pub(crate) fn fetch(request: Request) -> Result<Response, HttpError> {
    let (queued, handler) = with(|host| {
        host.requests.push(request.clone());
        match host.queue.pop_front() {
            Some(outcome) => (Some(outcome), None),
            None => (None, host.handler.take()),
        }
    });
    if let Some(outcome) = queued {
        return outcome;
    }
    let Some(mut handler) = handler else {
        panic!(
            "herald_sdk::testing: no response for {} {}: queue one with testing::push_response or \
             answer with testing::on_request",
            request.method, request.url
        );
    };
    let outcome = handler(&request);
    // Put the handler back unless it installed a new one while running.
    with(|host| {
        if host.handler.is_none() {
            host.handler = Some(handler);
        }
    });
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config, http, log, now_ms};

    #[test]
    fn config_logs_and_clock() {
        set_config("a", "1");
        set_config("n", " 42 ");
        set_config("bad", "x");
        set_config("empty", "");
        assert_eq!(config::get("a").as_deref(), Some("1"));
        assert_eq!(config::get("missing"), None);
        assert_eq!(config::get_parsed::<u32>("n"), Ok(Some(42)));
        assert_eq!(config::get_parsed::<u32>("missing"), Ok(None));
        let invalid = config::get_parsed::<u32>("bad").unwrap_err();
        assert!(invalid.to_string().starts_with("invalid setting `bad`"), "{invalid}");
        let missing = config::require("account_sid").unwrap_err();
        assert!(missing.to_string().contains("`account_sid`"), "{missing}");
        assert!(config::require("empty").is_err());
        remove_config("a");
        assert_eq!(config::get("a"), None);

        log::warn("w");
        log::log(Level::Error, String::from("e"));
        assert_eq!(logs(), vec![(Level::Warn, "w".into()), (Level::Error, "e".into())]);

        assert_eq!(now_ms(), DEFAULT_NOW_MS);
        advance(5);
        assert_eq!(now_ms(), DEFAULT_NOW_MS + 5);
        set_now(7);
        assert_eq!(now_ms(), 7);

        reset();
        assert!(logs().is_empty());
        assert_eq!(config::get("n"), None);
        assert_eq!(now_ms(), DEFAULT_NOW_MS);
    }

    #[test]
    fn queue_then_handler_and_recorded_requests() {
        push_response(Err(HttpError::Timeout));
        let mut calls = 0;
        on_request(move |request| {
            calls += 1;
            Ok(Response::new(200).with_body(format!("{} #{calls}", request.url)))
        });
        assert_eq!(http::Request::get("https://a.test/1").send(), Err(HttpError::Timeout));
        assert_eq!(
            http::Request::get("https://a.test/2").send().unwrap().text(),
            "https://a.test/2 #1"
        );
        assert_eq!(
            http::Request::get("https://a.test/3").send().unwrap().text(),
            "https://a.test/3 #2"
        );
        let urls: Vec<_> = requests().into_iter().map(|r| r.url).collect();
        assert_eq!(urls, ["https://a.test/1", "https://a.test/2", "https://a.test/3"]);
    }

    #[test]
    #[should_panic(expected = "no response for POST https://a.test/x")]
    fn unanswered_request_panics() {
        let _ = http::Request::post("https://a.test/x").send();
    }

    #[test]
    fn http_and_config_errors_map_to_send_errors() {
        use crate::SendError;
        let denied = SendError::from(HttpError::Denied("api.acme.example is not in allowed_hosts".into()));
        assert_eq!(
            denied,
            SendError::Permanent("misconfigured: HTTP request denied: api.acme.example is not in allowed_hosts".into())
        );
        let invalid = SendError::from(HttpError::InvalidRequest("h".into()));
        assert!(matches!(&invalid, SendError::Permanent(_)) && !invalid.is_misconfigured());
        assert!(matches!(SendError::from(HttpError::Timeout), SendError::Retryable(_)));
        assert!(matches!(
            SendError::from(HttpError::TooLarge(1)),
            SendError::Retryable(_)
        ));
        assert!(matches!(
            SendError::from(HttpError::Transport("t".into())),
            SendError::Retryable(_)
        ));
        let missing = SendError::from(config::require("token").unwrap_err());
        assert!(missing.is_misconfigured(), "{missing:?}");
        assert!(matches!(missing, SendError::Permanent(m) if m.starts_with("misconfigured: missing setting `token`")));
        set_config("n", "x");
        let invalid = SendError::from(config::get_parsed::<u32>("n").unwrap_err());
        assert!(matches!(invalid, SendError::Permanent(m) if m.starts_with("misconfigured: invalid setting `n`")));
    }
}
