//! Herald's embedded default carrier (`builtin:log`): it delivers nothing, it
//! logs every message and simulates what a real carrier would do, so the whole
//! pipeline (sending, retries, receipts, inbound messages) is visible with no
//! carrier account.
//!
//! # Sending
//!
//! `send` logs one line at info level, `log carrier: message <id> to <to>
//! (<n> segment(s)): <body>`, and answers with carrier message id
//! `log-<message id>` and status `sent`. The id depends on the message id only,
//! so sending the same message twice gives the same carrier id (idempotent).
//! The log carrier makes no HTTP calls, so the outcome of a send is always
//! known: nothing is ever held for reconciliation.
//!
//! # Simulated failures (deterministic)
//!
//! Failures are decided by hashing, never by a random generator, so a test (or
//! a demo) sees the same outcome every time:
//!
//! * permanent failure when `roll("fail", message id) < failure_rate`: the
//!   same message always fails;
//! * otherwise a retryable error when `roll("retry", message id, now in
//!   seconds) < retry_rate`: the clock is part of the roll so that Herald's
//!   retry, later, gets a fresh chance (with a fixed clock, as under
//!   `herald_sdk::testing`, the outcome is fixed too).
//!
//! `roll` is a 64-bit FNV-1a hash of its parts finished with the SplitMix64
//! mixer, mapped onto `[0, 1)` ([`roll`]).
//!
//! # Simulated receipts (`handle-webhook`)
//!
//! There is no real carrier to call back, so receipts are posted by whoever
//! wants to see them (Herald, a script, a test) to the status webhook as JSON:
//!
//! ```json
//! {"carrier_message_id": "log-42", "status": "delivered"}
//! {"carrier_message_id": "log-43", "status": "failed", "error": "handset off"}
//! {"carrier_message_id": "log-44"}
//! ```
//!
//! `status` is `sent`, `delivered` or `failed`. When it is left out, the
//! outcome is simulated: delivered when `roll("deliver", carrier message id) <
//! delivery_rate`, otherwise failed with error `simulated delivery failure`.
//! The body may also be a JSON array of such receipts. Inbound messages are
//! posted to the inbound webhook as `{"from": "...", "to": "...", "body":
//! "..."}` (or an array of them).
//!
//! A webhook is anonymous input (a posted `STOP` opts a phone number out), so
//! every request must carry the `webhook_secret` setting in the
//! [`SECRET_HEADER`] header (`X-Herald-Webhook-Secret`, compared in constant
//! time); otherwise it is `unauthorized`. Until `webhook_secret` is set, every
//! webhook is `unauthorized` (Herald answers 404 before even asking the
//! plugin), e.g.:
//!
//! ```sh
//! curl -X POST http://127.0.0.1:8080/webhooks/log/status -H "X-Herald-Webhook-Secret: $SECRET" \
//!   -H 'Content-Type: application/json' -d '{"carrier_message_id": "log-42"}'
//! ```
//!
//! # Record of sent messages
//!
//! Plugins have no filesystem, so the "JSONL file" is a log line: with
//! `record = true`, every accepted message is also logged at info level as
//! [`RECORD_PREFIX`] followed by one JSON object (`id`, `carrier_message_id`,
//! `to`, `from`, `body`, `segments`, `encoding`, `metadata`, `at` in
//! milliseconds since the epoch). Find them in Herald's log, e.g.
//! `grep -o 'herald-carrier-log-record {.*}'` then strip the prefix.
//!
//! # Settings (all optional)
//!
//! * `failure_rate` (0.0–1.0, default 0): share of messages failing permanently.
//! * `retry_rate` (0.0–1.0, default 0): share of send attempts failing as retryable.
//! * `delivery_rate` (0.0–1.0, default 1): share of simulated receipts that say
//!   delivered (receipts posted without a `status`).
//! * `record` (`true`/`false`, default `false`): also log the JSON record line.
//! * `webhook_secret` (unset by default: webhooks disabled): the shared secret
//!   webhook requests must present in [`SECRET_HEADER`].

use herald_sdk::config::{self, ConfigError};
use herald_sdk::{
    Accepted, Carrier, DeliveryStatus, DeliveryUpdate, Encoding, InboundMessage, Message, SendError, WebhookError,
    WebhookEvent, WebhookKind, WebhookRequest, log, webhook,
};
use serde_json::{Map, Value, json};

/// The prefix of the JSON record line logged per message when `record = true`.
pub const RECORD_PREFIX: &str = "herald-carrier-log-record ";

/// The error of a simulated delivery failure.
pub const SIMULATED_DELIVERY_FAILURE: &str = "simulated delivery failure";

/// The header a webhook request carries the `webhook_secret` setting in.
pub const SECRET_HEADER: &str = "X-Herald-Webhook-Secret";

/// The plugin: stateless, instantiated per call.
pub struct LogCarrier;

impl Carrier for LogCarrier {
    fn send(message: Message) -> Result<Accepted, SendError> {
        let settings = Settings::load()?;
        send_message(&message, &settings, herald_sdk::now_ms())
    }

    fn handle_webhook(kind: WebhookKind, request: WebhookRequest) -> Result<Vec<WebhookEvent>, WebhookError> {
        authenticate(&request)?;
        let delivery_rate = rate("delivery_rate", 1.0).map_err(|e| WebhookError::Malformed(e.to_string()))?;
        handle(kind, &request.body, delivery_rate)
    }
}

herald_sdk::export_carrier!(LogCarrier);

/// Checks that `request` carries the `webhook_secret` setting in
/// [`SECRET_HEADER`]; without the setting every request is refused.
pub fn authenticate(request: &WebhookRequest) -> Result<(), WebhookError> {
    let secret = config::get("webhook_secret")
        .filter(|secret| !secret.trim().is_empty())
        .ok_or_else(|| {
            WebhookError::Unauthorized(
                "the log carrier's webhooks are disabled until `webhook_secret` is set in its settings".into(),
            )
        })?;
    webhook::check_secret(request, SECRET_HEADER, &secret)
}

/// The log carrier's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// Share of messages failing permanently.
    pub failure_rate: f64,
    /// Share of send attempts failing as retryable.
    pub retry_rate: f64,
    /// Whether to log the JSON record line.
    pub record: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            failure_rate: 0.0,
            retry_rate: 0.0,
            record: false,
        }
    }
}

impl Settings {
    /// Reads the settings from Herald's configuration.
    pub fn load() -> Result<Self, ConfigError> {
        Ok(Self {
            failure_rate: rate("failure_rate", 0.0)?,
            retry_rate: rate("retry_rate", 0.0)?,
            record: config::get_parsed::<bool>("record")?.unwrap_or(false),
        })
    }
}

/// The rate setting `key` (0.0–1.0), or `default` when unset.
pub fn rate(key: &str, default: f64) -> Result<f64, ConfigError> {
    match config::get_parsed::<f64>(key)? {
        None => Ok(default),
        Some(value) if (0.0..=1.0).contains(&value) => Ok(value),
        Some(value) => Err(ConfigError::Invalid {
            key: key.to_string(),
            reason: format!("{value} is not between 0.0 and 1.0"),
        }),
    }
}

/// A deterministic number in `[0, 1)` from `parts`: FNV-1a (64-bit) over the
/// parts, each followed by a zero byte, finished with the SplitMix64 mixer.
pub fn roll(parts: &[&str]) -> f64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.bytes().chain([0]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^= hash >> 31;
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

/// The carrier message id for Herald's message `id`.
pub fn carrier_message_id(id: &str) -> String {
    format!("log-{id}")
}

/// "Sends" `message` at time `now_ms`: logs it, or fails it as `settings` say.
pub fn send_message(message: &Message, settings: &Settings, now_ms: u64) -> Result<Accepted, SendError> {
    if settings.failure_rate > 0.0 && roll(&["fail", &message.id]) < settings.failure_rate {
        log::info(format!(
            "log carrier: message {} to {} failed permanently (simulated, failure_rate {})",
            message.id, message.to, settings.failure_rate
        ));
        return Err(SendError::Permanent(format!(
            "simulated permanent failure (failure_rate {})",
            settings.failure_rate
        )));
    }
    let second = (now_ms / 1000).to_string();
    if settings.retry_rate > 0.0 && roll(&["retry", &message.id, &second]) < settings.retry_rate {
        log::info(format!(
            "log carrier: message {} to {} failed, retryable (simulated, retry_rate {})",
            message.id, message.to, settings.retry_rate
        ));
        return Err(SendError::Retryable(format!(
            "simulated temporary failure (retry_rate {})",
            settings.retry_rate
        )));
    }
    let carrier_id = carrier_message_id(&message.id);
    let plural = if message.segments == 1 { "" } else { "s" };
    log::info(format!(
        "log carrier: message {} to {} ({} segment{plural}): {}",
        message.id, message.to, message.segments, message.body
    ));
    if settings.record {
        log::info(format!("{RECORD_PREFIX}{}", record(message, &carrier_id, now_ms)));
    }
    Ok(Accepted {
        carrier_message_id: carrier_id,
        status: Some(DeliveryStatus::Sent),
    })
}

/// The JSON record of an accepted message.
pub fn record(message: &Message, carrier_id: &str, now_ms: u64) -> Value {
    let metadata: Map<String, Value> = message
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    json!({
        "id": message.id,
        "carrier_message_id": carrier_id,
        "to": message.to,
        "from": message.from,
        "body": message.body,
        "segments": message.segments,
        "encoding": match message.encoding { Encoding::Gsm7 => "gsm7", Encoding::Ucs2 => "ucs2" },
        "metadata": metadata,
        "at": now_ms,
    })
}

/// Parses a simulated webhook body (one JSON object or an array of them).
pub fn handle(kind: WebhookKind, body: &[u8], delivery_rate: f64) -> Result<Vec<WebhookEvent>, WebhookError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| WebhookError::Malformed(format!("body is not JSON: {e}")))?;
    let items = match value {
        Value::Array(items) => items,
        other => vec![other],
    };
    items
        .iter()
        .map(|item| match kind {
            WebhookKind::Status => receipt(item, delivery_rate).map(WebhookEvent::Delivery),
            WebhookKind::Inbound => inbound(item).map(WebhookEvent::Inbound),
        })
        .collect()
}

fn string_field(item: &Value, name: &str) -> Result<Option<String>, WebhookError> {
    match item.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(WebhookError::Malformed(format!(
            "`{name}` must be a string, not {other}"
        ))),
    }
}

fn required_field(item: &Value, name: &str) -> Result<String, WebhookError> {
    string_field(item, name)?.ok_or_else(|| WebhookError::Malformed(format!("missing `{name}`")))
}

fn receipt(item: &Value, delivery_rate: f64) -> Result<DeliveryUpdate, WebhookError> {
    if !item.is_object() {
        return Err(WebhookError::Malformed("a receipt must be a JSON object".into()));
    }
    let id = required_field(item, "carrier_message_id")?;
    let error = string_field(item, "error")?;
    let (status, error) = match string_field(item, "status")?.as_deref() {
        Some("sent") => (DeliveryStatus::Sent, None),
        Some("delivered") => (DeliveryStatus::Delivered, None),
        Some("failed") => (DeliveryStatus::Failed, error.or_else(|| Some("failed".into()))),
        Some(other) => {
            return Err(WebhookError::Malformed(format!(
                "unknown status `{other}` (sent, delivered or failed)"
            )));
        }
        None if roll(&["deliver", &id]) < delivery_rate => (DeliveryStatus::Delivered, None),
        None => (DeliveryStatus::Failed, Some(SIMULATED_DELIVERY_FAILURE.into())),
    };
    Ok(DeliveryUpdate {
        carrier_message_id: id,
        status,
        error,
    })
}

fn inbound(item: &Value) -> Result<InboundMessage, WebhookError> {
    if !item.is_object() {
        return Err(WebhookError::Malformed(
            "an inbound message must be a JSON object".into(),
        ));
    }
    Ok(InboundMessage {
        from: required_field(item, "from")?,
        to: required_field(item, "to")?,
        body: required_field(item, "body")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_sdk::{Header, Level, testing};

    fn message(id: &str) -> Message {
        Message {
            id: id.into(),
            to: "+15550100".into(),
            from: "HERALD".into(),
            body: "Hello there".into(),
            segments: 1,
            encoding: Encoding::Gsm7,
            metadata: vec![("campaign".into(), "c-1".into())],
        }
    }

    const SECRET: &str = "hook-s3cret";

    fn unsigned(body: &str) -> WebhookRequest {
        WebhookRequest {
            method: "POST".into(),
            url: "https://herald.example/webhooks/log/status".into(),
            query: String::new(),
            headers: vec![Header::new("Content-Type", "application/json")],
            body: body.as_bytes().to_vec(),
        }
    }

    /// A request with the right secret; configures `webhook_secret` too.
    fn request(body: &str) -> WebhookRequest {
        testing::set_config("webhook_secret", SECRET);
        let mut request = unsigned(body);
        request.headers.push(Header::new("x-herald-webhook-secret", SECRET));
        request
    }

    #[test]
    fn accepts_and_logs_with_an_idempotent_id() {
        let first = LogCarrier::send(message("m-1")).unwrap();
        assert_eq!(
            first,
            Accepted {
                carrier_message_id: "log-m-1".into(),
                status: Some(DeliveryStatus::Sent)
            }
        );
        assert_eq!(LogCarrier::send(message("m-1")).unwrap(), first);
        let logs = testing::logs();
        assert_eq!(logs.len(), 2);
        assert_eq!(
            logs[0],
            (
                Level::Info,
                "log carrier: message m-1 to +15550100 (1 segment): Hello there".into()
            )
        );
        assert!(testing::requests().is_empty());
    }

    #[test]
    fn record_line_is_one_json_object_after_the_prefix() {
        testing::set_config("record", "true");
        testing::set_now(1_234);
        let mut long = message("m-2");
        long.segments = 3;
        long.encoding = Encoding::Ucs2;
        LogCarrier::send(long).unwrap();
        let logs = testing::logs();
        assert_eq!(logs.len(), 2);
        assert!(logs[0].1.contains("(3 segments)"), "{}", logs[0].1);
        let line = logs[1].1.strip_prefix(RECORD_PREFIX).expect("record prefix");
        assert!(!line.contains('\n'));
        let value: Value = serde_json::from_str(line).unwrap();
        assert_eq!(value["id"], "m-2");
        assert_eq!(value["carrier_message_id"], "log-m-2");
        assert_eq!(value["segments"], 3);
        assert_eq!(value["encoding"], "ucs2");
        assert_eq!(value["metadata"]["campaign"], "c-1");
        assert_eq!(value["at"], 1_234);
        assert_eq!(logs[1].0, Level::Info);
    }

    #[test]
    fn roll_is_deterministic_and_uniform_enough() {
        assert_eq!(roll(&["fail", "m-1"]), roll(&["fail", "m-1"]));
        assert_ne!(roll(&["fail", "m-1"]), roll(&["retry", "m-1"]));
        assert_ne!(roll(&["a", "bc"]), roll(&["ab", "c"]));
        let ids: Vec<String> = (0..10_000).map(|i| format!("msg-{i}")).collect();
        let below = ids.iter().filter(|id| roll(&["fail", id]) < 0.3).count();
        assert!((2_800..3_200).contains(&below), "{below}");
        assert!(ids.iter().all(|id| (0.0..1.0).contains(&roll(&[id]))));
    }

    #[test]
    fn failure_rate_fails_the_same_messages_every_time() {
        testing::set_config("failure_rate", "0.5");
        let outcomes: Vec<bool> = (0..200)
            .map(|i| LogCarrier::send(message(&format!("m{i}"))).is_ok())
            .collect();
        let again: Vec<bool> = (0..200)
            .map(|i| LogCarrier::send(message(&format!("m{i}"))).is_ok())
            .collect();
        assert_eq!(outcomes, again);
        let failed = outcomes.iter().filter(|ok| !**ok).count();
        assert!((70..130).contains(&failed), "{failed}");
        let failing = (0..200).find(|i| !outcomes[*i]).unwrap();
        assert!(matches!(
            LogCarrier::send(message(&format!("m{failing}"))),
            Err(SendError::Permanent(reason)) if reason.contains("simulated")
        ));

        testing::set_config("failure_rate", "1");
        assert!(matches!(LogCarrier::send(message("x")), Err(SendError::Permanent(_))));
        testing::set_config("failure_rate", "0");
        assert!(LogCarrier::send(message("x")).is_ok());
    }

    #[test]
    fn retry_rate_depends_on_the_id_and_the_clock() {
        testing::set_config("retry_rate", "1.0");
        assert!(matches!(LogCarrier::send(message("m")), Err(SendError::Retryable(r)) if r.contains("simulated")));

        testing::set_config("retry_rate", "0.5");
        let id = (0..100)
            .map(|i| format!("m{i}"))
            .find(|id| LogCarrier::send(message(id)).is_err())
            .unwrap();
        // Same clock, same answer; a later attempt rolls again.
        assert!(matches!(LogCarrier::send(message(&id)), Err(SendError::Retryable(_))));
        let recovered = (1..=60).any(|s| {
            testing::advance(1000 * s);
            LogCarrier::send(message(&id)).is_ok()
        });
        assert!(recovered);
    }

    #[test]
    fn invalid_rates_are_misconfigured_naming_the_setting() {
        let misconfigured = || matches!(LogCarrier::send(message("m")), Err(SendError::Permanent(r)) if r.starts_with("misconfigured:") && r.contains("`failure_rate`"));
        testing::set_config("failure_rate", "1.5");
        assert!(misconfigured());
        testing::set_config("failure_rate", "lots");
        assert!(misconfigured());
        testing::reset();
        testing::set_config("delivery_rate", "-1");
        assert!(matches!(
            LogCarrier::handle_webhook(WebhookKind::Status, request(r#"{"carrier_message_id":"log-1"}"#)),
            Err(WebhookError::Malformed(r)) if r.contains("`delivery_rate`")
        ));
    }

    #[test]
    fn explicit_receipts() {
        let events = LogCarrier::handle_webhook(
            WebhookKind::Status,
            request(
                r#"[{"carrier_message_id":"log-1","status":"delivered"},
                    {"carrier_message_id":"log-2","status":"failed","error":"handset off"},
                    {"carrier_message_id":"log-3","status":"failed"},
                    {"carrier_message_id":"log-4","status":"sent"}]"#,
            ),
        )
        .unwrap();
        let expected = [
            ("log-1", DeliveryStatus::Delivered, None),
            ("log-2", DeliveryStatus::Failed, Some("handset off")),
            ("log-3", DeliveryStatus::Failed, Some("failed")),
            ("log-4", DeliveryStatus::Sent, None),
        ];
        assert_eq!(events.len(), expected.len());
        for (event, (id, status, error)) in events.iter().zip(expected) {
            assert_eq!(
                event,
                &WebhookEvent::Delivery(DeliveryUpdate {
                    carrier_message_id: id.into(),
                    status,
                    error: error.map(String::from)
                })
            );
        }
    }

    #[test]
    fn simulated_receipts_follow_delivery_rate() {
        let body = r#"{"carrier_message_id":"log-7"}"#;
        let status = |events: Vec<WebhookEvent>| match &events[..] {
            [WebhookEvent::Delivery(update)] => update.clone(),
            other => panic!("{other:?}"),
        };
        let delivered = status(LogCarrier::handle_webhook(WebhookKind::Status, request(body)).unwrap());
        assert_eq!(delivered.status, DeliveryStatus::Delivered);
        testing::set_config("delivery_rate", "0");
        let failed = status(LogCarrier::handle_webhook(WebhookKind::Status, request(body)).unwrap());
        assert_eq!(failed.status, DeliveryStatus::Failed);
        assert_eq!(failed.error.as_deref(), Some(SIMULATED_DELIVERY_FAILURE));

        let ids: Vec<String> = (0..1000).map(|i| format!("log-{i}")).collect();
        let delivered = ids
            .iter()
            .filter(|id| {
                let body = json!({ "carrier_message_id": id }).to_string();
                let events = handle(WebhookKind::Status, body.as_bytes(), 0.8).unwrap();
                events == handle(WebhookKind::Status, body.as_bytes(), 0.8).unwrap()
                    && matches!(&events[0], WebhookEvent::Delivery(u) if u.status == DeliveryStatus::Delivered)
            })
            .count();
        assert!((750..850).contains(&delivered), "{delivered}");
    }

    #[test]
    fn inbound_messages() {
        let events = LogCarrier::handle_webhook(
            WebhookKind::Inbound,
            request(r#"{"from":"+15550101","to":"HERALD","body":"STOP"}"#),
        )
        .unwrap();
        assert_eq!(
            events,
            vec![WebhookEvent::Inbound(InboundMessage {
                from: "+15550101".into(),
                to: "HERALD".into(),
                body: "STOP".into()
            })]
        );
    }

    #[test]
    fn malformed_webhooks() {
        let cases = [
            (WebhookKind::Status, "not json", "not JSON"),
            (WebhookKind::Status, r#"{"status":"delivered"}"#, "`carrier_message_id`"),
            (
                WebhookKind::Status,
                r#"{"carrier_message_id":"a","status":"lost"}"#,
                "unknown status",
            ),
            (WebhookKind::Status, r#"{"carrier_message_id":5}"#, "must be a string"),
            (WebhookKind::Status, r#""log-1""#, "JSON object"),
            (WebhookKind::Inbound, r#"{"from":"+1","to":"+2"}"#, "`body`"),
            (WebhookKind::Inbound, "[1]", "JSON object"),
        ];
        for (kind, body, expected) in cases {
            match LogCarrier::handle_webhook(kind, request(body)) {
                Err(WebhookError::Malformed(reason)) => assert!(reason.contains(expected), "{body}: {reason}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn webhooks_need_the_shared_secret() {
        let body = r#"{"carrier_message_id":"log-1","status":"delivered"}"#;
        let unauthorized = |request: WebhookRequest| {
            let kinds = [WebhookKind::Status, WebhookKind::Inbound];
            kinds.into_iter().all(|kind| {
                matches!(
                    LogCarrier::handle_webhook(kind, request.clone()),
                    Err(WebhookError::Unauthorized(_))
                )
            })
        };
        assert!(LogCarrier::handle_webhook(WebhookKind::Status, request(body)).is_ok());
        assert!(unauthorized(unsigned(body)), "no header");
        for presented in ["hook-s3cre", "hook-s3crett", "HOOK-S3CRET", ""] {
            let mut forged = unsigned(body);
            forged.headers.push(Header::new(SECRET_HEADER, presented));
            assert!(unauthorized(forged), "{presented:?}");
        }
        // Checked before the body is parsed: a forgery learns nothing about the format.
        let mut garbage = unsigned("not json");
        garbage.headers.push(Header::new(SECRET_HEADER, "wrong"));
        assert!(unauthorized(garbage));
    }

    #[test]
    fn webhooks_are_disabled_without_a_secret() {
        for setting in [None, Some(""), Some("  ")] {
            testing::reset();
            if let Some(value) = setting {
                testing::set_config("webhook_secret", value);
            }
            let mut request = unsigned(r#"{"from":"+15550101","to":"HERALD","body":"STOP"}"#);
            request
                .headers
                .push(Header::new(SECRET_HEADER, setting.unwrap_or_default()));
            match LogCarrier::handle_webhook(WebhookKind::Inbound, request) {
                Err(WebhookError::Unauthorized(reason)) => {
                    assert!(reason.contains("disabled until `webhook_secret` is set"), "{reason}")
                }
                other => panic!("{setting:?}: {other:?}"),
            }
        }
    }
}
