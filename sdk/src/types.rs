//! The types of the plugin contract (`sdk/wit/v0.1.0/plugin.wit`) as plugin
//! code sees them.
//!
//! Records and enums are the generated bindings themselves, re-exported with
//! a few helpers, so they cannot drift from the contract. The error types are
//! the SDK's own: they say what went wrong in words (the generated ones print
//! their `Debug` form) and build the reasons Herald reads ([`SendError::opted_out`]
//! and friends); the SDK converts them at the component boundary.

use std::fmt;

pub use crate::bindings::carrier::exports::herald::plugin::carrier::{
    Accepted, DeliveryStatus, DeliveryUpdate, InboundMessage, Message, WebhookEvent, WebhookKind, WebhookRequest,
};
pub use crate::bindings::carrier::herald::plugin::types::{Encoding, Header, Level};
pub use crate::bindings::template::exports::herald::plugin::template::Rendered;

impl Header {
    /// A header from a name and a value.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// Finds the first header called `name` (ASCII case-insensitive).
pub(crate) fn find_header<'a>(headers: &'a [Header], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str())
}

/// The start of a [`SendError::Permanent`] reason saying the recipient opted
/// out with the carrier (e.g. replied STOP to the sender): Herald fails the
/// message and opts the contact out, recording the carrier as the source.
/// Build it with [`SendError::opted_out`].
pub const OPTED_OUT_PREFIX: &str = "opted-out:";

/// The start of a [`SendError::Permanent`] reason saying the carrier account
/// or the plugin's settings are wrong (bad credentials, a sender the account
/// does not own, a missing setting): no message can succeed until an operator
/// fixes it, so Herald pauses the carrier (event `carrier.tripped`) and leaves
/// its messages waiting instead of failing them one by one. Build it with
/// [`SendError::misconfigured`].
pub const MISCONFIGURED_PREFIX: &str = "misconfigured:";

/// The start of a [`SendError::Retryable`] reason saying the carrier answered
/// but the plugin cannot tell whether it took the message (a success status
/// without the carrier's message id, say). Herald then holds the message for
/// reconciliation, as when no answer came at all, instead of sending it again
/// (unless the carrier is configured `idempotent`). Build it with
/// [`SendError::outcome_unknown`].
pub const OUTCOME_UNKNOWN_PREFIX: &str = "outcome-unknown:";

/// Why `send` failed (WIT `carrier.send-error`).
///
/// The WIT variant has three cases; two kinds of permanent refusal are told
/// apart by the start of their reason, [`OPTED_OUT_PREFIX`] and
/// [`MISCONFIGURED_PREFIX`], so that components written in any language can
/// report them. Build those with [`SendError::opted_out`] and
/// [`SendError::misconfigured`].
///
/// `From<HttpError>` and `From<ConfigError>` are implemented so `?` works in
/// [`Carrier::send`](crate::Carrier::send): a missing or invalid setting and a
/// host not on `allowed_hosts` are [misconfigured](SendError::misconfigured),
/// an invalid request [`Permanent`](SendError::Permanent), and a timeout, an
/// oversized response or a transport failure [`Retryable`](SendError::Retryable)
/// (Herald itself notices when such a request may have reached the carrier and
/// holds the message for reconciliation rather than sending it twice).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// May succeed later (timeouts, 5xx): Herald retries with backoff.
    Retryable(String),
    /// Will never succeed (invalid number, blocked): fails the message. A
    /// reason starting with [`OPTED_OUT_PREFIX`] or [`MISCONFIGURED_PREFIX`]
    /// is handled as described there.
    Permanent(String),
    /// The carrier is throttling: retry after this many milliseconds, without counting an attempt.
    RateLimited(u64),
}

impl SendError {
    /// The recipient opted out with the carrier: a permanent error whose
    /// reason is [`OPTED_OUT_PREFIX`], a space and `detail` (keep the
    /// carrier's code and text in it for the audit trail).
    ///
    /// ```
    /// # use herald_sdk::SendError;
    /// let error = SendError::opted_out("Twilio error 21610: Attempt to send to unsubscribed recipient");
    /// assert_eq!(error, SendError::Permanent("opted-out: Twilio error 21610: Attempt to send to unsubscribed recipient".into()));
    /// assert!(error.is_opted_out());
    /// ```
    pub fn opted_out(detail: impl fmt::Display) -> Self {
        SendError::Permanent(format!("{OPTED_OUT_PREFIX} {detail}"))
    }

    /// The carrier account or the plugin's settings are wrong: a permanent
    /// error whose reason is [`MISCONFIGURED_PREFIX`], a space and `detail`.
    ///
    /// ```
    /// # use herald_sdk::SendError;
    /// let error = SendError::misconfigured("HTTP 401: bad credentials");
    /// assert_eq!(error, SendError::Permanent("misconfigured: HTTP 401: bad credentials".into()));
    /// assert!(error.is_misconfigured());
    /// ```
    pub fn misconfigured(detail: impl fmt::Display) -> Self {
        SendError::Permanent(format!("{MISCONFIGURED_PREFIX} {detail}"))
    }

    /// The carrier may have taken the message and the plugin cannot tell: a
    /// retryable error whose reason is [`OUTCOME_UNKNOWN_PREFIX`], a space and
    /// `detail`. Herald holds the message instead of sending it again.
    ///
    /// ```
    /// # use herald_sdk::SendError;
    /// let error = SendError::outcome_unknown("HTTP 201 without a message id");
    /// assert_eq!(error, SendError::Retryable("outcome-unknown: HTTP 201 without a message id".into()));
    /// ```
    pub fn outcome_unknown(detail: impl fmt::Display) -> Self {
        SendError::Retryable(format!("{OUTCOME_UNKNOWN_PREFIX} {detail}"))
    }

    /// Whether this is a permanent error whose reason starts with [`OPTED_OUT_PREFIX`].
    pub fn is_opted_out(&self) -> bool {
        matches!(self, SendError::Permanent(reason) if reason.starts_with(OPTED_OUT_PREFIX))
    }

    /// Whether this is a permanent error whose reason starts with [`MISCONFIGURED_PREFIX`].
    pub fn is_misconfigured(&self) -> bool {
        matches!(self, SendError::Permanent(reason) if reason.starts_with(MISCONFIGURED_PREFIX))
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Retryable(reason) => write!(f, "retryable: {reason}"),
            SendError::Permanent(reason) => write!(f, "permanent: {reason}"),
            SendError::RateLimited(ms) => write!(f, "rate limited: retry after {ms} ms"),
        }
    }
}

impl std::error::Error for SendError {}

impl From<crate::http::HttpError> for SendError {
    fn from(error: crate::http::HttpError) -> Self {
        use crate::http::HttpError;
        match error {
            // A host off `allowed_hosts` (or plain HTTP where it is not allowed)
            // is the operator's configuration, not the message's fault.
            HttpError::Denied(_) => SendError::misconfigured(error),
            HttpError::InvalidRequest(_) => SendError::Permanent(error.to_string()),
            // Never `accepted`: Herald sees itself whether the request may have
            // reached the carrier and then holds the message for reconciliation.
            HttpError::Timeout | HttpError::TooLarge(_) | HttpError::Transport(_) => {
                SendError::Retryable(error.to_string())
            }
        }
    }
}

impl From<crate::config::ConfigError> for SendError {
    /// A missing or unusable setting is an operator error: no message can
    /// succeed until it is fixed, so it is [misconfigured](SendError::misconfigured).
    fn from(error: crate::config::ConfigError) -> Self {
        SendError::misconfigured(error)
    }
}

impl WebhookRequest {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The body decoded as `application/x-www-form-urlencoded` pairs, in order.
    pub fn form(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(&self.body).into_owned().collect()
    }

    /// The query string decoded into pairs, in order.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(self.query.as_bytes()).into_owned().collect()
    }

    /// The body parsed as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

/// Why a webhook request was rejected (WIT `carrier.webhook-error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookError {
    /// The signature or credentials did not verify (HTTP 401).
    Unauthorized(String),
    /// The request could not be understood (HTTP 400).
    Malformed(String),
}

impl fmt::Display for WebhookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WebhookError::Unauthorized(reason) => write!(f, "unauthorized: {reason}"),
            WebhookError::Malformed(reason) => write!(f, "malformed: {reason}"),
        }
    }
}

impl std::error::Error for WebhookError {}

/// A template that is not well formed or cannot be rendered (WIT `template.template-error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    /// What is wrong.
    pub message: String,
    /// Character offset (0-based, in Unicode scalar values) in the template, when the error has a place.
    pub position: Option<u32>,
}

impl TemplateError {
    /// An error without a position.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            position: None,
        }
    }

    /// An error at character offset `position` of the template.
    pub fn at(position: u32, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            position: Some(position),
        }
    }
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some(position) => write!(f, "{} (at character {position})", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for TemplateError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixed_refusals() {
        assert_eq!(
            SendError::opted_out("error 21610"),
            SendError::Permanent("opted-out: error 21610".into())
        );
        assert_eq!(
            SendError::misconfigured(format_args!("HTTP {}", 401)),
            SendError::Permanent("misconfigured: HTTP 401".into())
        );
        assert!(SendError::opted_out("x").is_opted_out());
        assert!(!SendError::opted_out("x").is_misconfigured());
        assert!(SendError::misconfigured("x").is_misconfigured());
        assert!(!SendError::misconfigured("x").is_opted_out());
        // Only a permanent error's reason counts, and only at its start.
        assert!(!SendError::Retryable("opted-out: x".into()).is_opted_out());
        assert!(!SendError::Retryable("misconfigured: x".into()).is_misconfigured());
        assert!(!SendError::Permanent("recipient opted-out: x".into()).is_opted_out());
        assert!(!SendError::RateLimited(1).is_misconfigured());
        assert_eq!(
            SendError::misconfigured("bad token").to_string(),
            "permanent: misconfigured: bad token"
        );
    }
}
