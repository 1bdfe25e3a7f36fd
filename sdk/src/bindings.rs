//! Generated bindings (wasm32 only) and their glue to the SDK's plain types.
//!
//! Each world gets its own `generate!` so each has its own export macro. With
//! `pub_export_macro`, wit-bindgen embeds an imports-only description of the
//! world in this crate and the full world (with its exports) in the crate that
//! invokes the export macro, so a plugin's component exports exactly the
//! interface it implements; imports it never calls are dropped when the
//! component is made.

use crate::{http as sdk_http, types as sdk};

/// Bindings for `world carrier-plugin`; also the home of the shared
/// `types` and `host` interfaces.
#[allow(missing_docs)]
pub mod carrier {
    wit_bindgen::generate!({
        path: "wit/v0.1.0",
        world: "carrier-plugin",
        pub_export_macro: true,
        default_bindings_module: "herald_sdk::__private::carrier",
    });
}

/// Bindings for `world template-plugin`, reusing `types` and `host` from [`carrier`].
#[allow(missing_docs)]
pub mod template {
    wit_bindgen::generate!({
        path: "wit/v0.1.0",
        world: "template-plugin",
        pub_export_macro: true,
        default_bindings_module: "herald_sdk::__private::template",
        with: {
            "herald:plugin/types@0.1.0": crate::bindings::carrier::herald::plugin::types,
            "herald:plugin/host@0.1.0": crate::bindings::carrier::herald::plugin::host,
        },
    });
}

use carrier::exports::herald::plugin::carrier as wc;
use carrier::herald::plugin::{host as wh, http as whttp, types as wt};
use template::exports::herald::plugin::template as wtpl;

/// Host calls, converting to and from the SDK's types.
pub(crate) mod host {
    use super::*;

    pub(crate) fn log(level: sdk::Level, message: &str) {
        wh::log(level.into(), message);
    }

    pub(crate) fn config_get(key: &str) -> Option<String> {
        wh::config_get(key)
    }

    pub(crate) fn now() -> u64 {
        wh::now()
    }

    pub(crate) fn fetch(request: sdk_http::Request) -> Result<sdk_http::Response, sdk_http::HttpError> {
        let request = whttp::Request {
            method: request.method,
            url: request.url,
            headers: request.headers.into_iter().map(Into::into).collect(),
            body: request.body,
        };
        match whttp::fetch(&request) {
            Ok(response) => Ok(sdk_http::Response {
                status: response.status,
                headers: response.headers.into_iter().map(Into::into).collect(),
                body: response.body,
            }),
            Err(error) => Err(match error {
                whttp::Error::Denied(reason) => sdk_http::HttpError::Denied(reason),
                whttp::Error::InvalidRequest(reason) => sdk_http::HttpError::InvalidRequest(reason),
                whttp::Error::Timeout => sdk_http::HttpError::Timeout,
                whttp::Error::TooLarge(cap) => sdk_http::HttpError::TooLarge(cap),
                whttp::Error::Transport(reason) => sdk_http::HttpError::Transport(reason),
            }),
        }
    }
}

/// Sends panics (message and location) to Herald's log at error level before
/// the guest traps. Installed once per instance, on the first export call.
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let message = info.payload_as_str().unwrap_or("(non-string panic payload)");
            let line = match info.location() {
                Some(at) => format!(
                    "plugin panicked at {}:{}:{}: {message}",
                    at.file(),
                    at.line(),
                    at.column()
                ),
                None => format!("plugin panicked: {message}"),
            };
            wh::log(wt::Level::Error, &line);
        }));
    });
}

impl<T: crate::Carrier> wc::Guest for T {
    fn send(message: wc::Message) -> Result<wc::Accepted, wc::SendError> {
        install_panic_hook();
        let message = sdk::Message {
            id: message.id,
            to: message.to,
            from: message.from,
            body: message.body,
            segments: message.segments,
            encoding: message.encoding.into(),
            metadata: message.metadata,
        };
        match T::send(message) {
            Ok(accepted) => Ok(wc::Accepted {
                carrier_message_id: accepted.carrier_message_id,
                status: accepted.status.map(Into::into),
            }),
            Err(sdk::SendError::Retryable(reason)) => Err(wc::SendError::Retryable(reason)),
            Err(sdk::SendError::Permanent(reason)) => Err(wc::SendError::Permanent(reason)),
            Err(sdk::SendError::RateLimited(ms)) => Err(wc::SendError::RateLimited(ms)),
        }
    }

    fn handle_webhook(
        kind: wc::WebhookKind,
        request: wc::WebhookRequest,
    ) -> Result<Vec<wc::WebhookEvent>, wc::WebhookError> {
        install_panic_hook();
        let kind = match kind {
            wc::WebhookKind::Status => sdk::WebhookKind::Status,
            wc::WebhookKind::Inbound => sdk::WebhookKind::Inbound,
        };
        let request = sdk::WebhookRequest {
            method: request.method,
            url: request.url,
            query: request.query,
            headers: request.headers.into_iter().map(Into::into).collect(),
            body: request.body,
        };
        match T::handle_webhook(kind, request) {
            Ok(events) => Ok(events
                .into_iter()
                .map(|event| match event {
                    sdk::WebhookEvent::Delivery(update) => wc::WebhookEvent::Delivery(wc::DeliveryUpdate {
                        carrier_message_id: update.carrier_message_id,
                        status: update.status.into(),
                        error: update.error,
                    }),
                    sdk::WebhookEvent::Inbound(inbound) => wc::WebhookEvent::Inbound(wc::InboundMessage {
                        from: inbound.from,
                        to: inbound.to,
                        body: inbound.body,
                    }),
                })
                .collect()),
            Err(sdk::WebhookError::Unauthorized(reason)) => Err(wc::WebhookError::Unauthorized(reason)),
            Err(sdk::WebhookError::Malformed(reason)) => Err(wc::WebhookError::Malformed(reason)),
        }
    }
}

impl<T: crate::Template> wtpl::Guest for T {
    fn validate(template: String) -> Result<(), wtpl::TemplateError> {
        install_panic_hook();
        T::validate(&template).map_err(Into::into)
    }

    fn render(template: String, variables: Vec<(String, String)>) -> Result<wtpl::Rendered, wtpl::TemplateError> {
        install_panic_hook();
        match T::render(&template, &variables) {
            Ok(rendered) => Ok(wtpl::Rendered {
                body: rendered.body,
                encoding: rendered.encoding.into(),
                segments: rendered.segments,
            }),
            Err(error) => Err(error.into()),
        }
    }
}

impl From<sdk::TemplateError> for wtpl::TemplateError {
    fn from(error: sdk::TemplateError) -> Self {
        Self {
            message: error.message,
            position: error.position,
        }
    }
}

impl From<sdk::Level> for wt::Level {
    fn from(level: sdk::Level) -> Self {
        match level {
            sdk::Level::Trace => wt::Level::Trace,
            sdk::Level::Debug => wt::Level::Debug,
            sdk::Level::Info => wt::Level::Info,
            sdk::Level::Warn => wt::Level::Warn,
            sdk::Level::Error => wt::Level::Error,
        }
    }
}

impl From<wt::Header> for sdk::Header {
    fn from(header: wt::Header) -> Self {
        Self {
            name: header.name,
            value: header.value,
        }
    }
}

impl From<sdk::Header> for wt::Header {
    fn from(header: sdk::Header) -> Self {
        Self {
            name: header.name,
            value: header.value,
        }
    }
}

impl From<wt::Encoding> for sdk::Encoding {
    fn from(encoding: wt::Encoding) -> Self {
        match encoding {
            wt::Encoding::Gsm7 => sdk::Encoding::Gsm7,
            wt::Encoding::Ucs2 => sdk::Encoding::Ucs2,
        }
    }
}

impl From<sdk::Encoding> for wt::Encoding {
    fn from(encoding: sdk::Encoding) -> Self {
        match encoding {
            sdk::Encoding::Gsm7 => wt::Encoding::Gsm7,
            sdk::Encoding::Ucs2 => wt::Encoding::Ucs2,
        }
    }
}

impl From<sdk::DeliveryStatus> for wc::DeliveryStatus {
    fn from(status: sdk::DeliveryStatus) -> Self {
        match status {
            sdk::DeliveryStatus::Sent => wc::DeliveryStatus::Sent,
            sdk::DeliveryStatus::Delivered => wc::DeliveryStatus::Delivered,
            sdk::DeliveryStatus::Failed => wc::DeliveryStatus::Failed,
        }
    }
}
