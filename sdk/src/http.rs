//! Outbound HTTP for carrier plugins, through Herald's `http.fetch` import.
//!
//! Herald makes the request: only hosts on the carrier's `allowed_hosts` list,
//! HTTPS unless the operator allows plain HTTP, with a timeout and a cap on the
//! response size. Template plugins have no HTTP access.
//!
//! ```no_run
//! use herald_sdk::SendError;
//! use herald_sdk::http::Request;
//!
//! # fn main() -> Result<(), SendError> {
//! let response = Request::post("https://api.example.com/messages")
//!     .basic_auth("user", "secret")
//!     .form(&[("To", "+15550100"), ("Body", "Hello")])
//!     .send()?; // HttpError converts into SendError
//! if !response.is_success() {
//!     return Err(SendError::Retryable(format!("status {}: {}", response.status, response.text())));
//! }
//! # Ok(())
//! # }
//! ```

use std::borrow::Borrow;
use std::fmt;

use base64::Engine as _;

use crate::types::{Header, find_header};

/// An HTTP request (WIT `http.request`), built with [`Request::get`],
/// [`Request::post`] and friends and sent with [`Request::send`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// GET, POST, PUT, PATCH, DELETE or HEAD.
    pub method: String,
    /// An absolute URL.
    pub url: String,
    /// Request headers, in order.
    pub headers: Vec<Header>,
    /// The request body (empty for none).
    pub body: Vec<u8>,
    /// A body that could not be built (e.g. JSON serialisation failed); reported by `send`.
    invalid: Option<String>,
}

impl Request {
    /// A request with any method and no headers or body.
    pub fn new(method: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            method: method.into(),
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
            invalid: None,
        }
    }

    /// A `GET` request.
    pub fn get(url: impl Into<String>) -> Self {
        Self::new("GET", url)
    }

    /// A `POST` request.
    pub fn post(url: impl Into<String>) -> Self {
        Self::new("POST", url)
    }

    /// A `PUT` request.
    pub fn put(url: impl Into<String>) -> Self {
        Self::new("PUT", url)
    }

    /// A `PATCH` request.
    pub fn patch(url: impl Into<String>) -> Self {
        Self::new("PATCH", url)
    }

    /// A `DELETE` request.
    pub fn delete(url: impl Into<String>) -> Self {
        Self::new("DELETE", url)
    }

    /// Adds a header (repeated names are kept).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push(Header::new(name, value));
        self
    }

    /// Sets a header, replacing any header of the same name (case-insensitive).
    fn set_header(&mut self, name: &str, value: impl Into<String>) {
        self.headers.retain(|h| !h.name.eq_ignore_ascii_case(name));
        self.headers.push(Header::new(name, value));
    }

    /// Sets `Authorization: Basic base64(user:password)`.
    pub fn basic_auth(mut self, user: &str, password: &str) -> Self {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        self.set_header("Authorization", format!("Basic {token}"));
        self
    }

    /// Sets `Authorization: Bearer token`.
    pub fn bearer_auth(mut self, token: &str) -> Self {
        self.set_header("Authorization", format!("Bearer {token}"));
        self
    }

    /// Sets a raw body (set `Content-Type` with [`header`](Self::header)).
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets an `application/x-www-form-urlencoded` body from pairs, in order,
    /// percent-encoded as browsers do (space as `+`).
    pub fn form<I, K, V>(mut self, pairs: I) -> Self
    where
        I: IntoIterator,
        I::Item: Borrow<(K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        self.body = body.into_bytes();
        self.set_header("Content-Type", "application/x-www-form-urlencoded");
        self
    }

    /// Sets a JSON body and `Content-Type: application/json`. A value that
    /// cannot be serialised makes [`send`](Self::send) fail with
    /// [`HttpError::InvalidRequest`].
    pub fn json<T: serde::Serialize + ?Sized>(mut self, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => self.body = body,
            Err(error) => self.invalid = Some(format!("JSON body: {error}")),
        }
        self.set_header("Content-Type", "application/json");
        self
    }

    /// The first header called `name` (case-insensitive).
    pub fn header_value(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The body as text (invalid UTF-8 replaced), handy in tests.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body decoded as `application/x-www-form-urlencoded` pairs, handy in tests.
    pub fn form_pairs(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(&self.body).into_owned().collect()
    }

    /// Sends the request through Herald and returns the whole response. Any
    /// status is a response; only a request that could not be made is an error.
    pub fn send(self) -> Result<Response, HttpError> {
        if let Some(reason) = self.invalid {
            return Err(HttpError::InvalidRequest(reason));
        }
        crate::sys::fetch(self)
    }
}

/// An HTTP response (WIT `http.response`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Response headers, in order.
    pub headers: Vec<Header>,
    /// The whole body.
    pub body: Vec<u8>,
}

impl Response {
    /// The `Retry-After` header in milliseconds, when it holds delta-seconds
    /// (what carriers send with 429 and 503). `None` when absent or not a number.
    pub fn retry_after_ms(&self) -> Option<u64> {
        self.header("retry-after")
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| (s * 1000.0).ceil() as u64)
    }

    /// A response with `status` and no headers or body (for canned responses in tests).
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a header (builder style, for canned responses).
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push(Header::new(name, value));
        self
    }

    /// Sets the body (builder style, for canned responses).
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets a JSON body and `Content-Type: application/json` (builder style, for canned responses).
    pub fn with_json<T: serde::Serialize + ?Sized>(self, value: &T) -> Self {
        let body = serde_json::to_vec(value).unwrap_or_default();
        self.with_header("Content-Type", "application/json").with_body(body)
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The body as text, invalid UTF-8 replaced by U+FFFD.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

/// Why a request could not be made (WIT `http.error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The URL's host is not on the carrier's `allowed_hosts`, or the scheme is
    /// not allowed. No connection was made.
    Denied(String),
    /// The URL or request is not valid.
    InvalidRequest(String),
    /// No answer within Herald's HTTP timeout.
    Timeout,
    /// The response body exceeded Herald's cap (bytes).
    TooLarge(u64),
    /// Connecting, TLS or the transfer failed.
    Transport(String),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Denied(reason) => write!(f, "HTTP request denied: {reason}"),
            HttpError::InvalidRequest(reason) => write!(f, "invalid HTTP request: {reason}"),
            HttpError::Timeout => f.write_str("HTTP request timed out"),
            HttpError::TooLarge(cap) => write!(f, "HTTP response larger than {cap} bytes"),
            HttpError::Transport(reason) => write!(f, "HTTP transport error: {reason}"),
        }
    }
}

impl std::error::Error for HttpError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_percent_encodes_and_sets_content_type() {
        let request = Request::post("https://x.test/")
            .header("content-type", "text/plain")
            .form(&[("To", "+1 555"), ("Body", "a&b=c é/?")]);
        assert_eq!(request.body_text(), "To=%2B1+555&Body=a%26b%3Dc+%C3%A9%2F%3F");
        assert_eq!(request.headers.len(), 1);
        assert_eq!(
            request.header_value("Content-Type"),
            Some("application/x-www-form-urlencoded")
        );
        assert_eq!(request.form_pairs()[1].1, "a&b=c é/?");
    }

    #[test]
    fn form_accepts_owned_pairs() {
        let pairs = vec![("a".to_string(), "1".to_string())];
        assert_eq!(Request::post("u").form(pairs).body_text(), "a=1");
    }

    #[test]
    fn basic_auth_is_base64_and_replaces() {
        let request = Request::get("u").bearer_auth("t").basic_auth("AC123", "s3cr:et");
        assert_eq!(request.headers.len(), 1);
        assert_eq!(
            request.header_value("authorization"),
            Some("Basic QUMxMjM6czNjcjpldA==")
        );
    }

    #[test]
    fn json_body_and_deferred_error() {
        let request = Request::put("u").json(&serde_json::json!({"to": "+1"}));
        assert_eq!(request.body_text(), r#"{"to":"+1"}"#);
        assert_eq!(request.header_value("content-type"), Some("application/json"));

        let mut bad = std::collections::HashMap::new();
        bad.insert(vec![1u8], 1);
        let error = Request::post("u").json(&bad).send().unwrap_err();
        assert!(
            matches!(error, HttpError::InvalidRequest(ref m) if m.starts_with("JSON body")),
            "{error:?}"
        );
    }

    #[test]
    fn response_helpers() {
        let response = Response::new(201)
            .with_json(&serde_json::json!({"sid": "SM1"}))
            .with_header("X-A", "1");
        assert!(response.is_success());
        assert_eq!(response.header("x-a"), Some("1"));
        assert_eq!(response.header("content-type"), Some("application/json"));
        assert_eq!(response.json::<serde_json::Value>().unwrap()["sid"], "SM1");
        assert_eq!(Response::new(500).with_body(vec![0xff, b'a']).text(), "\u{fffd}a");
        assert!(!Response::new(302).is_success());
    }
}
