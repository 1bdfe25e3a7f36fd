//! The validation rules of SPEC §3 stated in the OpenAPI document, from the
//! constants and the configuration the domain validates with, so that a client
//! generated from the document never sends what the server refuses. utoipa's
//! attributes take literals only; stating the rules here keeps each limit in
//! one place (the domain) and the request schemas' descriptions from the DTOs.

use serde_json::{Map, Value, json};

use super::App;
use crate::domain::MAX_NAME_CHARS;
use crate::domain::campaign::SendDays;
use crate::domain::contact::{MAX_ATTRIBUTE_KEY_CHARS, MAX_ATTRIBUTE_VALUE_CHARS, MAX_ATTRIBUTES, MAX_BATCH};
use crate::domain::template::MAX_TEMPLATE_CHARS;

/// Text with no NUL character, which PostgreSQL cannot store (`check_text`).
const NO_NUL: &str = r"^[^\u0000]*$";
/// Text with no NUL character and something other than whitespace (`check_name`).
const NOT_BLANK: &str = r"^[^\u0000]*[^\s\u0000][^\u0000]*$";
/// `HH:MM` on a 24-hour clock (`TimeOfDay`).
const TIME_OF_DAY: &str = "^(?:[01][0-9]|2[0-3]):[0-5][0-9]$";
/// The shipped template plugin's syntax (plugins/template-default): text in
/// which `{{` opens a placeholder — a variable, then `| upper`, `| lower`,
/// `| first_word` or `| default:"text"` filters — and `}}` closes it, with
/// something other than whitespace somewhere. Stricter than the plugin where
/// that keeps the expression short: ASCII names and whitespace only.
const DEFAULT_TEMPLATE: &str = concat!(
    r"^(?=[\s\S]*\S)(?:[^{}\u0000]|\{(?!\{)|\}(?!\})",
    r"|\{\{[ \t\r\n]*[A-Za-z_][A-Za-z0-9_.\-]*",
    r#"(?:[ \t\r\n]*\|[ \t\r\n]*(?:upper|lower|first_word|default[ \t\r\n]*:[ \t\r\n]*"#,
    r#"(?:"(?:[^"\\\u0000]|\\[^\u0000])*"|'(?:[^'\\\u0000]|\\[^\u0000])*')))*"#,
    r"[ \t\r\n]*\}\})*$",
);
/// The template plugin whose syntax [`DEFAULT_TEMPLATE`] states.
const DEFAULT_TEMPLATE_PLUGIN: &str = "builtin:default";

/// Adds the rules to the request schemas of `schemas` (`components.schemas`).
pub(super) fn state(schemas: &mut Value, app: &App) {
    let name = json!({ "minLength": 1, "maxLength": MAX_NAME_CHARS, "pattern": NOT_BLANK });
    let mut template = json!({ "minLength": 1, "maxLength": MAX_TEMPLATE_CHARS, "pattern": NO_NUL });
    if app.config.template == DEFAULT_TEMPLATE_PLUGIN {
        template["pattern"] = json!(DEFAULT_TEMPLATE);
    }
    let every_day = SendDays::from_bits(0x7f).expect("all seven days").names();
    let time_zones: Vec<&str> = chrono_tz::TZ_VARIANTS.iter().map(|zone| zone.name()).collect();
    let carriers: Vec<&str> = app.config.carriers.iter().map(|c| c.name.as_str()).collect();
    let campaign = [
        ("name", name.clone()),
        ("message_template", template.clone()),
        ("message_template_b", template),
        ("ab_test_percentage", json!({ "minimum": 0, "maximum": 100 })),
        (
            "daily_limit",
            json!({ "minimum": 1, "maximum": app.config.campaigns.max_daily_limit }),
        ),
        ("total_limit", json!({ "minimum": 1, "maximum": i32::MAX })),
        (
            "timezone",
            json!({ "enum": time_zones, "x-enum-varnames": time_zones.iter().copied().map(identifier).collect::<Vec<_>>() }),
        ),
        ("send_window_start", json!({ "pattern": TIME_OF_DAY })),
        ("send_window_end", json!({ "pattern": TIME_OF_DAY })),
        (
            "send_days",
            json!({ "minItems": 1, "items": { "type": "string", "enum": every_day } }),
        ),
        (
            "carrier",
            json!({ "type": null, "anyOf": [{ "type": "string", "enum": carriers }, { "type": "null" }] }),
        ),
    ];
    add(schemas, "CampaignInput", &campaign);
    add(schemas, "NewCampaign", &campaign);
    // A new campaign has no B template but the one its create request gives.
    let new_campaign = schemas["NewCampaign"]
        .as_object_mut()
        .expect("NewCampaign is documented");
    new_campaign.insert(
        "if".into(),
        json!({ "required": ["ab_test_percentage"], "properties": { "ab_test_percentage": { "type": "integer" } } }),
    );
    new_campaign.insert(
        "then".into(),
        json!({ "required": ["message_template_b"], "properties": { "message_template_b": { "type": "string" } } }),
    );

    let attributes = json!({
        "maxProperties": MAX_ATTRIBUTES,
        "propertyNames": { "minLength": 1, "maxLength": MAX_ATTRIBUTE_KEY_CHARS, "pattern": NOT_BLANK },
        "additionalProperties": { "type": "string", "maxLength": MAX_ATTRIBUTE_VALUE_CHARS, "pattern": NO_NUL },
    });
    let phone = json!({ "pattern": app.phone_policy.pattern() });
    add(
        schemas,
        "NewContactBody",
        &[
            ("phone_number", phone),
            ("name", name.clone()),
            ("attributes", attributes.clone()),
        ],
    );
    add(schemas, "ContactPatch", &[("name", name), ("attributes", attributes)]);
    add(
        schemas,
        "AddContacts",
        &[("contacts", json!({ "minItems": 1, "maxItems": MAX_BATCH }))],
    );
}

/// Merges each rule's keywords into the property it names; a keyword set to
/// null is removed.
fn add(schemas: &mut Value, schema: &str, rules: &[(&str, Value)]) {
    for (field, rule) in rules {
        let property = schemas[schema]["properties"][field]
            .as_object_mut()
            .unwrap_or_else(|| panic!("the document has no {schema}.{field} to state a rule on"));
        let rule: &Map<String, Value> = rule.as_object().expect("a rule is a set of keywords");
        for (keyword, value) in rule {
            match value {
                Value::Null => property.remove(keyword),
                value => property.insert(keyword.clone(), value.clone()),
            };
        }
    }
}

/// A time zone's name as an identifier (`Etc/GMT+1` → `ETC_GMT_PLUS_1`), for
/// client generators' enums (`x-enum-varnames`): left to themselves they drop
/// the punctuation, and `Etc/GMT+1` and `Etc/GMT-1` collide.
fn identifier(zone: &str) -> String {
    let mut name = String::new();
    let mut chars = zone.chars().peekable();
    while let Some(c) = chars.next() {
        let before_digit = chars.peek().is_some_and(char::is_ascii_digit);
        match c {
            c if c.is_ascii_alphanumeric() => name.push(c.to_ascii_uppercase()),
            '+' if before_digit => name.push_str("_PLUS_"),
            '-' if before_digit => name.push_str("_MINUS_"),
            _ => name.push('_'),
        }
    }
    name.split('_')
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("_")
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::identifier;

    #[test]
    fn every_time_zone_has_its_own_identifier() {
        assert_eq!(identifier("Etc/GMT+1"), "ETC_GMT_PLUS_1");
        assert_eq!(identifier("Etc/GMT-1"), "ETC_GMT_MINUS_1");
        assert_eq!(identifier("America/Port-au-Prince"), "AMERICA_PORT_AU_PRINCE");
        let names: HashSet<String> = chrono_tz::TZ_VARIANTS
            .iter()
            .map(|zone| identifier(zone.name()))
            .collect();
        assert_eq!(names.len(), chrono_tz::TZ_VARIANTS.len());
    }
}
