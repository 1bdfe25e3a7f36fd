//! Contacts: the rules for names, attributes and a batch of new contacts.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};

pub use super::check_name;
use super::ids::{ContactId, UserId};
use super::phone::{PhoneNumber, PhonePolicy};
use super::{DomainError, Errors, char_len, check_text};

pub const MAX_BATCH: usize = 10_000;
pub const MAX_ATTRIBUTES: usize = 50;
pub const MAX_ATTRIBUTE_KEY_CHARS: usize = 64;
pub const MAX_ATTRIBUTE_VALUE_CHARS: usize = 1024;

pub type Attributes = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Contact {
    pub id: ContactId,
    pub user_id: UserId,
    pub phone_number: PhoneNumber,
    pub name: String,
    pub opted_out: bool,
    #[sqlx(json)]
    pub attributes: Attributes,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Moved on by every write; a write lands only on the version it read.
    pub version: i64,
}

/// A validated contact ready to be written (phone already normalized).
#[derive(Debug, Clone, PartialEq)]
pub struct NewContact {
    pub phone_number: PhoneNumber,
    pub name: String,
    pub attributes: Attributes,
}

/// A contact as a client sent it, before validation.
#[derive(Debug, Clone, Default)]
pub struct ContactInput {
    pub phone_number: String,
    pub name: String,
    pub attributes: Attributes,
}

/// Where a change of consent came from, kept for audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::Display, strum::EnumString, strum::IntoStaticStr)]
#[strum(serialize_all = "lowercase")]
pub enum ConsentSource {
    Api,
    Keyword,
    Import,
    /// The carrier refused a message because the recipient opted out with it.
    Carrier,
}

impl ConsentSource {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Changes a client may make to a contact.
#[derive(Debug, Clone, Default)]
pub struct ContactChanges {
    pub name: Option<String>,
    pub attributes: Option<Attributes>,
    pub opted_out: Option<bool>,
}

pub fn check_attributes(attributes: &Attributes) -> Result<(), String> {
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(format!(
            "at most {MAX_ATTRIBUTES} attributes (got {})",
            attributes.len()
        ));
    }
    for (key, value) in attributes {
        check_text(key).map_err(|e| format!("attribute name {key:?} {e}"))?;
        check_text(value).map_err(|e| format!("attribute {key:?} {e}"))?;
        let key_len = char_len(key);
        if key.trim().is_empty() || key_len > MAX_ATTRIBUTE_KEY_CHARS {
            return Err(format!(
                "attribute name {key:?} must be 1-{MAX_ATTRIBUTE_KEY_CHARS} characters"
            ));
        }
        if char_len(value) > MAX_ATTRIBUTE_VALUE_CHARS {
            return Err(format!(
                "attribute {key:?} must be at most {MAX_ATTRIBUTE_VALUE_CHARS} characters"
            ));
        }
    }
    Ok(())
}

/// Validates one contact; field names in errors are prefixed with `prefix`.
pub fn validate(input: ContactInput, policy: &PhonePolicy, prefix: &str, errors: &mut Errors) -> Option<NewContact> {
    let phone = errors.check(&format!("{prefix}phone_number"), policy.normalize(&input.phone_number));
    let name_ok = errors
        .check(&format!("{prefix}name"), check_name(&input.name))
        .is_some();
    let attributes_ok = errors
        .check(&format!("{prefix}attributes"), check_attributes(&input.attributes))
        .is_some();
    let phone_number = phone?;
    (name_ok && attributes_ok).then(|| NewContact {
        phone_number,
        name: input.name.trim().to_string(),
        attributes: input.attributes,
    })
}

/// A batch of contacts with in-batch repeats of a phone number removed.
#[derive(Debug, Default)]
pub struct Batch {
    pub contacts: Vec<NewContact>,
    /// Phones repeated earlier in the same batch (counted as duplicates).
    pub repeats: u64,
}

/// Keeps the first occurrence of each phone number across a whole request or file.
#[derive(Debug, Default)]
pub struct RepeatFilter(HashSet<String>);

impl RepeatFilter {
    /// True if this phone number was seen before.
    pub fn is_repeat(&mut self, phone: &str) -> bool {
        !self.0.insert(phone.to_string())
    }
}

/// Validates a JSON batch all-or-nothing: any bad item fails the whole request.
pub fn validate_batch(inputs: Vec<ContactInput>, policy: &PhonePolicy) -> Result<Batch, DomainError> {
    if inputs.is_empty() {
        return Err(DomainError::field("contacts", "must contain at least one contact"));
    }
    if inputs.len() > MAX_BATCH {
        return Err(DomainError::field(
            "contacts",
            format!("at most {MAX_BATCH} contacts per request (got {})", inputs.len()),
        ));
    }
    let mut errors = Errors::default();
    let mut seen = RepeatFilter::default();
    let mut batch = Batch::default();
    for (i, input) in inputs.into_iter().enumerate() {
        if let Some(contact) = validate(input, policy, &format!("contacts[{i}]."), &mut errors) {
            if seen.is_repeat(&contact.phone_number) {
                batch.repeats += 1;
            } else {
                batch.contacts.push(contact);
            }
        }
    }
    errors.into_result().map(|()| batch)
}

/// Applies a PATCH, returning the updated contact and whether consent changed.
pub fn update(current: &Contact, changes: ContactChanges, now: DateTime<Utc>) -> Result<(Contact, bool), DomainError> {
    let mut errors = Errors::default();
    let mut contact = current.clone();
    if let Some(name) = changes.name
        && errors.check("name", check_name(&name)).is_some()
    {
        contact.name = name.trim().to_string();
    }
    if let Some(attributes) = changes.attributes
        && errors.check("attributes", check_attributes(&attributes)).is_some()
    {
        contact.attributes = attributes;
    }
    errors.into_result()?;
    let consent_changed = changes.opted_out.is_some_and(|o| o != current.opted_out);
    if let Some(opted_out) = changes.opted_out {
        contact.opted_out = opted_out;
    }
    contact.updated_at = now;
    Ok((contact, consent_changed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(phone: &str, name: &str) -> ContactInput {
        ContactInput {
            phone_number: phone.into(),
            name: name.into(),
            attributes: Attributes::new(),
        }
    }

    #[test]
    fn batch_drops_repeats_and_normalizes() {
        let batch = validate_batch(
            vec![
                input("+15551230001", "A"),
                input("(555) 123-0001", "B"),
                input("5551230002", "C"),
            ],
            &PhonePolicy::default(),
        )
        .unwrap();
        assert_eq!(batch.repeats, 1);
        let phones: Vec<_> = batch.contacts.iter().map(|c| c.phone_number.as_str()).collect();
        assert_eq!(phones, ["+15551230001", "+15551230002"]);
    }

    #[test]
    fn batch_names_every_bad_item() {
        let err = validate_batch(
            vec![
                input("+15551230001", "ok"),
                input("123", ""),
                input("+15551230003", &"n".repeat(101)),
            ],
            &PhonePolicy::default(),
        )
        .unwrap_err();
        let DomainError::Invalid(errors) = err else { panic!() };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["contacts[1].phone_number", "contacts[1].name", "contacts[2].name"]
        );
    }

    #[test]
    fn batch_size_is_bounded() {
        assert!(validate_batch(vec![], &PhonePolicy::default()).is_err());
        let many = vec![input("+15551230001", "x"); MAX_BATCH + 1];
        assert!(validate_batch(many, &PhonePolicy::default()).is_err());
    }

    #[test]
    fn attributes_are_bounded() {
        let mut attributes = Attributes::new();
        attributes.insert("".into(), "x".into());
        assert!(check_attributes(&attributes).is_err());
        let many: Attributes = (0..51).map(|i| (format!("k{i}"), "v".to_string())).collect();
        assert!(check_attributes(&many).is_err());
    }
}
