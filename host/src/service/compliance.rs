//! The recipient rules (SPEC §4.1) as a claim applies them: where each
//! recipient is, what the rule set and the user's frequency cap say now, and
//! whether the answer still holds for as long as a job may wait.

use std::collections::HashMap;
use std::sync::Mutex;

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
    /// Verdicts by location for recipients without a history to weigh: a
    /// batch of thousands holds a few hundred distinct locations at most.
    memo: Mutex<HashMap<Location, Verdict>>,
    /// [`Judge::allowed_until`] by location, likewise.
    ends: Mutex<HashMap<Location, Option<DateTime<Utc>>>>,
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
            memo: Mutex::new(HashMap::new()),
            ends: Mutex::new(HashMap::new()),
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
        let location = locate(message.phone_number.as_str(), &message.attributes);
        if !self.judges_anything() {
            return Verdict::HandOut {
                zones: location.zone_names(),
            };
        }
        if !history.is_empty() {
            return self.verdict(location, history);
        }
        let mut memo = self.memo.lock().expect("verdict memo");
        if let Some(known) = memo.get(&location) {
            return known.clone();
        }
        let verdict = self.verdict(location.clone(), history);
        memo.insert(location, verdict.clone());
        verdict
    }

    fn rule_set(&self) -> &str {
        self.rules.version()
    }
}

impl Judge<'_> {
    /// When the recipient's allowed hours (and the campaign's window) end, for
    /// a message handed out now: its job must not be sent later. `now` when
    /// they are closed now (a hand-out judged earlier, handed out again);
    /// `None` when no recipient rule applies.
    pub fn allowed_until(&self, message: &ClaimedMessage) -> Option<DateTime<Utc>> {
        if self.quiet_hours != QuietHours::Recipient {
            return None;
        }
        let location = locate(message.phone_number.as_str(), &message.attributes);
        let mut ends = self.ends.lock().expect("allowed-until memo");
        if let Some(known) = ends.get(&location) {
            return *known;
        }
        let recipient = Recipient {
            zones: &location.zones,
            region: location.region,
        };
        let limits = Limits {
            frequency_cap: None,
            ..self.limits()
        };
        let end = match self.rules.decide(&recipient, &limits, &[], self.now) {
            Decision::Allowed => Some(self.rules.allowed_until(&recipient, &limits, self.now))
                .filter(|&end| end < DateTime::<Utc>::MAX_UTC),
            Decision::Held { .. } => Some(self.now),
        };
        ends.insert(location, end);
        end
    }

    fn verdict(&self, location: Location, history: &[DateTime<Utc>]) -> Verdict {
        let decision = match self.decide(&location, history, self.now) {
            Decision::Allowed => self.decide(&location, history, self.now + self.lease),
            held => held,
        };
        match decision {
            Decision::Allowed => Verdict::HandOut {
                zones: location.zone_names(),
            },
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
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::domain::campaign::{CampaignChanges, CampaignRules, create};
    use crate::domain::contact::Attributes;
    use crate::domain::ids::{CampaignId, ContactId, MessageId, UserId};
    use crate::domain::phone::PhonePolicy;
    use crate::domain::variant::Variant;

    fn campaign(quiet_hours: &str) -> Campaign {
        let carriers = ["log".to_string()];
        let changes = CampaignChanges {
            name: Some("National".into()),
            message_template: Some("Hi".into()),
            timezone: Some("UTC".into()),
            send_window_start: Some("00:00".into()),
            send_window_end: Some("23:59".into()),
            send_days: Some(
                ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
                    .map(String::from)
                    .to_vec(),
            ),
            quiet_hours: Some(quiet_hours.into()),
            ..Default::default()
        };
        let rules = CampaignRules {
            carriers: &carriers,
            max_daily_limit: 1000,
        };
        create(CampaignId::default(), UserId::default(), changes, &rules, Utc::now()).unwrap()
    }

    fn message(phone: &str) -> ClaimedMessage {
        ClaimedMessage {
            id: MessageId::new(),
            campaign_id: CampaignId::default(),
            contact_id: ContactId::default(),
            variant: Variant::A,
            hand_off: 0,
            attempts: 0,
            carrier: "log".into(),
            phone_number: PhonePolicy::new(&["1".to_string()]).normalize(phone).unwrap(),
            name: "Ada".into(),
            attributes: Attributes::new(),
        }
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    const LEASE: Duration = Duration::minutes(2);

    fn handed_out_in(zones: &str) -> Verdict {
        Verdict::HandOut { zones: zones.into() }
    }

    #[test]
    fn a_message_is_not_handed_out_minutes_before_its_recipients_hours_close() {
        let national = campaign("recipient");
        let rules = RuleSet::shipped();
        // Tuesday 20:59 in New York: open now, closed before a job could wait its lease out.
        let late = Judge::new(rules, &national, None, utc(2026, 11, 25, 1, 59), LEASE);
        match late.judge(&message("+12125550100"), &[]) {
            Verdict::Hold { rule, until, zones } => {
                assert_eq!((rule.as_str(), zones.as_str()), ("us-federal", "America/New_York"));
                assert_eq!(until, utc(2026, 11, 25, 13, 0), "Wednesday 08:00 EST");
            }
            other => panic!("expected a hold, got {other:?}"),
        }
        let earlier = Judge::new(rules, &national, None, utc(2026, 11, 25, 1, 57), LEASE);
        assert_eq!(
            earlier.judge(&message("+12125550100"), &[]),
            handed_out_in("America/New_York")
        );
    }

    #[test]
    fn a_job_carries_when_its_recipients_hours_end() {
        let rules = RuleSet::shipped();
        // Tuesday 19:30 in New York.
        let evening = utc(2026, 11, 25, 0, 30);
        let judge = Judge::new(rules, &campaign("recipient"), None, evening, LEASE);
        assert_eq!(
            judge.allowed_until(&message("+12125550100")),
            Some(utc(2026, 11, 25, 2, 0)),
            "21:00 EST"
        );
        // Florida closes at 20:00.
        assert_eq!(
            judge.allowed_until(&message("+13055550100")),
            Some(utc(2026, 11, 25, 1, 0))
        );
        // Handed out again after 21:00 (the recovery sweep): expired at once.
        let late = Judge::new(rules, &campaign("recipient"), None, utc(2026, 11, 25, 3, 0), LEASE);
        assert_eq!(
            late.allowed_until(&message("+12125550100")),
            Some(utc(2026, 11, 25, 3, 0))
        );
        let original = Judge::new(rules, &campaign("campaign"), None, evening, LEASE);
        assert_eq!(original.allowed_until(&message("+12125550100")), None);
    }

    #[test]
    fn the_campaigns_clock_alone_ignores_the_recipient() {
        let rules = RuleSet::shipped();
        // 03:00 in Los Angeles.
        let night = utc(2026, 11, 24, 11, 0);
        let original = campaign("campaign");
        assert_eq!(
            Judge::new(rules, &original, None, night, LEASE).judge(&message("+14155550100"), &[]),
            handed_out_in("America/Los_Angeles")
        );
        let judge = Judge::new(rules, &campaign("recipient"), None, night, LEASE);
        assert!(matches!(
            judge.judge(&message("+14155550100"), &[]),
            Verdict::Hold { .. }
        ));
        assert_eq!(
            judge.history_needed(&message("+14155550100")),
            None,
            "California has no cap"
        );
        assert_eq!(
            judge.history_needed(&message("+13055550100")),
            Some(Duration::hours(24)),
            "Florida's 3 per 24 h needs a day of history"
        );
    }

    #[test]
    fn over_the_frequency_cap_a_message_waits_or_is_skipped() {
        let rules = RuleSet::shipped();
        let noon = utc(2026, 11, 24, 17, 0);
        let sent_an_hour_ago = [noon - Duration::hours(1)];
        let cap = |over| FrequencyCap {
            max: 1,
            hours: 24,
            over,
        };
        let holding = Judge::new(rules, &campaign("recipient"), Some(cap(CapOverflow::Hold)), noon, LEASE);
        match holding.judge(&message("+12125550100"), &sent_an_hour_ago) {
            Verdict::Hold { rule, until, .. } => {
                assert_eq!(rule, FREQUENCY_CAP_RULE);
                assert_eq!(until, noon + Duration::hours(23));
            }
            other => panic!("expected a hold, got {other:?}"),
        }
        let skipping = Judge::new(rules, &campaign("campaign"), Some(cap(CapOverflow::Skip)), noon, LEASE);
        assert_eq!(
            skipping.judge(&message("+12125550100"), &sent_an_hour_ago),
            Verdict::Skip {
                reason: FREQUENCY_CAP_REASON.into()
            }
        );
        assert_eq!(
            skipping.judge(&message("+12125550100"), &[]),
            handed_out_in("America/New_York")
        );
    }
}
