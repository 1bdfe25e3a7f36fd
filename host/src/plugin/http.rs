//! `http-fetch` for carrier plugins: Herald makes the request, under the
//! carrier's allow-list, scheme rule, timeout and response-size cap.

use std::time::Duration;

use http_body_util::BodyExt;

use super::bindings::v0_1_0::carrier_world::herald::plugin::http::{Error, Request, Response};
use super::bindings::v0_1_0::types::Header;
use super::{PluginError, PluginLimits};

/// The outbound-HTTP policy and client of one carrier.
pub struct PluginHttp {
    client: reqwest::Client,
    allowed_hosts: Vec<String>,
    allow_insecure_http: bool,
    timeout: Duration,
    max_response_bytes: u64,
}

impl PluginHttp {
    pub fn new(
        allowed_hosts: &[String],
        allow_insecure_http: bool,
        limits: &PluginLimits,
    ) -> Result<Self, PluginError> {
        // reqwest is built without a default TLS provider; ring is ours.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let timeout = Duration::from_millis(limits.http_timeout_ms);
        let client = reqwest::Client::builder()
            // A connect failure is known not to have sent anything: keep it apart
            // from a timeout after the request was written.
            .connect_timeout(timeout)
            // A redirect could lead off the allow-list; plugins follow them themselves.
            .redirect(reqwest::redirect::Policy::none())
            // Connect to the URL's host itself, never through a proxy from the environment.
            .no_proxy()
            .build()
            .map_err(|e| PluginError::Runtime(format!("HTTP client: {e}")))?;
        Ok(Self {
            client,
            allowed_hosts: allowed_hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
            allow_insecure_http,
            timeout,
            max_response_bytes: limits.max_response_bytes,
        })
    }

    /// The URL a request may go to, or why not. Checked before any connection,
    /// against the host the client will connect to (never a `Host` header).
    pub fn check(&self, url: &str) -> Result<reqwest::Url, Error> {
        let parsed = reqwest::Url::parse(url).map_err(|e| Error::InvalidRequest(format!("{url:?}: {e}")))?;
        match parsed.scheme() {
            "https" => {}
            "http" if self.allow_insecure_http => {}
            scheme => return Err(Error::Denied(format!("scheme {scheme:?} is not allowed (HTTPS only)"))),
        }
        let host = parsed
            .host_str()
            .ok_or_else(|| Error::InvalidRequest(format!("{url:?} has no host")))?
            .trim_end_matches('.')
            .to_ascii_lowercase();
        if !self.allowed_hosts.iter().any(|allowed| host_matches(allowed, &host)) {
            return Err(Error::Denied(format!("host {host:?} is not in allowed_hosts")));
        }
        Ok(parsed)
    }

    /// Makes the request; the [`Reach`] says whether it may have reached the
    /// server even when no answer came back (an unknown outcome for a send).
    pub async fn fetch(&self, request: Request) -> (Result<Response, Error>, Reach) {
        let mut reach = Reach::NotSent;
        let result = self.fetch_inner(request, &mut reach).await;
        (result, reach)
    }

    async fn fetch_inner(&self, request: Request, reach: &mut Reach) -> Result<Response, Error> {
        let url = self.check(&request.url)?;
        let method = reqwest::Method::from_bytes(request.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| Error::InvalidRequest(format!("method {:?}", request.method)))?;
        let mut builder = self
            .client
            .request(method, url)
            .timeout(self.timeout)
            .body(request.body);
        for header in request.headers.iter().filter(|h| !h.name.eq_ignore_ascii_case("host")) {
            builder = builder.header(header.name.as_str(), header.value.as_str());
        }
        let response = match builder.send().await {
            Ok(response) => response,
            Err(e) => {
                // Only a failure to connect proves the request never left; a
                // timeout or reset after connecting may follow a written request.
                if !e.is_connect() && !e.is_builder() {
                    *reach = Reach::Unanswered;
                }
                return Err(transport_error(e));
            }
        };
        // The server answered: what it said is known, even if the body is cut short.
        *reach = Reach::Answered;
        let status = response.status().as_u16();
        let headers = plugin_headers(response.headers());
        if response.content_length().is_some_and(|n| n > self.max_response_bytes) {
            return Err(Error::TooLarge(self.max_response_bytes));
        }
        let mut body = Vec::new();
        let mut stream = http_body_util::Limited::new(reqwest::Body::from(response), self.max_response_bytes as usize);
        while let Some(frame) = stream.frame().await {
            let frame = frame.map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    Error::TooLarge(self.max_response_bytes)
                } else {
                    Error::Transport(e.to_string())
                }
            })?;
            if let Ok(data) = frame.into_data() {
                body.extend_from_slice(&data);
            }
        }
        Ok(Response { status, headers, body })
    }
}

/// How far one `http-fetch` got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reach {
    /// Refused by policy, invalid, or the connection failed: nothing was sent.
    NotSent,
    /// The server answered with a status.
    Answered,
    /// The request may have been written, but no answer came (timeout, reset).
    Unanswered,
}

fn transport_error(e: reqwest::Error) -> Error {
    if e.is_timeout() {
        Error::Timeout
    } else {
        Error::Transport(format!("{e:#}"))
    }
}

/// `allowed` is an exact host name or `*.suffix` (any subdomain of suffix).
fn host_matches(allowed: &str, host: &str) -> bool {
    match allowed.strip_prefix("*.") {
        Some(suffix) => {
            host.len() > suffix.len() + 1 && host.ends_with(suffix) && host[..host.len() - suffix.len()].ends_with('.')
        }
        None => allowed == host,
    }
}

/// HTTP headers as plugins receive them (values not valid UTF-8 are converted lossily).
pub fn plugin_headers(headers: &reqwest::header::HeaderMap) -> Vec<Header> {
    headers
        .iter()
        .map(|(name, value)| Header {
            name: name.as_str().to_string(),
            value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(hosts: &[&str], insecure: bool) -> PluginHttp {
        let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        PluginHttp::new(&hosts, insecure, &PluginLimits::default()).unwrap()
    }

    #[test]
    fn only_listed_hosts_over_https() {
        let p = policy(&["api.twilio.com", "*.example.com"], false);
        assert!(p.check("https://api.twilio.com/2010-04-01/x").is_ok());
        assert!(p.check("https://API.Twilio.com./x").is_ok(), "case and trailing dot");
        assert!(p.check("https://eu.example.com/x").is_ok());
        assert!(p.check("https://a.b.example.com/x").is_ok());
        for denied in [
            "https://example.com/x",
            "https://evilexample.com/x",
            "https://api.twilio.com.evil.net/x",
            "https://evil.net/?api.twilio.com",
            "https://api.twilio.com@evil.net/x",
            "http://api.twilio.com/x",
            "ftp://api.twilio.com/x",
            "https://127.0.0.1/x",
        ] {
            assert!(
                matches!(p.check(denied), Err(Error::Denied(_))),
                "{denied} should be denied"
            );
        }
        assert!(matches!(p.check("/relative"), Err(Error::InvalidRequest(_))));
        assert!(policy(&["127.0.0.1"], true).check("http://127.0.0.1:8080/x").is_ok());
    }
}
