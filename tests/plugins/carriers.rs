//! The shipped carriers through the real runtime: `builtin:log` receipts, and
//! `builtin:twilio` against a loopback fake of Twilio's Messages API.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use herald::plugin::carrier::{
    CarrierPlugin, DeliveryStatus, Encoding, Header, Message, Reach, SendError, WebhookError, WebhookEvent,
    WebhookKind, WebhookRequest,
};
use herald::plugin::http::PluginHttp;
use herald::plugin::{PluginIdentity, PluginLimits, PluginRuntime, builtin};
use hmac::{Hmac, Mac};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const AUTH_TOKEN: &str = "twilio-test-auth-token";

fn limits() -> PluginLimits {
    PluginLimits {
        http_timeout_ms: 300,
        ..PluginLimits::default()
    }
}

fn carrier(spec: &str, settings: &[(&str, &str)], allowed: &[&str]) -> CarrierPlugin {
    let runtime = PluginRuntime::new(limits()).unwrap();
    let identity = PluginIdentity {
        name: spec.into(),
        settings: settings
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    };
    let allowed: Vec<String> = allowed.iter().map(|h| h.to_string()).collect();
    let http = PluginHttp::new(&allowed, true, &limits()).unwrap();
    CarrierPlugin::load(&runtime, identity, http, &builtin::resolve(spec).unwrap()).unwrap()
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
    let log = carrier("builtin:log", &[], &[]);
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
    let log = carrier("builtin:log", &[("webhook_secret", "s3cret")], &[]);
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

/// One canned answer of the fake Twilio: status, extra headers, body, delay.
struct Answer {
    status: u16,
    headers: Vec<(&'static str, &'static str)>,
    body: &'static str,
    delay: Duration,
}

fn answer(status: u16, body: &'static str) -> Answer {
    Answer {
        status,
        headers: vec![],
        body,
        delay: Duration::ZERO,
    }
}

/// A loopback server answering queued responses and recording each request.
struct FakeTwilio {
    base_url: String,
    answers: Arc<Mutex<VecDeque<Answer>>>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl FakeTwilio {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let answers: Arc<Mutex<VecDeque<Answer>>> = Arc::default();
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let (queue, seen) = (answers.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buffer = vec![0u8; 64 * 1024];
                let n = socket.read(&mut buffer).await.unwrap_or(0);
                seen.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buffer[..n]).into_owned());
                let next = queue.lock().unwrap().pop_front().unwrap_or_else(|| answer(500, "{}"));
                tokio::time::sleep(next.delay).await;
                let mut head = format!(
                    "HTTP/1.1 {} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                    next.status,
                    next.body.len()
                );
                for (name, value) in &next.headers {
                    head.push_str(&format!("{name}: {value}\r\n"));
                }
                head.push_str("\r\n");
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(next.body.as_bytes()).await;
            }
        });
        Self {
            base_url: format!("http://127.0.0.1:{port}"),
            answers,
            requests,
        }
    }

    fn then(&self, answer: Answer) {
        self.answers.lock().unwrap().push_back(answer);
    }

    fn twilio(&self) -> CarrierPlugin {
        let settings = [
            ("account_sid", "AC0123"),
            ("auth_token", AUTH_TOKEN),
            ("base_url", self.base_url.as_str()),
            ("status_callback", "https://herald.example/webhooks/twilio/status"),
        ];
        carrier("builtin:twilio", &settings, &["127.0.0.1"])
    }
}

#[tokio::test]
async fn twilio_send_maps_every_kind_of_answer() {
    let fake = FakeTwilio::start().await;
    let twilio = fake.twilio();

    fake.then(answer(201, r#"{"sid": "SM123", "status": "queued"}"#));
    let accepted = twilio.send(&message("m-42")).await.0.unwrap().unwrap();
    assert_eq!(
        (accepted.carrier_message_id.as_str(), accepted.status),
        ("SM123", Some(DeliveryStatus::Sent))
    );
    let request = fake.requests.lock().unwrap()[0].clone();
    assert!(
        request.starts_with("POST /2010-04-01/Accounts/AC0123/Messages.json"),
        "{request}"
    );
    assert!(
        request.to_ascii_lowercase().contains("authorization: basic "),
        "basic auth: {request}"
    );
    assert!(
        request.contains("herald_message_id%3Dm-42"),
        "the status callback names the message: {request}"
    );
    assert!(request.contains("To=%2B15551230001"), "form-encoded: {request}");

    fake.then(Answer {
        headers: vec![("retry-after", "7")],
        ..answer(429, r#"{"code": 20429, "message": "Too Many Requests"}"#)
    });
    let limited = twilio.send(&message("m-43")).await.0.unwrap();
    assert!(matches!(limited, Err(SendError::RateLimited(7_000))), "{limited:?}");

    fake.then(answer(
        400,
        r#"{"code": 21211, "message": "Invalid 'To' Phone Number"}"#,
    ));
    let Err(SendError::Permanent(reason)) = twilio.send(&message("m-44")).await.0.unwrap() else {
        panic!("4xx is permanent");
    };
    assert!(reason.contains("21211"), "{reason}");

    fake.then(answer(503, r#"{"message": "unavailable"}"#));
    let (result, reach) = twilio.send(&message("m-45")).await;
    assert!(matches!(result.unwrap(), Err(SendError::Retryable(_))));
    assert_eq!(reach, Reach::Answered, "Twilio said no: the outcome is known");

    fake.then(Answer {
        delay: Duration::from_secs(2),
        ..answer(201, r#"{"sid": "SM-late"}"#)
    });
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
    let mut sorted = params.to_vec();
    sorted.sort();
    let mut data = url.to_string();
    for (key, value) in &sorted {
        data.push_str(key);
        data.push_str(value);
    }
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(token.as_bytes()).unwrap();
    mac.update(data.as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let body: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
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
    let twilio = fake.twilio();
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
