//! The recipient rules (SPEC §4.1) as a claim applies them: where each
//! recipient is, what the rule set and the user's frequency cap say now, and
//! whether the answer still holds for as long as a job may wait.

use chrono::{DateTime, Duration, Utc};

use crate::domain::campaign::{Campaign, QuietHours};
use crate::domain::compliance::{Decision, Limits, Recipient, RuleSet};
use crate::domain::message::{ClaimedMessage, Verdict};
use crate::domain::recipient::{Location, locate};
use crate::domain::settings::{CapOverflow, FrequencyCap};
use crate::domain::window::SendWindow;
use crate::store::HandOutJudge;

/// The rule id of the user's own frequency cap.
pub const FREQUENCY_CAP_RULE: &str = "frequency-cap";
/// A message skipped over the frequency cap fails with this reason.
pub const FREQUENCY_CAP_REASON: &str = "frequency_cap";

/// Judges one campaign's due messages at one instant.
pub struct Judge<'a> {
    rules: &'a RuleSet,
    window: SendWindow,
    quiet_hours: QuietHours,
    frequency_cap: Option<FrequencyCap>,
    now: DateTime<Utc>,
    /// How long a hand-out must stay allowed: the most a job waits before a
    /// dispatcher drops it unsent (the hand-off lease). A message is never
    /// handed out minutes before its recipient's hours close.
    lease: Duration,
}

impl<'a> Judge<'a> {
    pub fn new(
        rules: &'a RuleSet,
        campaign: &Campaign,
        frequency_cap: Option<FrequencyCap>,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Self {
        Self {
            rules,
            window: SendWindow::of(campaign),
            quiet_hours: campaign.quiet_hours,
            frequency_cap,
            now,
            lease,
        }
    }

    fn limits(&self) -> Limits<'_> {
        Limits {
            window: Some(&self.window),
            recipient_rules: self.quiet_hours == QuietHours::Recipient,
            frequency_cap: self.frequency_cap.map(FrequencyCap::cap),
        }
    }

    /// Whether any rule could hold a message: with the campaign's window only
    /// and no cap, the window (checked before the claim) is all there is.
    fn judges_anything(&self) -> bool {
        self.quiet_hours == QuietHours::Recipient || self.frequency_cap.is_some()
    }

    fn decide(&self, location: &Location, history: &[DateTime<Utc>], at: DateTime<Utc>) -> Decision {
        let recipient = Recipient {
            zones: &location.zones,
            region: location.region,
        };
        self.rules.decide(&recipient, &self.limits(), history, at)
    }
}

impl HandOutJudge for Judge<'_> {
    fn history_needed(&self, message: &ClaimedMessage) -> Option<Duration> {
        if !self.judges_anything() {
            return None;
        }
        let location = locate(message.phone_number.as_str(), &message.attributes);
        let recipient = Recipient {
            zones: &location.zones,
            region: location.region,
        };
        self.rules.history_needed(&recipient, &self.limits())
    }

    fn judge(&self, message: &ClaimedMessage, history: &[DateTime<Utc>]) -> Verdict {
        if !self.judges_anything() {
            return Verdict::HandOut;
        }
        let location = locate(message.phone_number.as_str(), &message.attributes);
        let decision = match self.decide(&location, history, self.now) {
            Decision::Allowed => self.decide(&location, history, self.now + self.lease),
            held => held,
        };
        match decision {
            Decision::Allowed => Verdict::HandOut,
            Decision::Held { rule, .. }
                if rule == FREQUENCY_CAP_RULE && self.frequency_cap.is_some_and(|c| c.over == CapOverflow::Skip) =>
            {
                Verdict::Skip {
                    reason: FREQUENCY_CAP_REASON.into(),
                }
            }
            Decision::Held { rule, until } => Verdict::Hold {
                rule,
                until,
                zones: location.zone_names(),
            },
        }
    }

    fn rule_set(&self) -> &str {
        self.rules.version()
    }
}
