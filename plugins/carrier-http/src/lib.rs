//! Herald carrier plugin for in-house SMS gateways speaking JSON.
//!
//! # Sending
//!
//! `send` makes one request (`method`, default `POST`) to `url` with a JSON
//! object body:
//!
//! ```json
//! {"id": "<Herald's message id>", "to": "+15550100", "from": "ACME", "body": "Hello"}
//! ```
//!
//! The field names are settings; `id` is Herald's message id. With
//! `auth_header` and `auth_value` set, that header is sent too (e.g.
//! `Authorization: Bearer …`).
//!
//! # Idempotency
//!
//! This plugin cannot make a gateway idempotent. When a request may have
//! reached the gateway without an answer (a timeout after it was written, a
//! reset connection), Herald holds the message for reconciliation rather than
//! send it twice, unless the carrier is configured `idempotent = true`. Set
//! that only when the gateway deduplicates on the `id` field (answers a repeat
//! of an id it has seen without sending again): then Herald simply retries.
//!
//! | Gateway answer | Herald |
//! |---|---|
//! | 2xx | accepted; the carrier message id is `response_id_field` of the JSON answer (a dotted path such as `data.id` reaches into objects; a number is used as text), or Herald's message id when the answer has none |
//! | 429 | rate-limited after `Retry-After` seconds (1 s when absent) |
//! | 401, 403 | misconfigured (`misconfigured: …`, the gateway refused the credentials): Herald pauses the carrier and keeps its messages waiting |
//! | 408, 5xx, timeout, transport error | retryable |
//! | other 4xx | permanent, with the answer's text |
//!
//! A missing or invalid setting, an invalid `url` or `method`, and a `url`
//! whose host is not on the carrier's `allowed_hosts` are misconfigured too.
//!
//! # Webhooks
//!
//! A webhook is anonymous input, so every webhook request must carry the
//! `webhook_token` setting in the `X-Webhook-Token` header (compared in
//! constant time); otherwise it is `unauthorized`. Until `webhook_token` is
//! set, every webhook is `unauthorized`.
//!
//! * `/webhooks/{carrier}/status`: `{"id": "<carrier message id>", "status":
//!   "sent" | "delivered" | "failed", "error": "…"}`; `queued` and `accepted`
//!   also mean sent, `undelivered`, `rejected` and `expired` failed.
//! * `/webhooks/{carrier}/inbound`: `{"from": "…", "to": "…", "body": "…"}`.
//!
//! Either body may also be a JSON array of such objects. Anything else is
//! `malformed`.
//!
//! # Settings
//!
//! * `url` (required): the gateway's send endpoint.
//! * `method` (default `POST`).
//! * `auth_header`, `auth_value`: a header to authenticate with (both or neither).
//! * `to_field` (default `to`), `from_field` (`from`), `body_field` (`body`),
//!   `id_field` (`id`): the request's field names.
//! * `metadata_field` (unset by default): when set, the message's metadata is
//!   sent as an object under that name.
//! * `response_id_field` (default `id`): where the answer carries the gateway's id.
//! * `webhook_token`: the shared secret webhooks must present (unset: webhooks disabled).

use herald_sdk::config::{self, ConfigError};
use herald_sdk::http::{HttpError, Request, Response};
use herald_sdk::webhook;
use herald_sdk::{
    Accepted, Carrier, DeliveryStatus, DeliveryUpdate, InboundMessage, Message, SendError, WebhookError, WebhookEvent,
    WebhookKind, WebhookRequest, log,
};
use serde_json::{Map, Value};

/// How long to wait after a 429 without `Retry-After`, in milliseconds.
pub const DEFAULT_RETRY_AFTER_MS: u64 = 1_000;

/// The header webhook requests carry the shared token in.
pub const TOKEN_HEADER: &str = "X-Webhook-Token";

/// The plugin: stateless, instantiated per call.
pub struct HttpCarrier;

impl Carrier for HttpCarrier {
    fn send(message: Message) -> Result<Accepted, SendError> {
        let settings = Settings::load()?;
        let response = build_request(&message, &settings).send().map_err(|error| match error {
            // The URL and method are the `url` and `method` settings: only an operator can fix them.
            HttpError::InvalidRequest(_) => SendError::misconfigured(error),
            other => SendError::from(other),
        })?;
        let result = map_response(&response, &settings.response_id_field, &message.id);
        match &result {
            Ok(accepted) => log::debug(format!("{} accepted as {}", message.id, accepted.carrier_message_id)),
            Err(error) => log::debug(format!("{} not accepted: {error}", message.id)),
        }
        result
    }

    fn handle_webhook(kind: WebhookKind, request: WebhookRequest) -> Result<Vec<WebhookEvent>, WebhookError> {
        let token = config::get("webhook_token")
            .filter(|token| !token.trim().is_empty())
            .ok_or_else(|| {
                WebhookError::Unauthorized("webhooks are disabled until `webhook_token` is set in the settings".into())
            })?;
        handle(kind, &request, &token)
    }
}

herald_sdk::export_carrier!(HttpCarrier);

/// What `send` reads from the settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `url`.
    pub url: String,
    /// `method`, upper case.
    pub method: String,
    /// `auth_header` and `auth_value`.
    pub auth: Option<(String, String)>,
    /// `to_field`.
    pub to_field: String,
    /// `from_field`.
    pub from_field: String,
    /// `body_field`.
    pub body_field: String,
    /// `id_field`.
    pub id_field: String,
    /// `metadata_field`.
    pub metadata_field: Option<String>,
    /// `response_id_field`.
    pub response_id_field: String,
}

fn setting(key: &str, default: &str) -> String {
    config::get(key)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

impl Settings {
    /// Reads the settings; `url` is required, `auth_header` and `auth_value` go together.
    pub fn load() -> Result<Self, ConfigError> {
        let auth = match (config::get("auth_header"), config::get("auth_value")) {
            (None, None) => None,
            (Some(header), Some(value)) if !header.trim().is_empty() => Some((header.trim().to_string(), value)),
            (Some(_), _) => {
                return Err(ConfigError::Missing {
                    key: "auth_value".into(),
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError::Missing {
                    key: "auth_header".into(),
                });
            }
        };
        Ok(Self {
            url: config::require("url")?.trim().to_string(),
            method: setting("method", "POST").to_ascii_uppercase(),
            auth,
            to_field: setting("to_field", "to"),
            from_field: setting("from_field", "from"),
            body_field: setting("body_field", "body"),
            id_field: setting("id_field", "id"),
            metadata_field: config::get("metadata_field")
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty()),
            response_id_field: setting("response_id_field", "id"),
        })
    }
}

/// The gateway request for `message`.
pub fn build_request(message: &Message, settings: &Settings) -> Request {
    let mut body = Map::new();
    body.insert(settings.id_field.clone(), Value::String(message.id.clone()));
    body.insert(settings.to_field.clone(), Value::String(message.to.clone()));
    body.insert(settings.from_field.clone(), Value::String(message.from.clone()));
    body.insert(settings.body_field.clone(), Value::String(message.body.clone()));
    if let Some(field) = &settings.metadata_field {
        let metadata: Map<String, Value> = message
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        body.insert(field.clone(), Value::Object(metadata));
    }
    let mut request = Request::new(settings.method.clone(), settings.url.clone()).header("Accept", "application/json");
    if let Some((name, value)) = &settings.auth {
        request = request.header(name.as_str(), value.as_str());
    }
    request.json(&Value::Object(body))
}

/// `Retry-After` in milliseconds, [`DEFAULT_RETRY_AFTER_MS`] when absent or not a number.
pub fn retry_after_ms(response: &Response) -> u64 {
    response.retry_after_ms().unwrap_or(DEFAULT_RETRY_AFTER_MS)
}

/// The value at dotted `path` in `value` as text (strings as they are, numbers printed).
pub fn lookup(value: &Value, path: &str) -> Option<String> {
    let found = path.split('.').try_fold(value, |v, key| v.get(key))?;
    match found {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn excerpt(response: &Response) -> String {
    let text = response.text();
    let text = text.trim();
    if text.chars().count() > 200 {
        format!("{}…", text.chars().take(200).collect::<String>())
    } else {
        text.to_string()
    }
}

/// Maps the gateway's answer to `send`'s result; `message_id` is the carrier
/// message id when a 2xx answer carries none.
pub fn map_response(response: &Response, response_id_field: &str, message_id: &str) -> Result<Accepted, SendError> {
    match response.status {
        200..=299 => {
            let id = response
                .json::<Value>()
                .ok()
                .and_then(|body| lookup(&body, response_id_field));
            let id = id.unwrap_or_else(|| {
                log::warn(format!(
                    "the gateway's answer has no `{response_id_field}`: using Herald's message id {message_id}"
                ));
                message_id.to_string()
            });
            Ok(Accepted {
                carrier_message_id: id,
                status: Some(DeliveryStatus::Sent),
            })
        }
        429 => Err(SendError::RateLimited(retry_after_ms(response))),
        // Wrong credentials fail every message alike: the carrier must be paused.
        401 | 403 => Err(SendError::misconfigured(format!(
            "gateway refused the credentials (HTTP {}): {}",
            response.status,
            excerpt(response)
        ))),
        408 | 500..=599 => Err(SendError::Retryable(format!(
            "gateway HTTP {}: {}",
            response.status,
            excerpt(response)
        ))),
        400..=499 => Err(SendError::Permanent(format!(
            "gateway refused (HTTP {}): {}",
            response.status,
            excerpt(response)
        ))),
        status => Err(SendError::Retryable(format!(
            "unexpected gateway answer HTTP {status}: {}",
            excerpt(response)
        ))),
    }
}

/// Checks the token and parses the webhook body.
pub fn handle(kind: WebhookKind, request: &WebhookRequest, token: &str) -> Result<Vec<WebhookEvent>, WebhookError> {
    webhook::check_secret(request, TOKEN_HEADER, token)?;
    let value: Value = request
        .json()
        .map_err(|e| WebhookError::Malformed(format!("body is not JSON: {e}")))?;
    let items = match value {
        Value::Array(items) => items,
        other => vec![other],
    };
    items
        .iter()
        .map(|item| {
            if !item.is_object() {
                return Err(WebhookError::Malformed("each event must be a JSON object".into()));
            }
            match kind {
                WebhookKind::Status => status_update(item).map(WebhookEvent::Delivery),
                WebhookKind::Inbound => Ok(WebhookEvent::Inbound(InboundMessage {
                    from: required(item, "from")?,
                    to: required(item, "to")?,
                    body: string(item, "body")?.unwrap_or_default(),
                })),
            }
        })
        .collect()
}

fn string(item: &Value, name: &str) -> Result<Option<String>, WebhookError> {
    match item.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) if name == "id" => Ok(Some(n.to_string())),
        Some(other) => Err(WebhookError::Malformed(format!(
            "`{name}` must be a string, not {other}"
        ))),
    }
}

fn required(item: &Value, name: &str) -> Result<String, WebhookError> {
    string(item, name)?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| WebhookError::Malformed(format!("missing `{name}`")))
}

fn status_update(item: &Value) -> Result<DeliveryUpdate, WebhookError> {
    let id = required(item, "id")?;
    let raw = required(item, "status")?;
    let status = match raw.to_ascii_lowercase().as_str() {
        "sent" | "queued" | "accepted" => DeliveryStatus::Sent,
        "delivered" => DeliveryStatus::Delivered,
        "failed" | "undelivered" | "rejected" | "expired" => DeliveryStatus::Failed,
        _ => {
            return Err(WebhookError::Malformed(format!(
                "unknown status `{raw}` (sent, delivered or failed)"
            )));
        }
    };
    let error = match status {
        DeliveryStatus::Failed => Some(string(item, "error")?.unwrap_or(raw)),
        _ => None,
    };
    Ok(DeliveryUpdate {
        carrier_message_id: id,
        status,
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_sdk::{Encoding, Header, Level, testing};
    use serde_json::json;

    const URL: &str = "https://gateway.internal.example/v1/sms";

    fn message() -> Message {
        Message {
            id: "msg-1".into(),
            to: "+15550100".into(),
            from: "ACME".into(),
            body: "Hello \"there\"".into(),
            segments: 1,
            encoding: Encoding::Gsm7,
            metadata: vec![("campaign".into(), "c-9".into())],
        }
    }

    fn webhook(body: &str, token: Option<&str>) -> WebhookRequest {
        WebhookRequest {
            method: "POST".into(),
            url: "https://herald.example/webhooks/gw/status".into(),
            query: String::new(),
            headers: token.map(|t| Header::new("x-webhook-token", t)).into_iter().collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    const TOKEN: &str = "tok-123";

    /// A request with the right token; configures `webhook_token` too.
    fn signed(body: &str) -> WebhookRequest {
        testing::set_config("webhook_token", TOKEN);
        webhook(body, Some(TOKEN))
    }

    #[test]
    fn posts_json_with_default_fields() {
        testing::set_config("url", URL);
        testing::push_response(Ok(Response::new(202).with_json(&json!({"id": "gw-77"}))));
        assert_eq!(
            HttpCarrier::send(message()).unwrap(),
            Accepted {
                carrier_message_id: "gw-77".into(),
                status: Some(DeliveryStatus::Sent)
            }
        );
        let request = &testing::requests()[0];
        assert_eq!(request.method, "POST");
        assert_eq!(request.url, URL);
        assert_eq!(request.header_value("content-type"), Some("application/json"));
        assert_eq!(request.header_value("authorization"), None);
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(
            body,
            json!({"id": "msg-1", "to": "+15550100", "from": "ACME", "body": "Hello \"there\""})
        );
    }

    #[test]
    fn custom_fields_method_and_auth_header() {
        testing::set_config("url", URL);
        testing::set_config("method", "put");
        testing::set_config("auth_header", "Authorization");
        testing::set_config("auth_value", "Bearer s3cret");
        testing::set_config("to_field", "msisdn");
        testing::set_config("from_field", "sender");
        testing::set_config("body_field", "text");
        testing::set_config("id_field", "reference");
        testing::set_config("metadata_field", "tags");
        testing::set_config("response_id_field", "data.message_id");
        testing::push_response(Ok(Response::new(200).with_json(&json!({"data": {"message_id": 4711}}))));
        assert_eq!(HttpCarrier::send(message()).unwrap().carrier_message_id, "4711");
        let request = &testing::requests()[0];
        assert_eq!(request.method, "PUT");
        assert_eq!(request.header_value("authorization"), Some("Bearer s3cret"));
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(
            body,
            json!({"reference": "msg-1", "msisdn": "+15550100", "sender": "ACME", "text": "Hello \"there\"",
                   "tags": {"campaign": "c-9"}})
        );
    }

    #[test]
    fn answer_without_an_id_falls_back_to_the_message_id() {
        testing::set_config("url", URL);
        testing::push_response(Ok(Response::new(204)));
        assert_eq!(HttpCarrier::send(message()).unwrap().carrier_message_id, "msg-1");
        assert!(
            testing::logs()
                .iter()
                .any(|(level, line)| *level == Level::Warn && line.contains("`id`"))
        );
    }

    #[test]
    fn settings_errors_are_misconfigured_and_named() {
        let misconfigured = |key: &str| matches!(HttpCarrier::send(message()), Err(SendError::Permanent(r)) if r.starts_with("misconfigured:") && r.contains(key));
        assert!(misconfigured("`url`"));
        testing::set_config("url", URL);
        testing::set_config("auth_header", "X-Key");
        assert!(misconfigured("`auth_value`"));
        testing::remove_config("auth_header");
        testing::set_config("auth_value", "k");
        assert!(misconfigured("`auth_header`"));
        assert!(testing::requests().is_empty());
    }

    #[test]
    fn status_mapping() {
        let ok = |r: Response| map_response(&r, "id", "m");
        assert_eq!(
            ok(Response::new(201).with_json(&json!({"id": "x"})))
                .unwrap()
                .carrier_message_id,
            "x"
        );
        assert_eq!(
            ok(Response::new(429).with_header("Retry-After", "3")),
            Err(SendError::RateLimited(3_000))
        );
        assert_eq!(
            ok(Response::new(429)),
            Err(SendError::RateLimited(DEFAULT_RETRY_AFTER_MS))
        );
        assert_eq!(
            ok(Response::new(429).with_header("Retry-After", "soon")),
            Err(SendError::RateLimited(DEFAULT_RETRY_AFTER_MS))
        );
        for status in [401, 403] {
            let error = ok(Response::new(status).with_body("bad token")).unwrap_err();
            assert!(error.is_misconfigured(), "{status}: {error:?}");
            assert!(
                error.to_string().contains(&format!("HTTP {status}): bad token")),
                "{error}"
            );
        }
        for status in [400, 404, 422] {
            assert!(
                matches!(ok(Response::new(status).with_body("bad number")), Err(SendError::Permanent(r)) if r.contains(&status.to_string()) && r.contains("bad number")),
                "{status}"
            );
        }
        for status in [408, 500, 502, 503] {
            assert!(
                matches!(ok(Response::new(status)), Err(SendError::Retryable(_))),
                "{status}"
            );
        }
        assert!(matches!(ok(Response::new(302)), Err(SendError::Retryable(_))));
        let long = "x".repeat(1000);
        assert!(matches!(ok(Response::new(400).with_body(long)), Err(SendError::Permanent(r)) if r.len() < 300));
    }

    #[test]
    fn transport_failures() {
        testing::set_config("url", URL);
        testing::push_response(Err(HttpError::Timeout));
        testing::push_response(Err(HttpError::Transport("refused".into())));
        testing::push_response(Err(HttpError::Denied("not allowed".into())));
        testing::push_response(Err(HttpError::InvalidRequest("method \"SNED\"".into())));
        assert!(matches!(HttpCarrier::send(message()), Err(SendError::Retryable(_))));
        assert!(matches!(HttpCarrier::send(message()), Err(SendError::Retryable(_))));
        assert!(HttpCarrier::send(message()).unwrap_err().is_misconfigured());
        let invalid = HttpCarrier::send(message()).unwrap_err();
        assert!(
            invalid.is_misconfigured() && invalid.to_string().contains("SNED"),
            "{invalid}"
        );
    }

    #[test]
    fn status_webhooks() {
        let events = HttpCarrier::handle_webhook(
            WebhookKind::Status,
            signed(
                r#"[{"id":"gw-1","status":"delivered"},{"id":"gw-2","status":"failed","error":"absent"},
                    {"id":"gw-3","status":"sent"},{"id":4,"status":"undelivered"}]"#,
            ),
        )
        .unwrap();
        let update = |id: &str, status, error: Option<&str>| {
            WebhookEvent::Delivery(DeliveryUpdate {
                carrier_message_id: id.into(),
                status,
                error: error.map(String::from),
            })
        };
        assert_eq!(
            events,
            vec![
                update("gw-1", DeliveryStatus::Delivered, None),
                update("gw-2", DeliveryStatus::Failed, Some("absent")),
                update("gw-3", DeliveryStatus::Sent, None),
                update("4", DeliveryStatus::Failed, Some("undelivered")),
            ]
        );
    }

    #[test]
    fn inbound_webhooks() {
        let events = HttpCarrier::handle_webhook(
            WebhookKind::Inbound,
            signed(r#"{"from":"+15550101","to":"ACME","body":"STOP"}"#),
        )
        .unwrap();
        assert_eq!(
            events,
            vec![WebhookEvent::Inbound(InboundMessage {
                from: "+15550101".into(),
                to: "ACME".into(),
                body: "STOP".into()
            })]
        );
    }

    #[test]
    fn webhook_token() {
        let body = r#"{"id":"gw-1","status":"delivered"}"#;
        assert!(HttpCarrier::handle_webhook(WebhookKind::Status, signed(body)).is_ok());
        for presented in [None, Some("tok-12"), Some("tok-1234"), Some("TOK-123"), Some("")] {
            assert!(
                matches!(
                    HttpCarrier::handle_webhook(WebhookKind::Status, webhook(body, presented)),
                    Err(WebhookError::Unauthorized(_))
                ),
                "{presented:?}"
            );
        }
        // The token is checked before the body is looked at.
        assert!(matches!(
            HttpCarrier::handle_webhook(WebhookKind::Status, webhook("garbage", Some("wrong"))),
            Err(WebhookError::Unauthorized(_))
        ));
    }

    #[test]
    fn webhooks_are_disabled_without_a_token() {
        let body = r#"{"from":"+15550101","to":"ACME","body":"STOP"}"#;
        for setting in [None, Some(""), Some(" ")] {
            testing::reset();
            if let Some(value) = setting {
                testing::set_config("webhook_token", value);
            }
            for presented in [None, setting] {
                match HttpCarrier::handle_webhook(WebhookKind::Inbound, webhook(body, presented)) {
                    Err(WebhookError::Unauthorized(reason)) => {
                        assert!(reason.contains("disabled until `webhook_token` is set"), "{reason}")
                    }
                    other => panic!("{setting:?} {presented:?}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn malformed_webhooks() {
        let cases = [
            (WebhookKind::Status, "garbage", "not JSON"),
            (WebhookKind::Status, r#"{"status":"delivered"}"#, "`id`"),
            (WebhookKind::Status, r#"{"id":"a"}"#, "`status`"),
            (
                WebhookKind::Status,
                r#"{"id":"a","status":"teleported"}"#,
                "unknown status",
            ),
            (
                WebhookKind::Status,
                r#"{"id":"a","status":"failed","error":3}"#,
                "`error`",
            ),
            (WebhookKind::Status, "[1]", "JSON object"),
            (WebhookKind::Inbound, r#"{"to":"+1","body":"x"}"#, "`from`"),
            (WebhookKind::Inbound, r#"{"from":"+1","body":"x"}"#, "`to`"),
        ];
        for (kind, body, expected) in cases {
            match HttpCarrier::handle_webhook(kind, signed(body)) {
                Err(WebhookError::Malformed(reason)) => assert!(reason.contains(expected), "{body}: {reason}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }
}
