//! Domain rules: validation, status moves, phone normalization, pagination and
//! CSV row parsing. Pure functions over plain types: no I/O, and nothing here
//! knows HTTP, SQL or NATS.

pub mod audit;
pub mod campaign;
pub mod compliance;
pub mod contact;
pub mod csv_import;
pub mod forecast;
pub mod ids;
pub mod keyword;
pub mod message;
pub mod page;
pub mod phone;
pub mod recipient;
pub mod recipient_zone;
pub mod refusal;
pub mod result;
pub mod retry;
pub mod settings;
pub mod stats;
pub mod template;
pub mod variant;
pub mod window;

use serde::Serialize;

/// One failed field of a request, addressed like `contacts[3].phone_number`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DomainError {
    /// Field validation failed (HTTP 422).
    #[error("validation failed")]
    Invalid(Vec<FieldError>),
    /// A business rule forbids the operation (HTTP 400).
    #[error("{0}")]
    Forbidden(String),
}

impl DomainError {
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldError::new(field, message)])
    }
}

/// Collects field errors so every problem of a request is reported at once.
#[derive(Debug, Default)]
pub struct Errors(Vec<FieldError>);

impl Errors {
    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    /// Records the error of `result` under `field` and returns its value, if any.
    pub fn check<T>(&mut self, field: &str, result: Result<T, String>) -> Option<T> {
        result.map_err(|message| self.push(field, message)).ok()
    }

    pub fn into_result(self) -> Result<(), DomainError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(DomainError::Invalid(self.0))
        }
    }
}

/// Length in characters (not bytes), as users count them.
pub(crate) fn char_len(s: &str) -> usize {
    s.chars().count()
}

/// The rule every free-text string of a request passes before anything else:
/// no NUL character. PostgreSQL's `text` cannot store one (the write would fail
/// with a 500) while SQLite would store it, so Herald refuses it up front, the same
/// way on both databases. (Invalid UTF-8 never gets this far: serde and the CSV
/// reader refuse it.)
pub fn check_text(value: &str) -> Result<(), String> {
    match value.contains('\0') {
        true => Err(NUL_MESSAGE.into()),
        false => Ok(()),
    }
}

pub const NUL_MESSAGE: &str = "must not contain a NUL character";

/// Names of campaigns and contacts: not blank, at most this many characters.
pub const MAX_NAME_CHARS: usize = 100;

pub fn check_name(name: &str) -> Result<(), String> {
    check_text(name)?;
    let len = char_len(name);
    if name.trim().is_empty() {
        Err("must not be blank".into())
    } else if len > MAX_NAME_CHARS {
        Err(format!("must be at most {MAX_NAME_CHARS} characters (got {len})"))
    } else {
        Ok(())
    }
}
