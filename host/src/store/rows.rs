//! Row shapes shared by both backends and their conversion to domain types.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use uuid::Uuid;

use super::StoreError;
use crate::bus::event::Event;
use crate::domain::campaign::{Campaign, SendDays, parse_time_of_day};
use crate::domain::contact::{Attributes, Contact};
use crate::domain::message::{ClaimedMessage, MessageRecord, MessageStatus};
use crate::domain::variant::Variant;

#[derive(sqlx::FromRow)]
pub(super) struct CampaignRow {
    id: Uuid,
    user_id: Uuid,
    name: String,
    message_template: String,
    message_template_b: Option<String>,
    ab_test_percentage: Option<i32>,
    daily_limit: i32,
    total_limit: Option<i32>,
    status: String,
    timezone: String,
    send_window_start: String,
    send_window_end: String,
    send_days: i32,
    carrier: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    version: i64,
}

/// A row plus the total count of its query (an uncorrelated scalar subquery,
/// evaluated once), to page in one round trip.
#[derive(sqlx::FromRow)]
pub(super) struct Counted<T> {
    #[sqlx(flatten)]
    pub row: T,
    pub total_count: i64,
}

impl TryFrom<CampaignRow> for Campaign {
    type Error = StoreError;

    fn try_from(r: CampaignRow) -> Result<Self, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("campaign {}: bad {what}", r.id));
        Ok(Campaign {
            status: r.status.parse().map_err(|_| corrupt("status"))?,
            timezone: r.timezone.parse().map_err(|_| corrupt("timezone"))?,
            send_window_start: parse_time_of_day(&r.send_window_start).map_err(|_| corrupt("window start"))?,
            send_window_end: parse_time_of_day(&r.send_window_end).map_err(|_| corrupt("window end"))?,
            send_days: SendDays::from_bits(r.send_days).ok_or_else(|| corrupt("send days"))?,
            id: r.id,
            user_id: r.user_id,
            name: r.name,
            message_template: r.message_template,
            message_template_b: r.message_template_b,
            ab_test_percentage: r.ab_test_percentage,
            daily_limit: r.daily_limit,
            total_limit: r.total_limit,
            carrier: r.carrier,
            created_at: r.created_at,
            updated_at: r.updated_at,
            version: r.version,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct ContactRow {
    id: Uuid,
    user_id: Uuid,
    phone_number: String,
    name: String,
    opted_out: bool,
    attributes: Json<Attributes>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    version: i64,
}

impl From<ContactRow> for Contact {
    fn from(r: ContactRow) -> Self {
        Contact {
            id: r.id,
            user_id: r.user_id,
            phone_number: r.phone_number,
            name: r.name,
            opted_out: r.opted_out,
            attributes: r.attributes.0,
            created_at: r.created_at,
            updated_at: r.updated_at,
            version: r.version,
        }
    }
}

/// A message with what a hand-off needs of its contact.
#[derive(sqlx::FromRow)]
pub(super) struct ClaimedRow {
    id: Uuid,
    campaign_id: Uuid,
    contact_id: Uuid,
    variant: String,
    hand_offs: i32,
    attempts: i32,
    carrier: String,
    phone_number: String,
    name: String,
    attributes: Json<Attributes>,
}

impl From<ClaimedRow> for ClaimedMessage {
    fn from(r: ClaimedRow) -> Self {
        ClaimedMessage {
            id: r.id,
            campaign_id: r.campaign_id,
            contact_id: r.contact_id,
            variant: if r.variant == "b" { Variant::B } else { Variant::A },
            hand_off: r.hand_offs,
            attempts: r.attempts,
            carrier: r.carrier,
            phone_number: r.phone_number,
            name: r.name,
            attributes: r.attributes.0,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct MessageRow {
    id: Uuid,
    user_id: Uuid,
    campaign_id: Uuid,
    contact_id: Uuid,
    variant: String,
    status: String,
    carrier: String,
    carrier_message_id: Option<String>,
    segments: Option<i32>,
    attempts: i32,
    last_error: Option<String>,
    not_before: DateTime<Utc>,
    hand_offs: i32,
}

impl TryFrom<MessageRow> for MessageRecord {
    type Error = StoreError;

    fn try_from(r: MessageRow) -> Result<Self, StoreError> {
        Ok(MessageRecord {
            status: message_status(&r.status)?,
            id: r.id,
            user_id: r.user_id,
            campaign_id: r.campaign_id,
            contact_id: r.contact_id,
            variant: r.variant,
            carrier: r.carrier,
            carrier_message_id: r.carrier_message_id,
            segments: r.segments,
            attempts: r.attempts,
            error: r.last_error,
            not_before: r.not_before,
            hand_off: r.hand_offs,
        })
    }
}

/// An event waiting in `event_outbox`.
#[derive(sqlx::FromRow)]
pub(super) struct OutboxRow {
    seq: i64,
    id: Uuid,
    owner: Option<Uuid>,
    entity: String,
    action: String,
    subject: String,
    time: DateTime<Utc>,
    data: String,
}

impl TryFrom<OutboxRow> for (i64, Event) {
    type Error = StoreError;

    fn try_from(r: OutboxRow) -> Result<Self, StoreError> {
        let data = serde_json::from_str(&r.data)
            .map_err(|e| StoreError::Corrupt(format!("outbox event {}: bad data: {e}", r.id)))?;
        let event = Event {
            id: r.id,
            owner: r.owner,
            entity: r.entity.into(),
            action: r.action.into(),
            subject: r.subject,
            time: r.time,
            data,
        };
        Ok((r.seq, event))
    }
}

/// A stored message status; anything else is corrupt data, never "pending".
pub fn message_status(stored: &str) -> Result<MessageStatus, StoreError> {
    MessageStatus::parse(stored).ok_or_else(|| StoreError::Corrupt(format!("unknown message status {stored:?}")))
}
