//! Reading requests: JSON bodies with precise errors, path ids, pagination.

use salvo::prelude::*;
use serde::de::DeserializeOwned;
use serde_json::error::Category;
use std::str::FromStr;

use crate::domain::ids::UserId;

use super::problem::ApiError;
use super::{App, CurrentUser};
use crate::domain::FieldError;
use crate::domain::page::PageRequest;

/// The shared application state put in the depot by the router.
pub fn app(depot: &Depot) -> &App {
    depot
        .get_typed::<std::sync::Arc<App>>()
        .expect("app state is injected by the router")
}

/// The authenticated user, set by the auth hoop.
pub fn user(depot: &Depot) -> UserId {
    depot
        .get_typed::<CurrentUser>()
        .expect("auth hoop runs before handlers")
        .0
}

/// Parses a JSON body: syntax errors are 400, a body of the wrong shape
/// (missing, unknown or mistyped fields) is 422 naming the field.
pub async fn json<T: DeserializeOwned>(req: &mut Request, limit: u64) -> Result<T, ApiError> {
    let bytes = req
        .payload_with_max_size(limit as usize)
        .await
        .map_err(|e| ApiError::from_body(e, limit))?;
    parse_json(bytes)
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Syntax first: serde reports whatever it meets first, so `{"name": "x", `
    // read into a struct would be an unknown-field error (422) rather than the
    // end of input it also is (400). A body that is not JSON is always 400.
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
        .map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))?;
    // serde would also read a struct from a JSON array of its fields in order.
    if bytes.trim_ascii_start().first() == Some(&b'[') {
        return Err(ApiError::Invalid(vec![FieldError::new(
            "body",
            "must be a JSON object",
        )]));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            Category::Data => ApiError::Invalid(vec![shape_error(&path, &inner.to_string())]),
            _ => ApiError::BadRequest(format!("malformed JSON: {inner}")),
        }
    })?;
    de.end()
        .map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))?;
    Ok(value)
}

/// Names the field of a serde data error. A missing field is reported at its
/// parent's path, so its name is taken from the message.
fn shape_error(path: &str, message: &str) -> FieldError {
    let message = message.rfind(" at line ").map_or(message, |i| &message[..i]);
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next());
    let field = match (missing, path) {
        (Some(name), "." | "") => name.to_string(),
        (Some(name), parent) => format!("{parent}.{name}"),
        (None, ".") => String::new(),
        (None, path) => path.to_string(),
    };
    FieldError::new(if field.is_empty() { "body".into() } else { field }, message)
}

/// A path id (`CampaignId`, `ContactId`, …); anything but a UUID is a 400.
pub fn path_id<Id: FromStr>(req: &Request, name: &str) -> Result<Id, ApiError> {
    let raw = req.param::<String>(name).unwrap_or_default();
    raw.parse()
        .map_err(|_| ApiError::BadRequest(format!("{name} {raw:?} is not a UUID")))
}

pub fn page(req: &Request) -> Result<PageRequest, ApiError> {
    Ok(PageRequest::parse(
        req.query::<String>("page").as_deref(),
        req.query::<String>("per_page").as_deref(),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        name: String,
        count: i64,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Wrapper {
        items: Vec<Item>,
    }

    fn field_of(body: &str) -> String {
        match parse_json::<Wrapper>(body.as_bytes()) {
            Err(ApiError::Invalid(fields)) => fields[0].field.clone(),
            other => panic!("expected 422, got {other:?}"),
        }
    }

    #[test]
    fn shape_errors_name_the_field() {
        assert_eq!(
            field_of(r#"{"items":[{"name":"a","count":1},{"name":"b"}]}"#),
            "items[1].count"
        );
        assert_eq!(field_of(r#"{"items":[{"name":"a","count":"x"}]}"#), "items[0].count");
        assert_eq!(
            field_of(r#"{"items":[{"name":"a","count":1,"extra":1}]}"#),
            "items[0].extra"
        );
        assert_eq!(field_of(r#"{}"#), "items");
    }

    #[test]
    fn arrays_are_not_objects() {
        let reply = parse_json::<Item>(br#" ["a", 1]"#);
        assert!(
            matches!(reply, Err(ApiError::Invalid(ref f)) if f[0].field == "body"),
            "{reply:?}"
        );
    }

    #[test]
    fn syntax_errors_are_bad_requests() {
        for body in [
            "{",
            "",
            "{\"items\": []} trailing",
            "nope",
            // serde meets a shape error before the syntax error in each of these.
            "{\"unknown\": 1, ",
            "{\"items\": [{\"name\": 1}",
            "[\"a\", ",
            "{\"items\": \"x\"}}",
        ] {
            assert!(
                matches!(parse_json::<Wrapper>(body.as_bytes()), Err(ApiError::BadRequest(_))),
                "{body}"
            );
        }
    }
}
