//! Herald's default template plugin (`builtin:default`).
//!
//! Templates are text with `{{ variable | filter }}` placeholders over a
//! contact's fields and attributes; see [`template`] for the language. Filters:
//! `default:"text"`, `upper`, `lower`, `first_word`, chained with `|`.
//!
//! `render` also picks the body's encoding (GSM-7 or UCS-2) and counts its SMS
//! segments (160/153 septets, 70/67 UTF-16 units); see [`sms`].
//!
//! # Settings
//!
//! * `smart_encoding` (`true` or `false`, default `false`): when `true`,
//!   typographic quotes, dashes, ellipses and special spaces in the rendered
//!   body are replaced by GSM-7 look-alikes, but only when that makes the
//!   whole body GSM-7 ([`sms::smart_encode`]), so one stray `’` does not
//!   double the segment count.
//!
//! The rendered body must not be empty (or whitespace only) nor longer than
//! 1600 characters.

pub mod sms;
pub mod template;

use herald_sdk::{Rendered, Template, TemplateError, config};

/// The plugin: stateless, instantiated per call.
pub struct DefaultTemplate;

impl Template for DefaultTemplate {
    fn validate(template: &str) -> Result<(), TemplateError> {
        template::parse(template).map(|_| ())
    }

    fn render(template: &str, variables: &[(String, String)]) -> Result<Rendered, TemplateError> {
        let smart = config::get_parsed::<bool>("smart_encoding")
            .map_err(|error| TemplateError::new(error.to_string()))?
            .unwrap_or(false);
        render_message(template, variables, smart)
    }
}

herald_sdk::export_template!(DefaultTemplate);

/// Parses and renders `template`, applies smart encoding when `smart`, and
/// measures the result.
pub fn render_message(template: &str, variables: &[(String, String)], smart: bool) -> Result<Rendered, TemplateError> {
    let parsed = template::parse(template)?;
    let mut body = template::render(&parsed, variables)?;
    if smart && let std::borrow::Cow::Owned(encoded) = sms::smart_encode(&body) {
        body = encoded;
    }
    if body.trim().is_empty() {
        return Err(TemplateError::new("the rendered message is empty"));
    }
    let length = body.chars().count();
    if length > template::MAX_CHARS {
        return Err(TemplateError::new(format!(
            "the rendered message is {length} characters long; the limit is {}",
            template::MAX_CHARS
        )));
    }
    let (encoding, segments) = sms::measure(&body);
    Ok(Rendered {
        body,
        encoding,
        segments,
    })
}

#[cfg(test)]
mod tests {
    use herald_sdk::{Encoding, testing};

    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn validate_and_render_through_the_trait() {
        assert_eq!(DefaultTemplate::validate("Hi {{ name | default:\"there\" }}"), Ok(()));
        assert_eq!(
            DefaultTemplate::validate("Hi {{ name | loud }}").unwrap_err().position,
            Some(13)
        );

        let rendered =
            DefaultTemplate::render("Hi {{ name | first_word }} 👋", &vars(&[("name", "Ada King")])).unwrap();
        assert_eq!(
            rendered,
            Rendered {
                body: "Hi Ada 👋".into(),
                encoding: Encoding::Ucs2,
                segments: 1
            }
        );

        let rendered = DefaultTemplate::render("{{ a }}", &vars(&[("a", &"x".repeat(161))])).unwrap();
        assert_eq!((rendered.encoding, rendered.segments), (Encoding::Gsm7, 2));
    }

    #[test]
    fn smart_encoding_follows_the_setting() {
        let body = "It\u{2019}s \u{201C}on\u{201D} \u{2014} see you\u{2026}";
        let variables = vars(&[("b", body)]);

        let plain = DefaultTemplate::render("{{ b }}", &variables).unwrap();
        assert_eq!((plain.body.as_str(), plain.encoding), (body, Encoding::Ucs2));

        testing::set_config("smart_encoding", "true");
        let smart = DefaultTemplate::render("{{ b }}", &variables).unwrap();
        assert_eq!(smart.body, "It's \"on\" - see you...");
        assert_eq!((smart.encoding, smart.segments), (Encoding::Gsm7, 1));

        testing::set_config("smart_encoding", "yes please");
        let error = DefaultTemplate::render("{{ b }}", &variables).unwrap_err();
        assert!(error.message.contains("`smart_encoding`"), "{error}");
    }

    #[test]
    fn rendered_body_limits() {
        let error = render_message("{{ a }}", &vars(&[("a", " \n")]), false).unwrap_err();
        assert_eq!(error.message, "the rendered message is empty");

        let long = "ж".repeat(1601);
        let error = render_message("{{ a }}", &vars(&[("a", &long)]), false).unwrap_err();
        assert!(error.message.contains("1601 characters"), "{error}");

        let at_limit = render_message("{{ a }}", &vars(&[("a", &"a".repeat(1600))]), false).unwrap();
        assert_eq!((at_limit.encoding, at_limit.segments), (Encoding::Gsm7, 11));
    }
}
