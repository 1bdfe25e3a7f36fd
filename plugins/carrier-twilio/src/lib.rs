//! Herald carrier plugin for Twilio Programmable Messaging.
//!
//! # Sending
//!
//! `send` makes `POST {base_url}/2010-04-01/Accounts/{account_sid}/Messages.json`
//! with HTTP basic auth `account_sid:auth_token` and a form body: `To`, `From`
//! (the message's sender, else the `from` setting), `MessagingServiceSid` (when
//! set), `Body` and `StatusCallback` (when set).
//!
//! Twilio's Messages API does not deduplicate: it takes no idempotency key,
//! and a request made twice is two messages. So Herald never re-sends blindly
//! a message whose request may have reached Twilio (a timeout or a reset after
//! the request was written): it holds it until a status callback settles it.
//! For that, `StatusCallback` is the `status_callback` setting with Herald's
//! message id added as query parameter `herald_message_id`
//! ([`herald_sdk::webhook::with_message_id`]); Twilio signs the full URL, so
//! the webhook signature covers the parameter.
//!
//! Twilio's answer maps as follows ([`map_response`]):
//!
//! | Twilio | Herald |
//! |---|---|
//! | 200/201 | accepted with the `sid`; `queued`, `accepted`, `scheduled`, `sending`, `sent` → sent; `delivered`, `read` → delivered; `failed`, `undelivered`, `canceled` → failed |
//! | 200/201 without JSON or a `sid` | outcome unknown (`SendError::outcome_unknown`): Twilio may have queued it, so Herald holds it for reconciliation |
//! | 429, or error code 20429 / 14107 | rate-limited after `Retry-After` seconds (1 s when absent) |
//! | HTTP 401 whatever the code, or error code 20003 (authenticate), 20005 (account not active), 20404 (resource not found: a wrong Account SID), 21212 (invalid `From`), 21603 (`From` required), 21606 (`From` is not an SMS-capable number of this account) | misconfigured (`misconfigured: …`): Herald pauses the carrier and keeps its messages waiting |
//! | error code 21610 (unsubscribed recipient: the number replied STOP) | opted out (`opted-out: …`): Herald fails the message and opts the contact out |
//! | 408, 5xx, timeout, transport error | retryable |
//! | other 4xx (400 with 21211 invalid `To`, 21408 region not enabled, 403 …) | permanent |
//!
//! Every refusal keeps Twilio's HTTP status, error code and message in its reason.
//!
//! # Webhooks
//!
//! Point Twilio's status callback (the `status_callback` setting) at Herald's
//! `/webhooks/{carrier}/status` and the number's "A message comes in" webhook
//! at `/webhooks/{carrier}/inbound`. Every request must carry a valid
//! `X-Twilio-Signature`: base64 of HMAC-SHA1, keyed with the auth token, over
//! the full URL Twilio called (the request's `url` plus `?query`) followed by
//! every POST form parameter sorted by name, each name immediately followed by
//! its value ([`signature`]). The comparison is constant-time; since proxies
//! differ in whether they keep a default port (`:443`), the URL is also tried
//! with the default port added or removed, as Twilio's own libraries do.
//! A missing or wrong signature is `unauthorized`.
//!
//! Status callbacks (`MessageSid`, `MessageStatus`, `ErrorCode`) become
//! delivery updates: `delivered`/`read` → delivered, `failed`/`undelivered`/
//! `canceled` → failed with the error code, `queued`/`accepted`/`scheduled`/
//! `sending`/`sent` → sent; other statuses are ignored (no event). Inbound
//! messages (`From`, `To`, `Body`) become inbound events. A request missing
//! those fields is `malformed`.
//!
//! # Settings
//!
//! * `account_sid` (required): the Account SID, `AC…`.
//! * `auth_token` (required, a secret): signs requests and verifies webhooks.
//! * `from`: the sender number, short code or alphanumeric id, used when the
//!   message has no sender of its own.
//! * `messaging_service_sid`: a Messaging Service (`MG…`) to send through;
//!   either it, `from` or the message's sender is needed.
//! * `status_callback`: the public URL of Herald's status webhook for this
//!   carrier, e.g. `https://herald.example.com/webhooks/twilio/status`; each
//!   message adds its id to it. Without it, receipts only come when the number
//!   or Messaging Service has a callback of its own, and a message whose send
//!   outcome is unknown cannot be reconciled.
//! * `base_url` (default `https://api.twilio.com`): for tests against a fake Twilio.

use base64::Engine as _;
use herald_sdk::http::{Request, Response};
use herald_sdk::{
    Accepted, Carrier, DeliveryStatus, DeliveryUpdate, InboundMessage, Message, SendError, WebhookError, WebhookEvent,
    WebhookKind, WebhookRequest, config, log, webhook,
};
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// Twilio's API when `base_url` is not set.
pub const DEFAULT_BASE_URL: &str = "https://api.twilio.com";

/// How long to wait after a 429 without `Retry-After`, in milliseconds.
pub const DEFAULT_RETRY_AFTER_MS: u64 = 1_000;

/// The header carrying the webhook signature.
pub const SIGNATURE_HEADER: &str = "X-Twilio-Signature";

/// Twilio error codes meaning "too many requests".
const RATE_LIMIT_CODES: &[i64] = &[20429, 14107];

/// Twilio error codes meaning the recipient opted out: 21610, "Attempt to send
/// to unsubscribed recipient" (the number replied STOP to this sender).
const OPTED_OUT_CODES: &[i64] = &[21610];

/// Twilio error codes meaning the account or the settings are wrong, so every
/// message would fail alike: 20003 authenticate, 20005 account not active,
/// 20404 resource not found (a wrong Account SID in the URL), 21212 invalid
/// `From`, 21603 `From` required, 21606 `From` is not an SMS-capable number of
/// this account.
const MISCONFIGURED_CODES: &[i64] = &[20003, 20005, 20404, 21212, 21603, 21606];

type HmacSha1 = Hmac<Sha1>;

/// The plugin: stateless, instantiated per call.
pub struct Twilio;

impl Carrier for Twilio {
    fn send(message: Message) -> Result<Accepted, SendError> {
        let settings = SendSettings::load()?;
        let request = build_request(&message, &settings)?;
        let response = request.send()?;
        let result = map_response(&response);
        match &result {
            Ok(accepted) => log::debug(format!(
                "{} accepted by Twilio as {}",
                message.id, accepted.carrier_message_id
            )),
            Err(error) => log::debug(format!("{} not accepted by Twilio: {error}", message.id)),
        }
        result
    }

    fn handle_webhook(kind: WebhookKind, request: WebhookRequest) -> Result<Vec<WebhookEvent>, WebhookError> {
        let token = config::require("auth_token").map_err(|e| WebhookError::Unauthorized(e.to_string()))?;
        handle(kind, &request, &token)
    }
}

herald_sdk::export_carrier!(Twilio);

/// What `send` reads from the settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendSettings {
    /// `base_url`, without a trailing `/`.
    pub base_url: String,
    /// `account_sid`.
    pub account_sid: String,
    /// `auth_token`.
    pub auth_token: String,
    /// `from`.
    pub from: Option<String>,
    /// `messaging_service_sid`.
    pub messaging_service_sid: Option<String>,
    /// `status_callback`.
    pub status_callback: Option<String>,
}

fn optional(key: &str) -> Option<String> {
    config::get(key).map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

impl SendSettings {
    /// Reads the settings; a missing `account_sid` or `auth_token` is an error naming it.
    pub fn load() -> Result<Self, SendError> {
        Ok(Self {
            base_url: optional("base_url")
                .unwrap_or_else(|| DEFAULT_BASE_URL.into())
                .trim_end_matches('/')
                .to_string(),
            account_sid: config::require("account_sid")?.trim().to_string(),
            auth_token: config::require("auth_token")?,
            from: optional("from"),
            messaging_service_sid: optional("messaging_service_sid"),
            status_callback: optional("status_callback"),
        })
    }
}

/// The Messages API request for `message`.
pub fn build_request(message: &Message, settings: &SendSettings) -> Result<Request, SendError> {
    let from = Some(message.from.trim())
        .filter(|f| !f.is_empty())
        .map(String::from)
        .or_else(|| settings.from.clone());
    if from.is_none() && settings.messaging_service_sid.is_none() {
        return Err(SendError::misconfigured(
            "no sender: the message has none and neither setting `from` nor `messaging_service_sid` is set",
        ));
    }
    let mut form: Vec<(&str, &str)> = vec![("To", &message.to)];
    if let Some(from) = &from {
        form.push(("From", from));
    }
    if let Some(service) = &settings.messaging_service_sid {
        form.push(("MessagingServiceSid", service));
    }
    form.push(("Body", &message.body));
    // Names the message in its receipts, so Herald can settle a send whose answer it never got.
    let callback = settings
        .status_callback
        .as_deref()
        .map(|url| webhook::with_message_id(url, &message.id));
    if let Some(callback) = &callback {
        form.push(("StatusCallback", callback));
    }
    let url = format!(
        "{}/2010-04-01/Accounts/{}/Messages.json",
        settings.base_url, settings.account_sid
    );
    Ok(Request::post(url)
        .basic_auth(&settings.account_sid, &settings.auth_token)
        .header("Accept", "application/json")
        .form(&form))
}

/// Maps a Twilio message status to Herald's, `None` for statuses that say nothing new.
pub fn map_status(status: &str) -> Option<DeliveryStatus> {
    match status {
        "queued" | "accepted" | "scheduled" | "sending" | "sent" => Some(DeliveryStatus::Sent),
        "delivered" | "read" => Some(DeliveryStatus::Delivered),
        "failed" | "undelivered" | "canceled" => Some(DeliveryStatus::Failed),
        _ => None,
    }
}

/// `Retry-After` in milliseconds, [`DEFAULT_RETRY_AFTER_MS`] when absent or not a number.
pub fn retry_after_ms(response: &Response) -> u64 {
    response.retry_after_ms().unwrap_or(DEFAULT_RETRY_AFTER_MS)
}

/// Maps the Messages API's answer to `send`'s result.
pub fn map_response(response: &Response) -> Result<Accepted, SendError> {
    let body: Option<serde_json::Value> = response.json().ok();
    let code = body.as_ref().and_then(|b| b["code"].as_i64());
    let describe = || {
        let message = body
            .as_ref()
            .and_then(|b| b["message"].as_str().map(String::from))
            .unwrap_or_else(|| response.text().chars().take(200).collect());
        match code {
            Some(code) => format!("Twilio HTTP {} error {code}: {message}", response.status),
            None => format!("Twilio HTTP {}: {message}", response.status),
        }
    };
    if response.status == 429 || code.is_some_and(|c| RATE_LIMIT_CODES.contains(&c)) {
        return Err(SendError::RateLimited(retry_after_ms(response)));
    }
    let refused = !response.is_success();
    // Bad credentials or a foreign sender fail every message alike: the carrier must be paused.
    if refused && (response.status == 401 || code.is_some_and(|c| MISCONFIGURED_CODES.contains(&c))) {
        return Err(SendError::misconfigured(describe()));
    }
    if refused && code.is_some_and(|c| OPTED_OUT_CODES.contains(&c)) {
        return Err(SendError::opted_out(describe()));
    }
    match response.status {
        200 | 201 => {
            let body =
                // Twilio may have queued it: never send it again blindly.
                body.ok_or_else(|| SendError::outcome_unknown(format!("Twilio answered {} without JSON", response.status)))?;
            let sid = body["sid"].as_str().filter(|s| !s.is_empty()).ok_or_else(|| {
                SendError::outcome_unknown(format!("Twilio answered {} without a `sid`", response.status))
            })?;
            Ok(Accepted {
                carrier_message_id: sid.to_string(),
                status: body["status"].as_str().and_then(map_status),
            })
        }
        408 | 500..=599 => Err(SendError::Retryable(describe())),
        400..=499 => Err(SendError::Permanent(describe())),
        _ => Err(SendError::Retryable(format!("unexpected answer: {}", describe()))),
    }
}

/// `X-Twilio-Signature` for a request to `url` with POST form `params`:
/// base64(HMAC-SHA1(auth_token, url + each param name and value, sorted by name then value)).
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    base64::engine::general_purpose::STANDARD.encode(mac(auth_token, url, params).finalize().into_bytes())
}

fn mac(auth_token: &str, url: &str, params: &[(String, String)]) -> HmacSha1 {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac = HmacSha1::new_from_slice(auth_token.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    mac
}

/// `url` as given, then with its scheme's default port removed (when present)
/// or added (when absent): Twilio signs the URL it was configured with, and
/// proxies differ in keeping `:443`.
pub fn url_variants(url: &str) -> Vec<String> {
    let mut variants = vec![url.to_string()];
    let (scheme, port) = if let Some(rest) = url.strip_prefix("https://") {
        (("https://", rest), ":443")
    } else if let Some(rest) = url.strip_prefix("http://") {
        (("http://", rest), ":80")
    } else {
        return variants;
    };
    let (prefix, rest) = scheme;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, host) = match authority.rfind('@') {
        Some(at) => authority.split_at(at + 1),
        None => ("", authority),
    };
    if let Some(bare) = host.strip_suffix(port) {
        variants.push(format!("{prefix}{userinfo}{bare}{tail}"));
    } else if !host.ends_with(']') && host.contains(':') {
        // Another explicit port: nothing to vary.
    } else {
        variants.push(format!("{prefix}{userinfo}{host}{port}{tail}"));
    }
    variants
}

/// Checks `request`'s `X-Twilio-Signature` (constant-time) and returns the
/// request's parameters: the form body for POST, the query for GET.
pub fn verify(request: &WebhookRequest, auth_token: &str) -> Result<Vec<(String, String)>, WebhookError> {
    let header = request
        .header(SIGNATURE_HEADER)
        .ok_or_else(|| WebhookError::Unauthorized(format!("missing {SIGNATURE_HEADER}")))?;
    let expected = base64::engine::general_purpose::STANDARD
        .decode(header.trim())
        .map_err(|_| WebhookError::Unauthorized(format!("{SIGNATURE_HEADER} is not base64")))?;
    let is_get = request.method.eq_ignore_ascii_case("GET");
    let signed_params = if is_get { Vec::new() } else { request.form() };
    let full_url = if request.query.is_empty() {
        request.url.clone()
    } else {
        format!("{}?{}", request.url, request.query)
    };
    let valid = url_variants(&full_url)
        .iter()
        .any(|url| mac(auth_token, url, &signed_params).verify_slice(&expected).is_ok());
    if !valid {
        return Err(WebhookError::Unauthorized(format!(
            "{SIGNATURE_HEADER} does not match (is the webhook URL Herald sees the one configured at Twilio?)"
        )));
    }
    Ok(if is_get { request.query_pairs() } else { signed_params })
}

/// Verifies and parses a webhook request.
pub fn handle(
    kind: WebhookKind,
    request: &WebhookRequest,
    auth_token: &str,
) -> Result<Vec<WebhookEvent>, WebhookError> {
    let params = verify(request, auth_token)?;
    let field = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    let required = |name: &str| field(name).ok_or_else(|| WebhookError::Malformed(format!("missing `{name}`")));
    match kind {
        WebhookKind::Status => {
            let sid = required("MessageSid")?;
            let raw = field("MessageStatus")
                .or_else(|| field("SmsStatus"))
                .ok_or_else(|| WebhookError::Malformed("missing `MessageStatus`".into()))?;
            let Some(status) = map_status(&raw) else {
                log::debug(format!("ignoring Twilio status `{raw}` for {sid}"));
                return Ok(Vec::new());
            };
            let error = (status == DeliveryStatus::Failed).then(|| match (field("ErrorCode"), field("ErrorMessage")) {
                (Some(code), Some(message)) => format!("Twilio error {code}: {message}"),
                (Some(code), None) => format!("Twilio error {code}"),
                (None, Some(message)) => message,
                (None, None) => format!("Twilio status {raw}"),
            });
            Ok(vec![WebhookEvent::Delivery(DeliveryUpdate {
                carrier_message_id: sid,
                status,
                error,
            })])
        }
        WebhookKind::Inbound => Ok(vec![WebhookEvent::Inbound(InboundMessage {
            from: required("From")?,
            to: required("To")?,
            // An MMS may come with no text.
            body: field("Body").unwrap_or_default(),
        })]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_sdk::http::HttpError;
    use herald_sdk::{Encoding, Header, testing};
    use serde_json::json;

    const SID: &str = "AC00000000000000000000000000000000";
    const TOKEN: &str = "secret-token";

    fn message() -> Message {
        Message {
            id: "msg-1".into(),
            to: "+15550100".into(),
            from: String::new(),
            body: "Hello & welcome".into(),
            segments: 1,
            encoding: Encoding::Gsm7,
            metadata: vec![],
        }
    }

    fn configure() {
        testing::set_config("account_sid", SID);
        testing::set_config("auth_token", TOKEN);
        testing::set_config("from", "+15550199");
    }

    fn twilio_error(status: u16, code: i64, message: &str) -> Response {
        Response::new(status).with_json(&json!({
            "code": code, "message": message, "more_info": format!("https://www.twilio.com/docs/errors/{code}"), "status": status
        }))
    }

    #[test]
    fn sends_a_form_with_basic_auth_and_the_message_id_in_the_status_callback() {
        configure();
        testing::set_config("status_callback", "https://herald.example.com/webhooks/twilio/status");
        testing::push_response(Ok(
            Response::new(201).with_json(&json!({"sid": "SM123", "status": "queued"}))
        ));
        assert_eq!(
            Twilio::send(message()).unwrap(),
            Accepted {
                carrier_message_id: "SM123".into(),
                status: Some(DeliveryStatus::Sent)
            }
        );
        let requests = testing::requests();
        assert_eq!(requests.len(), 1);
        let request = &requests[0];
        assert_eq!(request.method, "POST");
        assert_eq!(
            request.url,
            format!("https://api.twilio.com/2010-04-01/Accounts/{SID}/Messages.json")
        );
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{SID}:{TOKEN}"));
        assert_eq!(
            request.header_value("authorization"),
            Some(format!("Basic {basic}").as_str())
        );
        // Twilio's Messages API takes no idempotency header; only its own webhooks carry one.
        assert!(
            !request
                .headers
                .iter()
                .any(|h| h.name.to_ascii_lowercase().contains("idempotency")),
            "{:?}",
            request.headers
        );
        assert_eq!(
            request.header_value("content-type"),
            Some("application/x-www-form-urlencoded")
        );
        let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
        assert_eq!(
            request.form_pairs(),
            vec![
                pair("To", "+15550100"),
                pair("From", "+15550199"),
                pair("Body", "Hello & welcome"),
                pair(
                    "StatusCallback",
                    "https://herald.example.com/webhooks/twilio/status?herald_message_id=msg-1"
                ),
            ]
        );
        assert!(request.body_text().contains("To=%2B15550100"));
    }

    #[test]
    fn sender_precedence_and_messaging_service() {
        configure();
        testing::set_config("base_url", "http://127.0.0.1:9999/");
        testing::set_config("messaging_service_sid", "MG1");
        testing::on_request(|_| Ok(Response::new(201).with_json(&json!({"sid": "SM1", "status": "accepted"}))));
        let mut own = message();
        own.from = "ACME".into();
        Twilio::send(own).unwrap();
        testing::remove_config("from");
        Twilio::send(message()).unwrap();
        let requests = testing::requests();
        assert!(
            requests[0]
                .url
                .starts_with("http://127.0.0.1:9999/2010-04-01/Accounts/")
        );
        let names = |i: usize| -> Vec<(String, String)> { requests[i].form_pairs() };
        assert!(names(0).contains(&("From".into(), "ACME".into())));
        assert!(names(0).contains(&("MessagingServiceSid".into(), "MG1".into())));
        assert!(!names(1).iter().any(|(k, _)| k == "From"));
        assert!(names(1).contains(&("MessagingServiceSid".into(), "MG1".into())));
        assert!(!names(1).iter().any(|(k, _)| k == "StatusCallback"));

        testing::remove_config("messaging_service_sid");
        let no_sender = Twilio::send(message()).unwrap_err();
        assert!(no_sender.is_misconfigured(), "{no_sender:?}");
        assert!(no_sender.to_string().contains("`from`"), "{no_sender}");
        assert_eq!(testing::requests().len(), 2, "no request without a sender");
    }

    #[test]
    fn missing_credentials_are_misconfigured_and_named() {
        let misconfigured = |key: &str| matches!(Twilio::send(message()), Err(SendError::Permanent(r)) if r.starts_with("misconfigured:") && r.contains(key));
        assert!(misconfigured("`account_sid`"));
        testing::set_config("account_sid", SID);
        assert!(misconfigured("`auth_token`"));
        assert!(testing::requests().is_empty());
    }

    #[test]
    fn accepted_statuses() {
        let cases = [
            ("queued", Some(DeliveryStatus::Sent)),
            ("accepted", Some(DeliveryStatus::Sent)),
            ("sending", Some(DeliveryStatus::Sent)),
            ("sent", Some(DeliveryStatus::Sent)),
            ("delivered", Some(DeliveryStatus::Delivered)),
            ("failed", Some(DeliveryStatus::Failed)),
            ("undelivered", Some(DeliveryStatus::Failed)),
            ("something-new", None),
        ];
        for (twilio, expected) in cases {
            let response = Response::new(201).with_json(&json!({"sid": "SM9", "status": twilio}));
            assert_eq!(map_response(&response).unwrap().status, expected, "{twilio}");
        }
        let ok = Response::new(200).with_json(&json!({"sid": "SM9"}));
        assert_eq!(map_response(&ok).unwrap().carrier_message_id, "SM9");
        // A success Herald cannot match to a message: held, never sent again blindly.
        assert!(
            matches!(map_response(&Response::new(201).with_json(&json!({}))), Err(SendError::Retryable(r)) if r.starts_with(herald_sdk::OUTCOME_UNKNOWN_PREFIX) && r.contains("sid"))
        );
        assert!(matches!(
            map_response(&Response::new(201).with_body("<html>")),
            Err(SendError::Retryable(r)) if r.starts_with(herald_sdk::OUTCOME_UNKNOWN_PREFIX)
        ));
    }

    #[test]
    fn rate_limits() {
        let with_header = Response::new(429)
            .with_header("Retry-After", "7")
            .with_json(&json!({"code": 20429, "message": "Too Many Requests"}));
        assert_eq!(map_response(&with_header), Err(SendError::RateLimited(7_000)));
        assert_eq!(
            map_response(&Response::new(429)),
            Err(SendError::RateLimited(DEFAULT_RETRY_AFTER_MS))
        );
        let date = Response::new(429).with_header("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT");
        assert_eq!(map_response(&date), Err(SendError::RateLimited(DEFAULT_RETRY_AFTER_MS)));
        assert_eq!(
            map_response(&Response::new(429).with_header("Retry-After", "0.5")),
            Err(SendError::RateLimited(500))
        );
        // The error code alone, whatever the HTTP status.
        assert_eq!(
            map_response(&twilio_error(400, 20429, "Too Many Requests")),
            Err(SendError::RateLimited(1_000))
        );
        assert_eq!(
            map_response(&twilio_error(400, 14107, "rate limit")),
            Err(SendError::RateLimited(1_000))
        );
    }

    /// What a refusal's reason says it is.
    #[derive(Debug, PartialEq)]
    enum Refusal {
        Permanent,
        OptedOut,
        Misconfigured,
    }

    fn refusal(error: &SendError) -> Refusal {
        match error {
            e if e.is_opted_out() => Refusal::OptedOut,
            e if e.is_misconfigured() => Refusal::Misconfigured,
            SendError::Permanent(_) => Refusal::Permanent,
            other => panic!("not a refusal: {other:?}"),
        }
    }

    #[test]
    fn client_errors_map_by_code_keeping_code_and_message() {
        let cases = [
            (
                400,
                21211,
                "The 'To' number +1555 is not a valid phone number.",
                Refusal::Permanent,
            ),
            (
                400,
                21408,
                "Permission to send an SMS has not been enabled for the region",
                Refusal::Permanent,
            ),
            (
                403,
                20008,
                "Resource not accessible with Test Account Credentials",
                Refusal::Permanent,
            ),
            (
                400,
                21610,
                "Attempt to send to unsubscribed recipient",
                Refusal::OptedOut,
            ),
            (401, 20003, "Authenticate", Refusal::Misconfigured),
            (401, 20001, "Unknown", Refusal::Misconfigured),
            (403, 20003, "Forbidden", Refusal::Misconfigured),
            (401, 20005, "Account not active", Refusal::Misconfigured),
            (
                404,
                20404,
                "The requested resource /2010-04-01/Accounts/AC0/Messages.json was not found",
                Refusal::Misconfigured,
            ),
            (
                400,
                21212,
                "The 'From' number +1555 is not a valid phone number, shortcode, or alphanumeric sender ID.",
                Refusal::Misconfigured,
            ),
            (
                400,
                21603,
                "The 'From' phone number is required.",
                Refusal::Misconfigured,
            ),
            (
                400,
                21606,
                "The 'From' phone number provided is not a valid message-capable Twilio phone number for this destination/account.",
                Refusal::Misconfigured,
            ),
        ];
        for (status, code, text, expected) in cases {
            let error = map_response(&twilio_error(status, code, text)).unwrap_err();
            assert_eq!(refusal(&error), expected, "{status} {code}");
            let reason = error.to_string();
            assert!(
                reason.contains(&format!("Twilio HTTP {status} error {code}: {text}")),
                "{reason}"
            );
        }
        // 401 without a JSON body is bad credentials too; other bodies keep their text.
        assert_eq!(
            refusal(&map_response(&Response::new(401)).unwrap_err()),
            Refusal::Misconfigured
        );
        assert!(
            matches!(map_response(&Response::new(400).with_body("nope")), Err(SendError::Permanent(r)) if r == "Twilio HTTP 400: nope")
        );
        // The codes only count in a refusal.
        let accepted = Response::new(201).with_json(&json!({"sid": "SM1", "status": "queued", "code": 21610}));
        assert!(map_response(&accepted).is_ok());
    }

    #[test]
    fn opted_out_through_send() {
        configure();
        testing::push_response(Ok(twilio_error(
            400,
            21610,
            "Attempt to send to unsubscribed recipient",
        )));
        assert_eq!(
            Twilio::send(message()),
            Err(SendError::Permanent(
                "opted-out: Twilio HTTP 400 error 21610: Attempt to send to unsubscribed recipient".into()
            ))
        );
    }

    #[test]
    fn server_errors_timeouts_and_transport_are_retryable() {
        configure();
        testing::push_response(Ok(twilio_error(500, 20500, "Internal Server Error")));
        testing::push_response(Ok(Response::new(503)));
        testing::push_response(Err(HttpError::Timeout));
        testing::push_response(Err(HttpError::Transport("connection reset".into())));
        testing::push_response(Ok(Response::new(408)));
        assert!(matches!(Twilio::send(message()), Err(SendError::Retryable(r)) if r.contains("20500")));
        assert!(matches!(Twilio::send(message()), Err(SendError::Retryable(r)) if r.contains("503")));
        assert!(matches!(Twilio::send(message()), Err(SendError::Retryable(r)) if r.contains("timed out")));
        assert!(matches!(Twilio::send(message()), Err(SendError::Retryable(r)) if r.contains("connection reset")));
        assert!(matches!(Twilio::send(message()), Err(SendError::Retryable(_))));
        // Not on allowed_hosts: the operator's configuration.
        testing::push_response(Err(HttpError::Denied("api.twilio.com is not allowed".into())));
        assert!(Twilio::send(message()).unwrap_err().is_misconfigured());
    }

    // ---- webhooks ----------------------------------------------------------

    // Expected signatures computed independently with Python:
    //   s = url + "".join(k + v for k, v in sorted(params))
    //   base64.b64encode(hmac.new(token.encode(), s.encode(), hashlib.sha1).digest())
    const STATUS_URL: &str = "https://herald.example.com/webhooks/twilio/status";
    const STATUS_BODY: &str = "MessageSid=SM0123456789abcdef0123456789abcdef&MessageStatus=undelivered&ErrorCode=30003\
        &AccountSid=AC00000000000000000000000000000000&To=%2B15550100&From=%2B15550199&SmsStatus=undelivered";
    const STATUS_SIGNATURE: &str = "B7hIwnDCARVvISMs+uekFgXgCOQ=";
    const INBOUND_URL: &str = "https://herald.example.com/webhooks/twilio/inbound";
    const INBOUND_QUERY: &str = "tenant=a";
    const INBOUND_BODY: &str = "From=%2B15550101&To=%2B15550199&Body=Hi+%26+bye+%3D+ok%3F+%C3%A9&MessageSid=SM1";
    const INBOUND_SIGNATURE: &str = "sx7pyrYxW3PCwSH03McLLg4IyEI=";

    fn webhook(url: &str, query: &str, body: &str, signature: Option<&str>) -> WebhookRequest {
        WebhookRequest {
            method: "POST".into(),
            url: url.into(),
            query: query.into(),
            headers: signature
                .map(|s| vec![Header::new("x-twilio-signature", s)])
                .into_iter()
                .flatten()
                .chain([Header::new("Content-Type", "application/x-www-form-urlencoded")])
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn signature_matches_independent_vectors() {
        // The example from Twilio's security documentation, with its token "12345".
        let params: Vec<(String, String)> = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            signature("12345", "https://example.com/myapp.php?foo=1&bar=2", &params),
            "vNe7KK2kJwCsxc9K3OLkkKB3qqI="
        );
        let status = webhook(STATUS_URL, "", STATUS_BODY, None);
        assert_eq!(signature(TOKEN, STATUS_URL, &status.form()), STATUS_SIGNATURE);
        let inbound = webhook(INBOUND_URL, "", INBOUND_BODY, None);
        assert_eq!(
            signature(TOKEN, &format!("{INBOUND_URL}?{INBOUND_QUERY}"), &inbound.form()),
            INBOUND_SIGNATURE
        );
    }

    #[test]
    fn status_callback_with_valid_signature() {
        testing::set_config("auth_token", TOKEN);
        let events = Twilio::handle_webhook(
            WebhookKind::Status,
            webhook(STATUS_URL, "", STATUS_BODY, Some(STATUS_SIGNATURE)),
        )
        .unwrap();
        assert_eq!(
            events,
            vec![WebhookEvent::Delivery(DeliveryUpdate {
                carrier_message_id: "SM0123456789abcdef0123456789abcdef".into(),
                status: DeliveryStatus::Failed,
                error: Some("Twilio error 30003".into()),
            })]
        );
    }

    #[test]
    fn inbound_with_valid_signature_and_query() {
        testing::set_config("auth_token", TOKEN);
        let events = Twilio::handle_webhook(
            WebhookKind::Inbound,
            webhook(INBOUND_URL, INBOUND_QUERY, INBOUND_BODY, Some(INBOUND_SIGNATURE)),
        )
        .unwrap();
        assert_eq!(
            events,
            vec![WebhookEvent::Inbound(InboundMessage {
                from: "+15550101".into(),
                to: "+15550199".into(),
                body: "Hi & bye = ok? é".into(),
            })]
        );
    }

    #[test]
    fn rejected_signatures() {
        testing::set_config("auth_token", TOKEN);
        let unauthorized = |request: WebhookRequest| {
            matches!(
                Twilio::handle_webhook(WebhookKind::Status, request),
                Err(WebhookError::Unauthorized(_))
            )
        };
        assert!(unauthorized(webhook(STATUS_URL, "", STATUS_BODY, None)), "missing");
        assert!(
            unauthorized(webhook(STATUS_URL, "", STATUS_BODY, Some("not base64!"))),
            "garbage"
        );
        assert!(
            unauthorized(webhook(STATUS_URL, "", STATUS_BODY, Some(INBOUND_SIGNATURE))),
            "another request's"
        );
        let tampered = STATUS_BODY.replace("undelivered", "delivered");
        assert!(
            unauthorized(webhook(STATUS_URL, "", &tampered, Some(STATUS_SIGNATURE))),
            "tampered body"
        );
        assert!(
            unauthorized(webhook(STATUS_URL, "x=1", STATUS_BODY, Some(STATUS_SIGNATURE))),
            "extra query"
        );
        assert!(
            unauthorized(webhook(INBOUND_URL, "", INBOUND_BODY, Some(INBOUND_SIGNATURE))),
            "query dropped"
        );
        let other_host = STATUS_URL.replace("herald.example.com", "evil.example.com");
        assert!(
            unauthorized(webhook(&other_host, "", STATUS_BODY, Some(STATUS_SIGNATURE))),
            "other URL"
        );
        testing::set_config("auth_token", "another-token");
        assert!(
            unauthorized(webhook(STATUS_URL, "", STATUS_BODY, Some(STATUS_SIGNATURE))),
            "other token"
        );
        testing::remove_config("auth_token");
        assert!(
            matches!(
                Twilio::handle_webhook(WebhookKind::Status, webhook(STATUS_URL, "", STATUS_BODY, Some(STATUS_SIGNATURE))),
                Err(WebhookError::Unauthorized(r)) if r.contains("`auth_token`")
            ),
            "no token configured"
        );
    }

    #[test]
    fn default_port_is_tolerated() {
        let with_port = STATUS_URL.replace(".com/", ".com:443/");
        assert_eq!(
            url_variants(STATUS_URL),
            vec![STATUS_URL.to_string(), with_port.clone()]
        );
        assert_eq!(
            url_variants(&with_port),
            vec![with_port.clone(), STATUS_URL.to_string()]
        );
        assert_eq!(url_variants("http://h:8080/x?a=1").len(), 1);
        assert_eq!(
            url_variants("http://h/x?a=1"),
            vec!["http://h/x?a=1", "http://h:80/x?a=1"]
        );
        assert_eq!(
            url_variants("https://h?a=1"),
            vec!["https://h?a=1", "https://h:443?a=1"]
        );
        let request = webhook(&with_port, "", STATUS_BODY, Some(STATUS_SIGNATURE));
        assert!(handle(WebhookKind::Status, &request, TOKEN).is_ok());
    }

    fn signed(url: &str, pairs: &[(&str, &str)]) -> WebhookRequest {
        let params: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let body = form_body(&params);
        let sig = signature(TOKEN, url, &params);
        webhook(url, "", &body, Some(&sig))
    }

    fn form_body(params: &[(String, String)]) -> String {
        params
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect::<Vec<_>>()
            .join("&")
    }

    fn encode(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    }

    #[test]
    fn each_status_callback_mapping() {
        let cases = [
            ("queued", Some((DeliveryStatus::Sent, None))),
            ("accepted", Some((DeliveryStatus::Sent, None))),
            ("sending", Some((DeliveryStatus::Sent, None))),
            ("sent", Some((DeliveryStatus::Sent, None))),
            ("delivered", Some((DeliveryStatus::Delivered, None))),
            ("read", Some((DeliveryStatus::Delivered, None))),
            ("failed", Some((DeliveryStatus::Failed, Some("Twilio error 30006")))),
            (
                "undelivered",
                Some((DeliveryStatus::Failed, Some("Twilio error 30006"))),
            ),
            ("receiving", None),
        ];
        for (twilio, expected) in cases {
            let mut pairs = vec![("MessageSid", "SM7"), ("MessageStatus", twilio)];
            if twilio == "failed" || twilio == "undelivered" {
                pairs.push(("ErrorCode", "30006"));
            }
            let events = handle(WebhookKind::Status, &signed(STATUS_URL, &pairs), TOKEN).unwrap();
            let expected: Vec<WebhookEvent> = expected
                .map(|(status, error)| {
                    WebhookEvent::Delivery(DeliveryUpdate {
                        carrier_message_id: "SM7".into(),
                        status,
                        error: error.map(String::from),
                    })
                })
                .into_iter()
                .collect();
            assert_eq!(events, expected, "{twilio}");
        }
        let with_message = signed(
            STATUS_URL,
            &[
                ("MessageSid", "SM8"),
                ("MessageStatus", "failed"),
                ("ErrorCode", "30003"),
                ("ErrorMessage", "Unreachable"),
            ],
        );
        assert!(matches!(
            &handle(WebhookKind::Status, &with_message, TOKEN).unwrap()[0],
            WebhookEvent::Delivery(u) if u.error.as_deref() == Some("Twilio error 30003: Unreachable")
        ));
        let no_code = signed(STATUS_URL, &[("MessageSid", "SM9"), ("MessageStatus", "undelivered")]);
        assert!(matches!(
            &handle(WebhookKind::Status, &no_code, TOKEN).unwrap()[0],
            WebhookEvent::Delivery(u) if u.error.as_deref() == Some("Twilio status undelivered")
        ));
    }

    #[test]
    fn malformed_but_signed_requests() {
        let cases = [
            (
                WebhookKind::Status,
                vec![("MessageStatus", "delivered")],
                "`MessageSid`",
            ),
            (WebhookKind::Status, vec![("MessageSid", "SM1")], "`MessageStatus`"),
            (WebhookKind::Inbound, vec![("To", "+1"), ("Body", "hi")], "`From`"),
            (WebhookKind::Inbound, vec![("From", "+1"), ("Body", "hi")], "`To`"),
        ];
        for (kind, pairs, expected) in cases {
            match handle(kind, &signed(STATUS_URL, &pairs), TOKEN) {
                Err(WebhookError::Malformed(reason)) => assert!(reason.contains(expected), "{reason}"),
                other => panic!("{pairs:?}: {other:?}"),
            }
        }
        let garbage = signed(STATUS_URL, &[]);
        let garbage = WebhookRequest {
            body: b"{\"json\": true}".to_vec(),
            headers: vec![Header::new(
                SIGNATURE_HEADER,
                signature(TOKEN, STATUS_URL, &[("{\"json\": true}".into(), String::new())]),
            )],
            ..garbage
        };
        assert!(matches!(
            handle(WebhookKind::Status, &garbage, TOKEN),
            Err(WebhookError::Malformed(_))
        ));
    }

    #[test]
    fn status_callback_url_round_trips_with_the_message_id_signed() {
        configure();
        testing::set_config("status_callback", format!("{STATUS_URL}?tenant=a"));
        testing::push_response(Ok(
            Response::new(201).with_json(&json!({"sid": "SM1", "status": "queued"}))
        ));
        let mut with_odd_id = message();
        with_odd_id.id = "m 1&x=2".into();
        Twilio::send(with_odd_id).unwrap();
        let pairs = testing::requests()[0].form_pairs();
        let callback = &pairs.iter().find(|(k, _)| k == "StatusCallback").unwrap().1;
        assert_eq!(
            callback,
            &format!("{STATUS_URL}?tenant=a&herald_message_id=m+1%26x%3D2")
        );

        // Twilio calls that URL and signs it whole; Herald splits off the query.
        let params = [("MessageSid", "SM1"), ("MessageStatus", "delivered")];
        let params: Vec<(String, String)> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let (url, query) = callback.split_once('?').unwrap();
        let mut request = webhook(
            url,
            query,
            &form_body(&params),
            Some(&signature(TOKEN, callback, &params)),
        );
        assert_eq!(handle(WebhookKind::Status, &request, TOKEN).unwrap().len(), 1);
        assert!(
            request
                .query_pairs()
                .contains(&(webhook::MESSAGE_ID_PARAM.into(), "m 1&x=2".into()))
        );
        // Pointing the receipt at another message breaks the signature.
        request.query = request.query.replace("m+1", "m+2");
        assert!(matches!(
            handle(WebhookKind::Status, &request, TOKEN),
            Err(WebhookError::Unauthorized(_))
        ));
    }

    #[test]
    fn get_webhooks_sign_the_query_only() {
        let query = "MessageSid=SM5&MessageStatus=delivered";
        let request = WebhookRequest {
            method: "GET".into(),
            url: STATUS_URL.into(),
            query: query.into(),
            headers: vec![Header::new(
                SIGNATURE_HEADER,
                signature(TOKEN, &format!("{STATUS_URL}?{query}"), &[]),
            )],
            body: Vec::new(),
        };
        assert!(matches!(
            &handle(WebhookKind::Status, &request, TOKEN).unwrap()[0],
            WebhookEvent::Delivery(u) if u.carrier_message_id == "SM5" && u.status == DeliveryStatus::Delivered
        ));
    }
}
