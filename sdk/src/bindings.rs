//! Generated bindings and their glue to the SDK.
//!
//! Each world gets its own `generate!` so each has its own export macro. With
//! `pub_export_macro`, wit-bindgen embeds an imports-only description of the
//! world in this crate and the full world (with its exports) in the crate that
//! invokes the export macro, so a plugin's component exports exactly the
//! interface it implements; imports it never calls are dropped when the
//! component is made.
//!
//! The bindings compile on every target (off `wasm32` their imports are never
//! called: the mock host answers instead), because the SDK's records and enums
//! are these generated types, re-exported by `types`.

use crate::types as sdk;

/// Bindings for `world carrier-plugin`; also the home of the shared
/// `types` and `host` interfaces.
#[allow(missing_docs)]
pub mod carrier {
    wit_bindgen::generate!({
        path: "wit/v0.1.0",
        world: "carrier-plugin",
        pub_export_macro: true,
        default_bindings_module: "herald_sdk::__private::carrier",
        // Plugin code compares and hashes these types (and their tests do).
        additional_derives: [PartialEq, Eq, Hash],
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
        additional_derives: [PartialEq, Eq, Hash],
    });
}

use carrier::exports::herald::plugin::carrier as wc;
use carrier::herald::plugin::{host as wh, types as wt};
use template::exports::herald::plugin::template as wtpl;

/// Herald's imports, in the SDK's terms.
#[cfg(target_arch = "wasm32")]
pub(crate) mod host {
    use super::carrier::herald::plugin::http as whttp;
    use super::{sdk, wh};
    use crate::http as sdk_http;

    pub(crate) fn log(level: sdk::Level, message: &str) {
        wh::log(level, message);
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
            headers: request.headers,
            body: request.body,
        };
        match whttp::fetch(&request) {
            Ok(response) => Ok(sdk_http::Response {
                status: response.status,
                headers: response.headers,
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
        T::send(message).map_err(|error| match error {
            sdk::SendError::Retryable(reason) => wc::SendError::Retryable(reason),
            sdk::SendError::Permanent(reason) => wc::SendError::Permanent(reason),
            sdk::SendError::RateLimited(ms) => wc::SendError::RateLimited(ms),
        })
    }

    fn handle_webhook(
        kind: wc::WebhookKind,
        request: wc::WebhookRequest,
    ) -> Result<Vec<wc::WebhookEvent>, wc::WebhookError> {
        install_panic_hook();
        T::handle_webhook(kind, request).map_err(|error| match error {
            sdk::WebhookError::Unauthorized(reason) => wc::WebhookError::Unauthorized(reason),
            sdk::WebhookError::Malformed(reason) => wc::WebhookError::Malformed(reason),
        })
    }
}

impl<T: crate::Template> wtpl::Guest for T {
    fn validate(template: String) -> Result<(), wtpl::TemplateError> {
        install_panic_hook();
        T::validate(&template).map_err(Into::into)
    }

    fn render(template: String, variables: Vec<(String, String)>) -> Result<wtpl::Rendered, wtpl::TemplateError> {
        install_panic_hook();
        T::render(&template, &variables).map_err(Into::into)
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
