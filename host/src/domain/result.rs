//! What a send's outcome does to its message (SPEC §4 retries, postponements,
//! unknown outcomes, carrier opt-outs) and when a campaign fails too often
//! (auto-pause). Pure: the scheduler applies what these decide.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use super::ids::CampaignId;
use chrono::{DateTime, Utc};

use super::message::{MessageChange, MessageStatus, OPTED_OUT, SendOutcome, SendResult};
use super::retry::RetryPolicy;

/// The write a dispatcher's result asks for. Pure: `jitter` in `[0, 1)` comes from the caller.
pub fn plan_change(result: &SendResult, policy: &RetryPolicy, now: DateTime<Utc>, jitter: f64) -> MessageChange {
    let mut change = MessageChange {
        id: result.message_id,
        hand_off: result.hand_off,
        status: MessageStatus::Failed,
        attempts: result.attempts + 1,
        carrier_message_id: None,
        segments: None,
        not_before: None,
        error: None,
        at: now,
        release_slot: false,
        outcome_unknown: false,
        carrier_opt_out: None,
    };
    match &result.outcome {
        SendOutcome::Sent {
            carrier_message_id,
            segments,
            delivered,
        } => {
            change.status = if *delivered {
                MessageStatus::Delivered
            } else {
                MessageStatus::Sent
            };
            change.carrier_message_id = Some(carrier_message_id.clone());
            change.segments = Some(*segments as i32);
        }
        SendOutcome::Failed { reason } => change.error = Some(reason.clone()),
        SendOutcome::Retry { reason, retry_after_ms } => {
            if change.attempts as u32 >= policy.max_attempts {
                change.error = Some(format!("{reason} (gave up after {} attempts)", change.attempts));
            } else {
                let retry_after = retry_after_ms.map(Duration::from_millis);
                let delay = policy.delay(change.attempts as u32, retry_after, jitter);
                change.status = MessageStatus::Queued;
                change.release_slot = true;
                change.not_before = Some(now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX));
                change.error = Some(reason.clone());
            }
        }
        SendOutcome::Postponed { until, reason } => {
            change.status = MessageStatus::Queued;
            change.attempts = result.attempts;
            change.not_before = Some((*until).max(now));
            change.error = Some(reason.clone());
            change.release_slot = true;
        }
        SendOutcome::Unknown { reason } => {
            change.status = MessageStatus::Sending;
            change.outcome_unknown = true;
            change.error = Some(format!("outcome unknown, held for reconciliation: {reason}"));
        }
        SendOutcome::OptedOut { reason } => {
            change.error = Some(OPTED_OUT.into());
            change.carrier_opt_out = Some(reason.clone());
        }
    }
    change
}

/// The last outcomes of each campaign's sends (failed or not), for auto-pause.
/// Kept in memory: each api host judges the results it applies.
pub struct RecentOutcomes {
    window: usize,
    by_campaign: Mutex<HashMap<CampaignId, VecDeque<bool>>>,
}

impl RecentOutcomes {
    pub fn new(window: u32) -> Self {
        Self {
            window: window.max(1) as usize,
            by_campaign: Mutex::new(HashMap::new()),
        }
    }

    pub fn record(&self, campaign: CampaignId, failed: bool) {
        let mut all = self.by_campaign.lock().expect("outcomes lock");
        let outcomes = all.entry(campaign).or_default();
        if outcomes.len() == self.window {
            outcomes.pop_front();
        }
        outcomes.push_back(failed);
    }

    /// `(failed, window)` when a full window's failed share is over `limit`.
    pub fn failing(&self, campaign: CampaignId, limit: f64) -> Option<(usize, usize)> {
        let all = self.by_campaign.lock().expect("outcomes lock");
        let outcomes = all.get(&campaign).filter(|o| o.len() == self.window)?;
        let failed = outcomes.iter().filter(|&&f| f).count();
        (failed as f64 / self.window as f64 > limit).then_some((failed, self.window))
    }

    pub fn forget(&self, campaign: CampaignId) {
        self.by_campaign.lock().expect("outcomes lock").remove(&campaign);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(outcome: SendOutcome, attempts: i32) -> SendResult {
        SendResult {
            message_id: crate::domain::ids::MessageId::new(),
            hand_off: 3,
            attempts,
            outcome,
            at: Utc::now(),
        }
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_secs(10),
            max_delay: Duration::from_secs(600),
        }
    }

    #[test]
    fn sent_counts_an_attempt_and_keeps_the_carrier_id() {
        let now = Utc::now();
        let sent = SendOutcome::Sent {
            carrier_message_id: "SM1".into(),
            segments: 2,
            delivered: false,
        };
        let change = plan_change(&result(sent, 0), &policy(), now, 0.5);
        assert_eq!(change.status, MessageStatus::Sent);
        assert_eq!((change.attempts, change.hand_off), (1, 3));
        assert_eq!(change.carrier_message_id.as_deref(), Some("SM1"));
        assert_eq!(change.segments, Some(2));
    }

    #[test]
    fn retries_back_off_until_attempts_run_out() {
        let now = Utc::now();
        let retry = || SendOutcome::Retry {
            reason: "503".into(),
            retry_after_ms: Some(60_000),
        };
        let first = plan_change(&result(retry(), 0), &policy(), now, 0.0);
        assert_eq!(first.status, MessageStatus::Queued);
        // The carrier's retry-after (60 s) beats the first backoff (10 s).
        assert!(first.not_before.unwrap() >= now + chrono::Duration::seconds(60));
        let last = plan_change(&result(retry(), 2), &policy(), now, 0.0);
        assert_eq!(last.status, MessageStatus::Failed);
        assert_eq!(last.attempts, 3);
        assert!(last.error.unwrap().contains("after 3 attempts"));
    }

    #[test]
    fn a_full_window_over_the_limit_is_failing() {
        let outcomes = RecentOutcomes::new(4);
        let campaign = CampaignId::new();
        for failed in [true, true, true] {
            outcomes.record(campaign, failed);
        }
        assert_eq!(
            outcomes.failing(campaign, 0.5),
            None,
            "not judged before the window is full"
        );
        outcomes.record(campaign, false);
        assert_eq!(outcomes.failing(campaign, 0.5), Some((3, 4)));
        outcomes.record(campaign, false);
        assert_eq!(outcomes.failing(campaign, 0.5), None, "2 of the last 4 is not over 50%");
        outcomes.forget(campaign);
        assert_eq!(outcomes.failing(campaign, 0.0), None);
    }

    #[test]
    fn an_unknown_outcome_is_held_not_retried() {
        let now = Utc::now();
        let unknown = SendOutcome::Unknown {
            reason: "timeout".into(),
        };
        let change = plan_change(&result(unknown, 0), &policy(), now, 0.0);
        assert_eq!(change.status, MessageStatus::Sending);
        assert!(change.outcome_unknown && !change.release_slot);
        assert_eq!(change.not_before, None, "never queued again");
    }

    #[test]
    fn a_carrier_opt_out_fails_the_message_and_names_the_reason() {
        let refused = SendOutcome::OptedOut {
            reason: "opted-out: Twilio error 21610".into(),
        };
        let change = plan_change(&result(refused, 0), &policy(), Utc::now(), 0.0);
        assert_eq!(change.status, MessageStatus::Failed);
        assert_eq!(change.error.as_deref(), Some(OPTED_OUT));
        assert_eq!(change.carrier_opt_out.as_deref(), Some("opted-out: Twilio error 21610"));
    }

    #[test]
    fn hand_offs_that_go_again_give_their_daily_slot_back() {
        let now = Utc::now();
        let retry = SendOutcome::Retry {
            reason: "503".into(),
            retry_after_ms: None,
        };
        assert!(plan_change(&result(retry.clone(), 0), &policy(), now, 0.0).release_slot);
        assert!(
            !plan_change(&result(retry, 2), &policy(), now, 0.0).release_slot,
            "the last attempt was handed to the carrier and stays counted"
        );
        let sent = SendOutcome::Sent {
            carrier_message_id: "SM1".into(),
            segments: 1,
            delivered: false,
        };
        assert!(!plan_change(&result(sent, 0), &policy(), now, 0.0).release_slot);
    }

    #[test]
    fn postponed_does_not_spend_an_attempt() {
        let now = Utc::now();
        let until = now + chrono::Duration::hours(3);
        let postponed = SendOutcome::Postponed {
            until,
            reason: "window closed".into(),
        };
        let change = plan_change(&result(postponed, 2), &policy(), now, 0.0);
        assert_eq!((change.status, change.attempts), (MessageStatus::Queued, 2));
        assert_eq!(change.not_before, Some(until));
        assert!(change.release_slot, "a postponed hand-off gives its daily slot back");
    }
}
