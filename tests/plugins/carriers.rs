//! The shipped carriers through the real runtime: `builtin:log` receipts, and
//! `builtin:twilio` against a fake of Twilio's Messages API (wiremock).

use std::collections::BTreeMap;
use std::time::Duration;

use herald::plugin::carrier::{
    CarrierPlugin, DeliveryStatus, Encoding, Header, Message, Reach, SendError, WebhookError, WebhookEvent,
    WebhookKind, WebhookRequest,
};
use herald::plugin::http::PluginHttp;
use herald::plugin::{PluginIdentity, PluginLimits, PluginRuntime, builtin};
use herald_tests::twilio_signed;
use wiremock::{Mock, MockServer, ResponseTemplate};

const AUTH_TOKEN: &str = "twilio-test-auth-token";

fn limits() -> PluginLimits {
    PluginLimits {
        http_timeout_ms: 300,
        ..PluginLimits::default()
    }
}

async fn carrier(spec: &str, settings: &[(&str, &str)], allowed: &[&str]) -> CarrierPlugin {
    let runtime = PluginRuntime::new(limits(), Some(&herald_tests::plugin_code_cache())).unwrap();
    let identity = PluginIdentity {
        name: spec.into(),
        settings: settings
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    };
    let allowed: Vec<String> = allowed.iter().map(|h| h.to_string()).collect();
    let http = PluginHttp::new(&allowed, true, &limits()).unwrap();
    CarrierPlugin::load(&runtime, identity, http, &builtin::resolve(spec).unwrap())
        .await
        .unwrap()
}

fn message(id: &str) -> Message {
    Message {
        id: id.into(),
        to: "+15551230001".into(),
        from: "+15550000000".into(),
        body: "Hi Ada".into(),
        segments: 1,
        encoding: Encoding::Gsm7,
        metadata: vec![],
    }
}

#[tokio::test]
async fn log_carrier_accepts_and_turns_posted_receipts_into_events() {
    let log = carrier("builtin:log", &[], &[]).await;
    let accepted = log.send(&message("m-1")).await.0.unwrap().unwrap();
    assert_eq!(accepted.carrier_message_id, "log-m-1");
    assert_eq!(accepted.status, Some(DeliveryStatus::Sent));
    let receipt = WebhookRequest {
        method: "POST".into(),
        url: "http://127.0.0.1/webhooks/log/status".into(),
        query: String::new(),
        headers: vec![],
        body: br#"{"carrier_message_id": "log-m-1", "status": "delivered"}"#.to_vec(),
    };
    let refused = log.handle_webhook(WebhookKind::Status, &receipt).await.unwrap();
    assert!(
        matches!(refused, Err(WebhookError::Unauthorized(_))),
        "without webhook_secret the log carrier trusts no webhook: {refused:?}"
    );
    let log = carrier("builtin:log", &[("webhook_secret", "s3cret")], &[]).await;
    let forged = WebhookRequest {
        headers: vec![Header {
            name: "X-Herald-Webhook-Secret".into(),
            value: "guess".into(),
        }],
        ..receipt.clone()
    };
    let refused = log.handle_webhook(WebhookKind::Status, &forged).await.unwrap();
    assert!(matches!(refused, Err(WebhookError::Unauthorized(_))), "{refused:?}");
    let signed = WebhookRequest {
        headers: vec![Header {
            name: "X-Herald-Webhook-Secret".into(),
            value: "s3cret".into(),
        }],
        ..receipt
    };
    let events = log.handle_webhook(WebhookKind::Status, &signed).await.unwrap().unwrap();
    assert_delivered(&events, "log-m-1");
}

/// `events` is exactly one delivery update: `carrier_message_id` delivered.
#[track_caller]
fn assert_delivered(events: &[WebhookEvent], carrier_message_id: &str) {
    let [WebhookEvent::Delivery(update)] = events else {
        panic!("one delivery update: {events:?}");
    };
    assert_eq!(
        (update.carrier_message_id.as_str(), update.status),
        (carrier_message_id, DeliveryStatus::Delivered)
    );
}

/// A canned answer of the fake Twilio: `status` with a JSON `body`.
fn answer(status: u16, body: &'static str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_raw(body, "application/json")
}

/// Twilio's Messages API on wiremock, answering queued answers in order.
struct FakeTwilio {
    server: MockServer,
}

impl FakeTwilio {
    async fn start() -> Self {
        Self {
            server: MockServer::start().await,
        }
    }

    /// Queues the answer to the next request.
    async fn then(&self, answer: ResponseTemplate) {
        Mock::given(wiremock::matchers::method("POST"))
            .respond_with(answer)
            .up_to_n_times(1)
            .mount(&self.server)
            .await;
    }

    async fn twilio(&self) -> CarrierPlugin {
        let base_url = self.server.uri();
        let settings = [
            ("account_sid", "AC0123"),
            ("auth_token", AUTH_TOKEN),
            ("base_url", base_url.as_str()),
            ("status_callback", "https://herald.example/webhooks/twilio/status"),
        ];
        carrier("builtin:twilio", &settings, &["127.0.0.1"]).await
    }
}

#[tokio::test]
async fn twilio_send_maps_every_kind_of_answer() {
    let fake = FakeTwilio::start().await;
    let twilio = fake.twilio().await;

    fake.then(answer(201, r#"{"sid": "SM123", "status": "queued"}"#)).await;
    let accepted = twilio.send(&message("m-42")).await.0.unwrap().unwrap();
    assert_eq!(
        (accepted.carrier_message_id.as_str(), accepted.status),
        ("SM123", Some(DeliveryStatus::Sent))
    );
    let request = &fake.server.received_requests().await.expect("recorded")[0];
    assert_eq!(
        (request.method.as_str(), request.url.path()),
        ("POST", "/2010-04-01/Accounts/AC0123/Messages.json")
    );
    let authorization = request.headers.get("authorization").and_then(|v| v.to_str().ok());
    assert!(
        authorization.is_some_and(|v| v.to_ascii_lowercase().starts_with("basic ")),
        "basic auth: {:?}",
        request.headers
    );
    let form = String::from_utf8_lossy(&request.body);
    assert!(
        form.contains("herald_message_id%3Dm-42"),
        "the status callback names the message: {form}"
    );
    assert!(form.contains("To=%2B15551230001"), "form-encoded: {form}");

    let limited = answer(429, r#"{"code": 20429, "message": "Too Many Requests"}"#);
    fake.then(limited.insert_header("retry-after", "7")).await;
    let limited = twilio.send(&message("m-43")).await.0.unwrap();
    assert!(matches!(limited, Err(SendError::RateLimited(7_000))), "{limited:?}");

    fake.then(answer(
        400,
        r#"{"code": 21211, "message": "Invalid 'To' Phone Number"}"#,
    ))
    .await;
    let Err(SendError::Permanent(reason)) = twilio.send(&message("m-44")).await.0.unwrap() else {
        panic!("4xx is permanent");
    };
    assert!(reason.contains("21211"), "{reason}");

    fake.then(answer(503, r#"{"message": "unavailable"}"#)).await;
    let (result, reach) = twilio.send(&message("m-45")).await;
    assert!(matches!(result.unwrap(), Err(SendError::Retryable(_))));
    assert_eq!(reach, Reach::Answered, "Twilio said no: the outcome is known");

    // Past the plugin's 300 ms HTTP timeout.
    fake.then(answer(201, r#"{"sid": "SM-late"}"#).set_delay(Duration::from_secs(2)))
        .await;
    let (result, reach) = twilio.send(&message("m-46")).await;
    assert!(
        matches!(result.unwrap(), Err(SendError::Retryable(_))),
        "timeouts retry"
    );
    assert_eq!(
        reach,
        Reach::Unanswered,
        "the request was written and no answer came: the outcome is unknown"
    );
}

fn signed(url: &str, params: &[(&str, &str)], token: &str) -> WebhookRequest {
    let (body, signature) = twilio_signed(url, params, token);
    WebhookRequest {
        method: "POST".into(),
        url: url.into(),
        query: String::new(),
        headers: vec![
            Header {
                name: "X-Twilio-Signature".into(),
                value: signature,
            },
            Header {
                name: "Content-Type".into(),
                value: "application/x-www-form-urlencoded".into(),
            },
        ],
        body: body.into_bytes(),
    }
}

#[tokio::test]
async fn twilio_webhooks_need_a_valid_signature() {
    let fake = FakeTwilio::start().await;
    let twilio = fake.twilio().await;
    let url = "https://herald.example.com/webhooks/twilio/status";
    let params = [
        ("MessageSid", "SM123"),
        ("MessageStatus", "delivered"),
        ("AccountSid", "AC0123"),
    ];

    let events = twilio
        .handle_webhook(WebhookKind::Status, &signed(url, &params, AUTH_TOKEN))
        .await
        .unwrap()
        .unwrap();
    assert_delivered(&events, "SM123");

    let forged = signed(url, &params, "someone-elses-token");
    let refused = twilio.handle_webhook(WebhookKind::Status, &forged).await.unwrap();
    assert!(matches!(refused, Err(WebhookError::Unauthorized(_))), "{refused:?}");

    let mut tampered = signed(url, &params, AUTH_TOKEN);
    tampered.body = b"MessageSid=SM999&MessageStatus=delivered&AccountSid=AC0123".to_vec();
    let refused = twilio.handle_webhook(WebhookKind::Status, &tampered).await.unwrap();
    assert!(matches!(refused, Err(WebhookError::Unauthorized(_))), "{refused:?}");

    let inbound_url = "https://herald.example.com/webhooks/twilio/inbound";
    let stop = [("From", "+15551230001"), ("To", "+15550000000"), ("Body", "STOP")];
    let events = twilio
        .handle_webhook(WebhookKind::Inbound, &signed(inbound_url, &stop, AUTH_TOKEN))
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(events.as_slice(), [WebhookEvent::Inbound(m)] if m.body == "STOP"),
        "{events:?}"
    );
}
