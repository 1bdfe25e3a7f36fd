//! What the audit endpoints answer (SPEC §4.1): why each message went when it
//! did, and every consent change.

use chrono::{DateTime, Utc};

use super::contact::ConsentSource;
use super::ids::{CampaignId, ContactId, MessageId};
use super::message::MessageStatus;
use super::variant::Variant;

/// A message as the audit shows it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct MessageAudit {
    pub id: MessageId,
    pub campaign_id: CampaignId,
    pub contact_id: ContactId,
    pub phone_number: String,
    pub variant: Variant,
    pub status: MessageStatus,
    /// The rule holding it now ('' when none; only a queued message is held).
    pub hold_rule: String,
    /// When it may be handed out next (a queued message).
    pub not_before: DateTime<Utc>,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    /// When it was first handed to a carrier.
    pub handed_at: Option<DateTime<Utc>>,
    pub sent_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    /// The rule set version it was handed out under.
    pub rule_set: Option<String>,
    /// The recipient's zones it was handed out in (`&`-joined IANA names).
    pub zones: Option<String>,
}

impl MessageAudit {
    /// The rule holding it now, if it is waiting on one.
    pub fn held_by(&self) -> Option<&str> {
        (self.status == MessageStatus::Queued && !self.hold_rule.is_empty()).then_some(self.hold_rule.as_str())
    }
}

/// One time a rule held a message.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Hold {
    pub rule: String,
    /// The recipient's zones then (`&`-joined IANA names).
    pub zones: String,
    pub held_at: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

/// Which messages of a campaign a list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageFilter {
    All,
    Status(MessageStatus),
    /// Queued and waiting on a rule.
    Held,
}

impl std::str::FromStr for MessageFilter {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        match value {
            "held" => Ok(Self::Held),
            other => other
                .parse()
                .map(Self::Status)
                .map_err(|_| format!("must be one of queued, sending, sent, delivered, failed, held (got {value:?})")),
        }
    }
}

/// One opt-out or opt-in, for the consent export.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ConsentChange {
    pub id: uuid::Uuid,
    pub contact_id: ContactId,
    pub phone_number: String,
    pub opted_out: bool,
    pub source: ConsentSource,
    pub detail: Option<String>,
    pub at: DateTime<Utc>,
}

/// Which consent changes an export holds; `None` = any.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConsentFilter {
    pub contact_id: Option<ContactId>,
    pub phone_number: Option<String>,
    /// From this instant, inclusive.
    pub from: Option<DateTime<Utc>>,
    /// Until this instant, exclusive.
    pub to: Option<DateTime<Utc>>,
}
