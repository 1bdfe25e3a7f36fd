//! Events (SPEC §6): every change of state, as a CloudEvents 1.0 envelope.
//! Schemas of `data` are documented and versioned in `docs/events.md`.

use crate::domain::ids::UserId;
use std::borrow::Cow;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

/// Version of the `data` schemas; part of every event's `dataschema`.
pub const SCHEMA_VERSION: &str = "v1";

/// The user position of events that belong to no tenant (carrier breakers).
pub const SYSTEM_OWNER: &str = "system";

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: Uuid,
    /// The tenant it belongs to; `None` for system events.
    pub owner: Option<UserId>,
    /// `campaign`, `contacts`, `send`, `message`, `contact`, `inbound`, `carrier`.
    /// Owned only when read back from the outbox.
    pub entity: Cow<'static, str>,
    pub action: Cow<'static, str>,
    /// The resource it is about (a campaign, message or contact id, a carrier name).
    pub subject: String,
    pub time: DateTime<Utc>,
    pub data: Value,
}

/// The CloudEvents structured-mode JSON document.
#[derive(Serialize)]
struct CloudEvent<'a> {
    specversion: &'static str,
    id: String,
    source: &'static str,
    #[serde(rename = "type")]
    kind: String,
    time: String,
    subject: &'a str,
    datacontenttype: &'static str,
    dataschema: String,
    data: &'a Value,
}

impl Event {
    /// A new event with a fresh id.
    pub fn new(
        owner: Option<UserId>,
        entity: &'static str,
        action: &'static str,
        subject: impl ToString,
        time: DateTime<Utc>,
        data: Value,
    ) -> Self {
        Self {
            id: Uuid::now_v7(),
            owner,
            entity: Cow::Borrowed(entity),
            action: Cow::Borrowed(action),
            subject: subject.to_string(),
            time,
            data,
        }
    }

    /// The same event with an id derived from `key`, so publishing it again
    /// (after a crash) is recognised as a duplicate.
    pub fn with_stable_id(mut self, key: &str) -> Self {
        let name = format!("{}.{}.{}", self.entity, self.action, key);
        self.id = Uuid::new_v5(&Uuid::NAMESPACE_OID, name.as_bytes());
        self
    }

    /// `herald.<entity>.<action>`
    pub fn kind(&self) -> String {
        format!("herald.{}.{}", self.entity, self.action)
    }

    /// `<user_id>.<entity>.<action>`: the subject below the events prefix.
    pub fn subject_tail(&self) -> String {
        let owner = self.owner.map_or_else(|| SYSTEM_OWNER.to_string(), |u| u.to_string());
        format!("{owner}.{}.{}", self.entity, self.action)
    }

    pub fn to_json(&self) -> Vec<u8> {
        let envelope = CloudEvent {
            specversion: "1.0",
            id: self.id.to_string(),
            source: "/herald",
            kind: self.kind(),
            time: self.time.to_rfc3339_opts(SecondsFormat::Micros, true),
            subject: &self.subject,
            datacontenttype: "application/json",
            dataschema: format!(
                "https://herald.invalid/schemas/{SCHEMA_VERSION}/{}.{}",
                self.entity, self.action
            ),
            data: &self.data,
        };
        serde_json::to_vec(&envelope).expect("an event serializes")
    }
}

/// Builders of the documented events (`docs/events.md`); `data` shapes are part
/// of the `v1` schema.
pub mod build {
    use chrono::{DateTime, Utc};
    use serde_json::json;

    use super::Event;
    use crate::domain::campaign::Campaign;
    use crate::domain::contact::Contact;
    use crate::domain::ids::{CampaignId, TaskId, UserId};
    use crate::domain::message::{MessageRecord, MessageStatus};

    /// `campaign.created|updated|deleted|status_changed`.
    pub fn campaign(action: &'static str, campaign: &Campaign, reason: Option<&str>, at: DateTime<Utc>) -> Event {
        Event::new(
            Some(campaign.user_id),
            "campaign",
            action,
            campaign.id,
            at,
            json!({
                "campaign_id": campaign.id,
                "name": campaign.name,
                "status": campaign.status.as_str(),
                "reason": reason,
            }),
        )
    }

    /// `contacts.imported`: contacts added to a campaign (JSON or CSV).
    pub fn contacts_imported(
        user: UserId,
        campaign_id: CampaignId,
        added: u64,
        duplicates: u64,
        errors: u64,
        total: u64,
        at: DateTime<Utc>,
    ) -> Event {
        Event::new(
            Some(user),
            "contacts",
            "imported",
            campaign_id,
            at,
            json!({
                "campaign_id": campaign_id,
                "added": added,
                "duplicates": duplicates,
                "errors": errors,
                "total_contacts": total,
            }),
        )
    }

    /// `send.started`: a send request queued messages.
    pub fn send_started(
        user: UserId,
        campaign_id: CampaignId,
        task_id: TaskId,
        queued: u64,
        scheduled_for: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
    ) -> Event {
        Event::new(
            Some(user),
            "send",
            "started",
            campaign_id,
            at,
            json!({
                "campaign_id": campaign_id,
                "task_id": task_id,
                "queued": queued,
                "scheduled_for": scheduled_for,
            }),
        )
    }

    /// `message.sent|delivered|failed`, or `None` for a status that is not an event
    /// (a message queued again for a retry). The id is stable per message and
    /// status, so a replay after a crash is a duplicate.
    pub fn message(record: &MessageRecord, at: DateTime<Utc>) -> Option<Event> {
        let action = match record.status {
            MessageStatus::Sent => "sent",
            MessageStatus::Delivered => "delivered",
            MessageStatus::Failed => "failed",
            MessageStatus::Queued | MessageStatus::Sending => return None,
        };
        let event = Event::new(
            Some(record.user_id),
            "message",
            action,
            record.id,
            at,
            json!({
                "message_id": record.id,
                "campaign_id": record.campaign_id,
                "contact_id": record.contact_id,
                "variant": record.variant,
                "carrier": record.carrier,
                "carrier_message_id": record.carrier_message_id,
                "segments": record.segments,
                "attempts": record.attempts,
                "error": record.error,
            }),
        );
        Some(event.with_stable_id(&record.id.to_string()))
    }

    /// `contact.opted_out|opted_in`.
    pub fn consent(contact: &Contact, source: &str, at: DateTime<Utc>) -> Event {
        let action = if contact.opted_out { "opted_out" } else { "opted_in" };
        Event::new(
            Some(contact.user_id),
            "contact",
            action,
            contact.id,
            at,
            json!({
                "contact_id": contact.id,
                "phone_number": contact.phone_number,
                "source": source,
            }),
        )
    }

    /// `inbound.received`: a message from a contact that is not a keyword.
    pub fn inbound(user: UserId, carrier: &str, from: &str, to: &str, body: &str, at: DateTime<Utc>) -> Event {
        Event::new(
            Some(user),
            "inbound",
            "received",
            from,
            at,
            json!({ "carrier": carrier, "from": from, "to": to, "body": body }),
        )
    }

    /// `carrier.tripped|recovered` (system events: no tenant).
    pub fn carrier(action: &'static str, carrier: &str, detail: &str, at: DateTime<Utc>) -> Event {
        Event::new(
            None,
            "carrier",
            action,
            carrier,
            at,
            json!({ "carrier": carrier, "detail": detail }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn envelope_is_cloudevents_structured_json() {
        let user = UserId::new();
        let event = Event::new(
            Some(user),
            "campaign",
            "created",
            "c1",
            Utc::now(),
            json!({"name": "x"}),
        );
        let doc: Value = serde_json::from_slice(&event.to_json()).unwrap();
        assert_eq!(doc["specversion"], "1.0");
        assert_eq!(doc["type"], "herald.campaign.created");
        assert_eq!(doc["id"], event.id.to_string());
        assert_eq!(doc["data"]["name"], "x");
        assert_eq!(event.subject_tail(), format!("{user}.campaign.created"));
    }

    #[test]
    fn stable_ids_repeat_for_the_same_key_only() {
        let make = || Event::new(None, "message", "sent", "m", Utc::now(), json!({}));
        assert_eq!(make().with_stable_id("m.1").id, make().with_stable_id("m.1").id);
        assert_ne!(make().with_stable_id("m.1").id, make().with_stable_id("m.2").id);
        assert_eq!(make().subject_tail(), "system.message.sent");
    }
}
