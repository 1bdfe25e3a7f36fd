//! Write [Herald](https://example.invalid/herald) plugins in Rust.
//!
//! A Herald plugin is a WebAssembly component built for `wasm32-wasip2`
//! against the WIT contract in `sdk/wit/v0.1.0/plugin.wit` (package
//! `herald:plugin@0.1.0`). With this crate a plugin is a type implementing
//! [`Carrier`] or [`Template`] plus one line, [`export_carrier!`] or
//! [`export_template!`]. Plugin code sees only the plain Rust types of this
//! crate; the host's imports are behind [`log`], [`config`], [`now_ms`] and
//! [`http`].
//!
//! What Herald does with each result of `send` (opt-outs, bad credentials,
//! unknown outcomes, reconciliation through [`webhook::with_message_id`]) is
//! described in `sdk/README.md`, section "Reporting what happened".
//!
//! On native targets the same calls go to a mock host ([`testing`]), so a
//! plugin's logic is unit-tested with plain `cargo test`.
//!
//! # A minimal carrier
//!
//! ```
//! use herald_sdk::http::Request;
//! use herald_sdk::{Accepted, Carrier, Message, SendError, WebhookError, WebhookEvent, WebhookKind, WebhookRequest};
//! use herald_sdk::{DeliveryStatus, DeliveryUpdate, config, log};
//!
//! /// Sends through a JSON gateway: `POST {url}` with a bearer token.
//! pub struct Gateway;
//!
//! impl Carrier for Gateway {
//!     fn send(message: Message) -> Result<Accepted, SendError> {
//!         let url = config::require("url")?; // missing → misconfigured: Herald pauses the carrier
//!         let token = config::require("token")?;
//!         let response = Request::post(url)
//!             .bearer_auth(&token)
//!             .header("Idempotency-Key", message.id.as_str())
//!             .json(&serde_json::json!({ "to": message.to, "from": message.from, "text": message.body }))
//!             .send()?; // denied → misconfigured; timeout, transport → retryable
//!         match response.status {
//!             200..=299 => {
//!                 let body: serde_json::Value =
//!                     response.json().map_err(|e| SendError::Retryable(format!("bad JSON: {e}")))?;
//!                 let id = body["id"].as_str().unwrap_or_default().to_string();
//!                 log::debug(format!("accepted as {id}"));
//!                 Ok(Accepted { carrier_message_id: id, status: Some(DeliveryStatus::Sent) })
//!             }
//!             401 | 403 => Err(SendError::misconfigured(format!("gateway refused the token ({})", response.status))),
//!             429 => {
//!                 let seconds: u64 = response.header("retry-after").and_then(|s| s.parse().ok()).unwrap_or(1);
//!                 Err(SendError::RateLimited(seconds * 1000))
//!             }
//!             500..=599 => Err(SendError::Retryable(format!("gateway error {}", response.status))),
//!             status => Err(SendError::Permanent(format!("gateway refused ({status}): {}", response.text()))),
//!         }
//!     }
//!
//!     fn handle_webhook(kind: WebhookKind, request: WebhookRequest) -> Result<Vec<WebhookEvent>, WebhookError> {
//!         let token = config::require("token").map_err(|e| WebhookError::Unauthorized(e.to_string()))?;
//!         herald_sdk::webhook::check_secret(&request, "X-Token", &token)?; // constant-time; anonymous input
//!         let receipt: serde_json::Value = request.json().map_err(|e| WebhookError::Malformed(e.to_string()))?;
//!         match (kind, receipt["status"].as_str()) {
//!             (WebhookKind::Status, Some("delivered")) => Ok(vec![WebhookEvent::Delivery(DeliveryUpdate {
//!                 carrier_message_id: receipt["id"].as_str().unwrap_or_default().into(),
//!                 status: DeliveryStatus::Delivered,
//!                 error: None,
//!             })]),
//!             _ => Ok(Vec::new()),
//!         }
//!     }
//! }
//!
//! herald_sdk::export_carrier!(Gateway);
//!
//! // Unit test with the mock host (native `cargo test`, no Wasm runtime):
//! use herald_sdk::{http::Response, testing};
//!
//! testing::set_config("url", "https://sms.example.com/send");
//! testing::set_config("token", "t0k");
//! testing::push_response(Ok(Response::new(200).with_json(&serde_json::json!({ "id": "gw-1" }))));
//! let message = Message {
//!     id: "m1".into(),
//!     to: "+15550100".into(),
//!     from: String::new(),
//!     body: "Hi".into(),
//!     segments: 1,
//!     encoding: herald_sdk::Encoding::Gsm7,
//!     metadata: Vec::new(),
//! };
//! assert_eq!(Gateway::send(message).unwrap().carrier_message_id, "gw-1");
//! assert_eq!(testing::requests()[0].header_value("authorization"), Some("Bearer t0k"));
//!
//! testing::push_response(Ok(Response::new(429).with_header("Retry-After", "2")));
//! # let message = Message { id: "m2".into(), to: "+1".into(), from: String::new(), body: "x".into(),
//! #     segments: 1, encoding: herald_sdk::Encoding::Gsm7, metadata: Vec::new() };
//! assert_eq!(Gateway::send(message), Err(SendError::RateLimited(2000)));
//! ```
//!
//! Build it with `cargo build --target wasm32-wasip2 --release` (crate type
//! `cdylib`); see `sdk/README.md` for configuring and running it in Herald.
//!
//! # Panics
//!
//! The export macros install a panic hook that writes the panic message and
//! its location to Herald's log at error level; Herald then fails the call as
//! retryable and discards the instance.

#![warn(missing_docs)]

mod bindings;
pub mod config;
pub mod http;
pub mod log;
mod sys;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
mod types;
pub mod webhook;

pub use config::ConfigError;
pub use http::{HttpError, Request as HttpRequest, Response as HttpResponse};
pub use types::{
    Accepted, DeliveryStatus, DeliveryUpdate, Encoding, Header, InboundMessage, Level, MISCONFIGURED_PREFIX, Message,
    OPTED_OUT_PREFIX, OUTCOME_UNKNOWN_PREFIX, Rendered, SendError, TemplateError, WebhookError, WebhookEvent,
    WebhookKind, WebhookRequest,
};

/// The current time in milliseconds since the Unix epoch (UTC), from Herald.
/// Under the mock host, [`testing::DEFAULT_NOW_MS`] unless set.
pub fn now_ms() -> u64 {
    sys::now()
}

/// A carrier plugin: delivers messages and understands the carrier's webhooks
/// (WIT world `carrier-plugin`). Export the implementing type with
/// [`export_carrier!`].
///
/// The functions take no `self`: Herald instantiates the component afresh for
/// each call, so nothing survives from one call to the next.
pub trait Carrier {
    /// Delivers one message. `message.id` is Herald's id: pass it to the
    /// carrier as an idempotency key when it supports one, since Herald may
    /// call `send` more than once for a message, and put it in the message's
    /// status callback URL when the carrier takes one
    /// ([`webhook::with_message_id`]). Report refusals with the
    /// [`SendError`] that says what happened: [`SendError::opted_out`] and
    /// [`SendError::misconfigured`] make Herald opt the contact out or pause
    /// the carrier.
    fn send(message: Message) -> Result<Accepted, SendError>;

    /// Verifies and parses a webhook request into events. The default rejects
    /// every request as [`WebhookError::Malformed`], for carriers without webhooks.
    fn handle_webhook(kind: WebhookKind, request: WebhookRequest) -> Result<Vec<WebhookEvent>, WebhookError> {
        let _ = request;
        let kind = match kind {
            WebhookKind::Status => "Status",
            WebhookKind::Inbound => "Inbound",
        };
        Err(WebhookError::Malformed(format!(
            "this carrier does not accept {kind} webhooks"
        )))
    }
}

/// A template plugin: validates and renders message bodies (WIT world
/// `template-plugin`). Export the implementing type with [`export_template!`].
pub trait Template {
    /// Checks that `template` is well formed: placeholders, filters, length.
    fn validate(template: &str) -> Result<(), TemplateError>;

    /// Renders `template` with `variables` (contact fields and attributes). A
    /// variable missing from `variables` is an error unless the placeholder
    /// gives a default.
    fn render(template: &str, variables: &[(String, String)]) -> Result<Rendered, TemplateError>;
}

/// Exports a [`Carrier`] implementation as the component's `carrier`
/// interface: `herald_sdk::export_carrier!(MyCarrier);` once, in the plugin's
/// `lib.rs` (the type must be a plain identifier in scope). On native targets
/// it only checks that the type implements [`Carrier`].
#[macro_export]
macro_rules! export_carrier {
    ($ty:ident) => {
        #[cfg(target_arch = "wasm32")]
        $crate::__private::carrier::export!($ty with_types_in $crate::__private::carrier);
        const _: () = {
            fn assert_carrier<T: $crate::Carrier>() {}
            let _ = assert_carrier::<$ty>;
        };
    };
}

/// Exports a [`Template`] implementation as the component's `template`
/// interface: `herald_sdk::export_template!(MyTemplate);` once, in the
/// plugin's `lib.rs` (the type must be a plain identifier in scope). On native
/// targets it only checks that the type implements [`Template`].
#[macro_export]
macro_rules! export_template {
    ($ty:ident) => {
        #[cfg(target_arch = "wasm32")]
        $crate::__private::template::export!($ty with_types_in $crate::__private::template);
        const _: () = {
            fn assert_template<T: $crate::Template>() {}
            let _ = assert_template::<$ty>;
        };
    };
}

#[doc(hidden)]
pub mod __private {
    pub use crate::bindings::{carrier, template};
}
