//! Helpers for carrier webhooks: naming Herald's message in status callback
//! URLs, and checking a shared secret.
//!
//! Every webhook request is anonymous input: Herald hands it to the plugin,
//! and only the plugin can tell a carrier's request from a forgery. Verify the
//! carrier's signature, or a shared secret ([`check_secret`]), and return
//! [`WebhookError::Unauthorized`] otherwise.
//!
//! # Reconciliation
//!
//! When a send may have reached the carrier without an answer (a timeout
//! after the request was written, a reset connection), Herald does not know
//! the carrier's message id, so a later receipt cannot be matched by it.
//! Carriers that let each send name its own status callback URL should
//! therefore add Herald's message id to it with [`with_message_id`]: Herald
//! reads the [`MESSAGE_ID_PARAM`] query parameter of a status webhook the
//! plugin verified (and that yields exactly one delivery event) and settles
//! the message with it.
//!
//! ```
//! use herald_sdk::webhook::with_message_id;
//!
//! let url = with_message_id("https://herald.example.com/webhooks/acme/status", "0190-ab");
//! assert_eq!(url, "https://herald.example.com/webhooks/acme/status?herald_message_id=0190-ab");
//! ```

use subtle::ConstantTimeEq;

use crate::types::{WebhookError, WebhookRequest};

/// The query parameter of a status callback URL that carries Herald's message
/// id (see the [module documentation](self)).
pub const MESSAGE_ID_PARAM: &str = "herald_message_id";

/// `url` with [`MESSAGE_ID_PARAM`]`=message_id` (percent-encoded) appended to
/// its query, before any `#fragment`. A `herald_message_id` the URL already
/// has is dropped, so the parameter appears once; the rest of the URL is kept
/// as it is (carriers sign the exact URL they call).
pub fn with_message_id(url: &str, message_id: &str) -> String {
    let (rest, fragment) = match url.find('#') {
        Some(at) => url.split_at(at),
        None => (url, ""),
    };
    let (base, query) = match rest.find('?') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, ""),
    };
    let mut pairs: Vec<String> = query
        .split('&')
        .filter(|pair| !pair.is_empty() && !names_message_id(pair))
        .map(String::from)
        .collect();
    let value: String = form_urlencoded::byte_serialize(message_id.as_bytes()).collect();
    pairs.push(format!("{MESSAGE_ID_PARAM}={value}"));
    format!("{base}?{}{fragment}", pairs.join("&"))
}

/// Whether the query pair `pair` (`name=value`, still encoded) is [`MESSAGE_ID_PARAM`].
fn names_message_id(pair: &str) -> bool {
    let name = pair.split('=').next().unwrap_or_default();
    form_urlencoded::parse(name.as_bytes()).any(|(name, _)| name == MESSAGE_ID_PARAM)
}

/// Checks that `request` carries the header `header` with exactly `secret`,
/// comparing in constant time. An empty `secret` accepts nothing: a plugin
/// whose secret is not configured must not accept anonymous webhooks.
pub fn check_secret(request: &WebhookRequest, header: &str, secret: &str) -> Result<(), WebhookError> {
    if secret.is_empty() {
        return Err(WebhookError::Unauthorized(format!(
            "no secret is configured to check {header} against"
        )));
    }
    let presented = request
        .header(header)
        .ok_or_else(|| WebhookError::Unauthorized(format!("missing {header}")))?;
    if bool::from(presented.as_bytes().ct_eq(secret.as_bytes())) {
        Ok(())
    } else {
        Err(WebhookError::Unauthorized(format!("wrong {header}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Header;

    const STATUS: &str = "https://herald.example.com/webhooks/twilio/status";

    #[test]
    fn appends_to_a_url_without_a_query() {
        assert_eq!(
            with_message_id(STATUS, "0190e7a2-1c3d-7b4e-9f00-1234567890ab"),
            format!("{STATUS}?herald_message_id=0190e7a2-1c3d-7b4e-9f00-1234567890ab")
        );
        assert_eq!(with_message_id("https://h/", "m"), "https://h/?herald_message_id=m");
    }

    #[test]
    fn appends_to_an_existing_query_keeping_it_verbatim() {
        assert_eq!(
            with_message_id(&format!("{STATUS}?tenant=a%20b&x"), "m-1"),
            format!("{STATUS}?tenant=a%20b&x&herald_message_id=m-1")
        );
        // An empty query or a trailing `&` gets no empty pair.
        assert_eq!(
            with_message_id(&format!("{STATUS}?"), "m"),
            format!("{STATUS}?herald_message_id=m")
        );
        assert_eq!(
            with_message_id(&format!("{STATUS}?a=1&"), "m"),
            format!("{STATUS}?a=1&herald_message_id=m")
        );
    }

    #[test]
    fn keeps_the_fragment_last() {
        assert_eq!(
            with_message_id(&format!("{STATUS}#frag"), "m"),
            format!("{STATUS}?herald_message_id=m#frag")
        );
        assert_eq!(
            with_message_id(&format!("{STATUS}?a=1#f?x=2"), "m"),
            format!("{STATUS}?a=1&herald_message_id=m#f?x=2")
        );
    }

    #[test]
    fn percent_encodes_the_id_and_replaces_an_existing_one() {
        let url = with_message_id(STATUS, "a b&c=d/é");
        assert_eq!(url, format!("{STATUS}?herald_message_id=a+b%26c%3Dd%2F%C3%A9"));
        let query = url.split_once('?').unwrap().1;
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
        assert_eq!(pairs, [(MESSAGE_ID_PARAM.to_string(), "a b&c=d/é".to_string())]);

        assert_eq!(
            with_message_id(
                &format!("{STATUS}?herald_message_id=old&a=1&herald%5Fmessage%5Fid=x"),
                "new"
            ),
            format!("{STATUS}?a=1&herald_message_id=new")
        );
        // Only that exact name goes.
        assert_eq!(
            with_message_id(&format!("{STATUS}?herald_message_idx=1"), "m"),
            format!("{STATUS}?herald_message_idx=1&herald_message_id=m")
        );
    }

    fn request(headers: Vec<Header>) -> WebhookRequest {
        WebhookRequest {
            method: "POST".into(),
            url: STATUS.into(),
            query: String::new(),
            headers,
            body: Vec::new(),
        }
    }

    #[test]
    fn shared_secret() {
        let with = |value: &str| request(vec![Header::new("x-secret", value)]);
        assert_eq!(check_secret(&with("s3cret"), "X-Secret", "s3cret"), Ok(()));
        for presented in ["s3cre", "s3crett", "S3CRET", ""] {
            assert!(
                matches!(check_secret(&with(presented), "X-Secret", "s3cret"), Err(WebhookError::Unauthorized(r)) if r == "wrong X-Secret"),
                "{presented:?}"
            );
        }
        assert!(matches!(
            check_secret(&request(vec![]), "X-Secret", "s3cret"),
            Err(WebhookError::Unauthorized(r)) if r == "missing X-Secret"
        ));
        assert!(matches!(
            check_secret(&with(""), "X-Secret", ""),
            Err(WebhookError::Unauthorized(r)) if r.contains("no secret")
        ));
    }
}
