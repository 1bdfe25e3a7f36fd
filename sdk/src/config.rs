//! The plugin's settings: for a carrier, the `settings` table of its
//! `[[carriers]]` entry in Herald's configuration (secrets already resolved by
//! Herald).
//!
//! ```no_run
//! use herald_sdk::config;
//!
//! # fn main() -> Result<(), config::ConfigError> {
//! let account = config::require("account_sid")?; // error names the missing key
//! let region = config::get("region").unwrap_or_else(|| "us1".to_string());
//! let retries: u32 = config::get_parsed("max_retries")?.unwrap_or(3);
//! # let _ = (account, region, retries);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::str::FromStr;

/// The setting `key`, or `None` when it is not set.
pub fn get(key: &str) -> Option<String> {
    crate::sys::config_get(key)
}

/// The setting `key`, or [`ConfigError::Missing`] naming it when it is not set
/// or is empty.
pub fn require(key: &str) -> Result<String, ConfigError> {
    match get(key) {
        Some(value) if !value.is_empty() => Ok(value),
        _ => Err(ConfigError::Missing { key: key.to_string() }),
    }
}

/// The setting `key` parsed with [`FromStr`] (surrounding whitespace ignored):
/// `Ok(None)` when unset, [`ConfigError::Invalid`] when it does not parse.
///
/// `bool` accepts `true` and `false`; numbers use Rust's syntax.
pub fn get_parsed<T>(key: &str) -> Result<Option<T>, ConfigError>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    match get(key) {
        None => Ok(None),
        Some(value) => value
            .trim()
            .parse()
            .map(Some)
            .map_err(|error: T::Err| ConfigError::Invalid {
                key: key.to_string(),
                reason: error.to_string(),
            }),
    }
}

/// A setting the plugin needs is missing or unusable. The message names the
/// key but never the value, which may be a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The setting is not set (or empty).
    Missing {
        /// The setting's name.
        key: String,
    },
    /// The setting is set but its value is not usable.
    Invalid {
        /// The setting's name.
        key: String,
        /// Why the value was rejected.
        reason: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Missing { key } => {
                write!(
                    f,
                    "missing setting `{key}`: add it to this plugin's `settings` in Herald's configuration"
                )
            }
            ConfigError::Invalid { key, reason } => write!(f, "invalid setting `{key}`: {reason}"),
        }
    }
}

impl std::error::Error for ConfigError {}
