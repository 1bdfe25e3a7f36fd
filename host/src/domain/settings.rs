//! A user's own settings: the frequency cap across campaigns (SPEC §4.1).

use serde::{Deserialize, Serialize};

use super::compliance::Cap;
use super::{DomainError, Errors};

/// What happens to a message over the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, strum::Display, strum::EnumString)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum CapOverflow {
    /// It waits until the window has room again.
    #[default]
    Hold,
    /// It fails with reason `frequency_cap`.
    Skip,
}

/// At most `max` messages per contact per rolling `hours`, across all of the
/// user's campaigns, counted from what was handed to carriers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrequencyCap {
    pub max: u32,
    pub hours: u32,
    #[serde(default)]
    pub over: CapOverflow,
}

/// The longest rolling window a cap may have: the hand-out history kept.
pub const MAX_CAP_HOURS: u32 = 24 * 30;
/// The most messages a cap may allow (a larger one is no cap).
pub const MAX_CAP_MESSAGES: u32 = 10_000;

impl FrequencyCap {
    /// Checks the bounds: `max` 1–10,000, `hours` 1–720.
    pub fn validate(self) -> Result<Self, DomainError> {
        let mut errors = Errors::default();
        if self.max == 0 || self.max > MAX_CAP_MESSAGES {
            errors.push("frequency_cap.max", format!("must be 1 to {MAX_CAP_MESSAGES}"));
        }
        if self.hours == 0 || self.hours > MAX_CAP_HOURS {
            errors.push("frequency_cap.hours", format!("must be 1 to {MAX_CAP_HOURS}"));
        }
        errors.into_result().map(|()| self)
    }

    /// The cap as the rule engine counts it.
    pub fn cap(self) -> Cap {
        Cap {
            max: self.max,
            hours: self.hours,
        }
    }
}
