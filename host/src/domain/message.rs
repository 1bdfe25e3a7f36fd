//! Messages: one per (campaign, contact), from `queued` to a final state.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ids::{CampaignId, ContactId, MessageId, TaskId, UserId};

use super::contact::Attributes;
use super::phone::PhoneNumber;
use super::variant::Variant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::Display, strum::EnumString, strum::IntoStaticStr)]
#[strum(serialize_all = "lowercase")]
pub enum MessageStatus {
    Queued,
    Sending,
    Sent,
    Delivered,
    Failed,
}

impl MessageStatus {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Every status, in the order a message moves through them.
    pub const ALL: [Self; 5] = [Self::Queued, Self::Sending, Self::Sent, Self::Delivered, Self::Failed];

    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }

    pub fn is_final(self) -> bool {
        matches!(self, Self::Sent | Self::Delivered | Self::Failed)
    }
}

/// Why a message failed: its contact opted out (before it went, or as the
/// carrier refused it).
pub const OPTED_OUT: &str = "opted_out";
/// Why a message failed: its send outcome stayed unknown and no receipt
/// reconciled it in time.
pub const UNKNOWN_OUTCOME: &str = "unknown_outcome";

/// A send request, as the store needs it to create message rows.
#[derive(Debug, Clone)]
pub struct SendRequest {
    pub task_id: TaskId,
    pub user_id: UserId,
    pub campaign_id: CampaignId,
    pub b_percentage: Option<i32>,
    pub carrier: String,
    pub not_before: DateTime<Utc>,
    /// `scheduled_for` of the task: when the window next opens, if closed now.
    pub scheduled_for: Option<DateTime<Utc>>,
    pub now: DateTime<Utc>,
}

/// A message taken by the scheduler for a hand-off to a dispatcher.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ClaimedMessage {
    pub id: MessageId,
    pub campaign_id: CampaignId,
    pub contact_id: ContactId,
    pub variant: Variant,
    pub hand_off: i32,
    pub attempts: i32,
    pub carrier: String,
    pub phone_number: PhoneNumber,
    pub name: String,
    #[sqlx(json)]
    pub attributes: Attributes,
}

/// A write that moves a message on, guarded by its hand-off number.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageChange {
    pub id: MessageId,
    /// Applies only while the message is `sending` on this hand-off.
    pub hand_off: i32,
    pub status: MessageStatus,
    pub attempts: i32,
    pub carrier_message_id: Option<String>,
    pub segments: Option<i32>,
    /// For `queued`: when to hand it out again.
    pub not_before: Option<DateTime<Utc>>,
    pub error: Option<String>,
    pub at: DateTime<Utc>,
    /// Gives the hand-off's daily-limit slot back: the message was not handed
    /// to the carrier, or will be handed again (and counted) later.
    pub release_slot: bool,
    /// The send outcome is unknown: the message stays `sending`, held for a
    /// receipt to reconcile it, and is not handed out again.
    pub outcome_unknown: bool,
    /// The carrier said the recipient opted out: opt the contact out, with
    /// the carrier's words as the consent record's detail.
    pub carrier_opt_out: Option<String>,
}

/// A message as it is after a change: what events and follow-ups need.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct MessageRecord {
    pub id: MessageId,
    pub user_id: UserId,
    pub campaign_id: CampaignId,
    pub contact_id: ContactId,
    pub variant: Variant,
    pub status: MessageStatus,
    pub carrier: String,
    pub carrier_message_id: Option<String>,
    pub segments: Option<i32>,
    pub attempts: i32,
    pub error: Option<String>,
    pub not_before: DateTime<Utc>,
    /// The hand-off it is on (or was last on).
    pub hand_off: i32,
}

/// A send task and its message counters.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskReport {
    pub id: TaskId,
    pub campaign_id: CampaignId,
    /// Messages the task has created so far.
    pub queued: u64,
    /// Still creating messages (in the background).
    pub queuing: bool,
    pub created_at: DateTime<Utc>,
    pub scheduled_for: Option<DateTime<Utc>>,
    /// `(status, hold rule, count)` of the task's messages now.
    pub counts: Vec<(MessageStatus, String, u64)>,
}

/// A carrier's verified delivery receipt.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Receipt {
    pub carrier: String,
    pub carrier_message_id: String,
    /// `Delivered` or `Failed`; `Sent` only reconciles an unknown outcome.
    pub status: MessageStatus,
    pub error: Option<String>,
    /// Herald's message id, when the carrier's callback named it (its URL's
    /// `herald_message_id`): matches a receipt to a message whose send result
    /// never came.
    pub message_id: Option<MessageId>,
    pub at: DateTime<Utc>,
}

/// What became of a receipt.
#[derive(Debug, Clone, PartialEq)]
pub enum ReceiptOutcome {
    /// It moved this message on.
    Applied(MessageRecord),
    /// No message carries its carrier id yet: kept, and applied once the send
    /// result naming that id lands.
    Kept,
    /// Already applied, or about a message already final: nothing to do.
    Ignored,
}

/// What became of a job, sent back to the api role, which persists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendResult {
    pub message_id: MessageId,
    /// The hand-off of the job this answers (read under its former name too).
    #[serde(alias = "dispatch")]
    pub hand_off: i32,
    /// Carrier attempts before this job (copied from the job).
    pub attempts: i32,
    pub outcome: SendOutcome,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SendOutcome {
    /// The carrier accepted the message.
    Sent {
        carrier_message_id: String,
        segments: u32,
        /// The carrier said it is already delivered.
        delivered: bool,
    },
    /// A permanent failure: never retried.
    Failed { reason: String },
    /// A retryable failure; counts as an attempt.
    Retry {
        reason: String,
        retry_after_ms: Option<u64>,
    },
    /// Not handed to the carrier (window closed, carrier tripped, paused or
    /// rate-limited for too long): queue again from `until`, without counting
    /// an attempt or a slot of the daily limit.
    Postponed { until: DateTime<Utc>, reason: String },
    /// The request may have reached a carrier that does not deduplicate, and no
    /// answer came back: held for reconciliation, never sent again blindly.
    Unknown { reason: String },
    /// The carrier refused because the recipient opted out with it: the
    /// message fails and the contact is opted out.
    OptedOut { reason: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_queued_under_the_former_field_name_is_read() {
        let id = MessageId::new();
        let json = format!(
            r#"{{"message_id":"{id}","dispatch":3,"attempts":0,"outcome":{{"kind":"failed","reason":"x"}},"at":"2026-11-30T00:00:00Z"}}"#
        );
        let result: SendResult = serde_json::from_str(&json).expect("old results still parse");
        assert_eq!(result.hand_off, 3);
        let written = serde_json::to_value(&result).unwrap();
        assert_eq!(written["hand_off"], 3, "written under the new name");
    }
}

/// What the recipient rules (SPEC §4.1) say of a due message now.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Hand it to the carrier now; `zones` is where the recipient was judged to be.
    HandOut { zones: String },
    /// Wait until `until`: `rule` (a rule id, `campaign-window` or
    /// `frequency-cap`) does not allow it before, in the recipient's `zones`.
    Hold {
        rule: String,
        until: DateTime<Utc>,
        zones: String,
    },
    /// Never send it: it fails with `reason` (the frequency cap in `skip` mode).
    Skip { reason: String },
}
