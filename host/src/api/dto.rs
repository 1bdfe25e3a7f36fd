//! Request and response bodies of the API: the same types drive the handlers
//! and the OpenAPI document.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{Schema, Type};
use utoipa::{IntoParams, ToSchema};

use crate::domain::campaign::{Campaign, CampaignChanges, CampaignStatus, SendDays};
use crate::domain::contact::{Contact, ContactChanges, ContactInput};
use crate::domain::csv_import::ImportReport;
use crate::domain::ids::{CampaignId, ContactId, TaskId};
use crate::domain::page::{Page, PageRequest};
use crate::domain::phone::PhoneNumber;
use crate::domain::stats::Counters;
use crate::domain::window::{TimeOfDay, Zone};

/// RFC 3339 in UTC with microseconds, e.g. `2026-11-24T06:17:12.852809Z`: one fixed
/// width for every timestamp, and several times cheaper than chrono's formatter.
fn rfc3339<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_micros(std::time::SystemTime::from(*t)))
}

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`).
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Draft,
    Active,
    Paused,
    Completed,
}

impl From<CampaignStatus> for Status {
    fn from(s: CampaignStatus) -> Self {
        match s {
            CampaignStatus::Draft => Self::Draft,
            CampaignStatus::Active => Self::Active,
            CampaignStatus::Paused => Self::Paused,
            CampaignStatus::Completed => Self::Completed,
        }
    }
}

/// A campaign.
#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignBody {
    #[schema(value_type = uuid::Uuid)]
    pub id: CampaignId,
    #[schema(example = "Spring sale")]
    pub name: String,
    #[schema(example = "Hi {{first_name | default:\"there\"}}, 20% off today!")]
    pub message_template: String,
    pub message_template_b: Option<String>,
    /// Share of recipients (0-100) who get variant B.
    pub ab_test_percentage: Option<i32>,
    #[schema(example = 125)]
    pub daily_limit: i32,
    pub total_limit: Option<i32>,
    pub status: Status,
    #[schema(value_type = String, example = "America/New_York")]
    pub timezone: Zone,
    #[schema(value_type = String, example = "09:00")]
    pub send_window_start: TimeOfDay,
    #[schema(value_type = String, example = "18:00")]
    pub send_window_end: TimeOfDay,
    #[schema(value_type = Vec<String>, example = json!(["mon", "tue", "wed", "thu", "fri"]))]
    pub send_days: SendDays,
    /// Configured carrier name; null means the default carrier.
    pub carrier: Option<String>,
    /// `recipient`: the window and the recipient's allowed hours and state
    /// rules; `campaign`: the window only.
    #[schema(value_type = String, example = "recipient")]
    pub quiet_hours: &'static str,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339")]
    pub updated_at: DateTime<Utc>,
}

impl From<Campaign> for CampaignBody {
    fn from(c: Campaign) -> Self {
        Self {
            id: c.id,
            name: c.name,
            message_template: c.message_template,
            message_template_b: c.message_template_b,
            ab_test_percentage: c.ab_test_percentage,
            daily_limit: c.daily_limit,
            total_limit: c.total_limit,
            status: c.status.into(),
            timezone: c.timezone,
            send_window_start: c.send_window_start,
            send_window_end: c.send_window_end,
            send_days: c.send_days,
            carrier: c.carrier,
            quiet_hours: c.quiet_hours.as_str(),
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

/// Writable campaign fields. On create, `name` and `message_template` are
/// required; on update every field is optional and absent fields are unchanged.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignInput {
    /// 1-100 characters, not blank.
    pub name: Option<String>,
    /// 1-1600 characters; `{{ variable }}` placeholders.
    pub message_template: Option<String>,
    /// Optional B variant for A/B tests; null removes it.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub message_template_b: Option<Option<String>>,
    /// 0-100; defaults to 50 when message_template_b is set, and needs it
    /// (set here or already on the campaign).
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>)]
    pub ab_test_percentage: Option<Option<i64>>,
    /// Messages per local day, 1 to the server's maximum (default 125).
    pub daily_limit: Option<i64>,
    /// At least 1; null means unlimited.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>)]
    pub total_limit: Option<Option<i64>>,
    /// Only on update: draft→active, active→paused, paused→active, active|paused→completed.
    pub status: Option<Status>,
    /// IANA time zone (default America/New_York).
    pub timezone: Option<String>,
    /// HH:MM (default 09:00).
    pub send_window_start: Option<String>,
    /// HH:MM (default 18:00), later than the start (the given one or the
    /// campaign's).
    pub send_window_end: Option<String>,
    /// Days of mon…sun (default mon-fri).
    pub send_days: Option<Vec<String>>,
    /// A configured carrier name; null means the default carrier.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub carrier: Option<Option<String>>,
    /// `recipient` (default: the window and the recipient's allowed hours,
    /// SPEC §4.1) or `campaign` (the window only).
    pub quiet_hours: Option<String>,
}

/// The body of a create, as documented: [`CampaignInput`] with `name` and
/// `message_template` required and no `status`, since a new campaign is always
/// `draft`. The handler reads a `CampaignInput` and refuses the same things.
pub struct NewCampaign;

impl utoipa::PartialSchema for NewCampaign {
    fn schema() -> RefOr<Schema> {
        let mut schema = CampaignInput::schema();
        if let RefOr::T(Schema::Object(object)) = &mut schema {
            object.properties.remove("status");
            for field in ["name", "message_template"] {
                if let Some(RefOr::T(Schema::Object(property))) = object.properties.get_mut(field) {
                    property.schema_type = Type::String.into();
                }
                object.required.push(field.into());
            }
            object.description = Some("A new campaign: `name` and `message_template` are required.".into());
        }
        schema
    }
}

impl ToSchema for NewCampaign {}

impl From<CampaignInput> for CampaignChanges {
    fn from(i: CampaignInput) -> Self {
        Self {
            name: i.name,
            message_template: i.message_template,
            message_template_b: i.message_template_b,
            ab_test_percentage: i.ab_test_percentage,
            daily_limit: i.daily_limit,
            total_limit: i.total_limit,
            status: i.status.map(Into::into),
            timezone: i.timezone,
            send_window_start: i.send_window_start,
            send_window_end: i.send_window_end,
            send_days: i.send_days,
            carrier: i.carrier,
            quiet_hours: i.quiet_hours,
        }
    }
}

impl From<Status> for CampaignStatus {
    fn from(s: Status) -> Self {
        match s {
            Status::Draft => Self::Draft,
            Status::Active => Self::Active,
            Status::Paused => Self::Paused,
            Status::Completed => Self::Completed,
        }
    }
}

/// Documents the pagination query; `extract::page` parses it so errors name the field.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct PageQuery {
    /// Page number, from 1 (default 1).
    #[param(minimum = 1)]
    pub page: Option<u64>,
    /// Items per page, 1-100 (default 10).
    #[param(minimum = 1, maximum = 100)]
    pub per_page: Option<u32>,
}

/// Documents the campaign list query (parsed by the handler, see [`PageQuery`]).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct CampaignQuery {
    /// Page number, from 1 (default 1).
    #[param(minimum = 1)]
    pub page: Option<u64>,
    /// Items per page, 1-100 (default 10).
    #[param(minimum = 1, maximum = 100)]
    pub per_page: Option<u32>,
    /// Only campaigns in this status.
    #[param(inline)]
    pub status: Option<Status>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignList {
    pub campaigns: Vec<CampaignBody>,
    pub total: u64,
    pub page: u64,
    pub per_page: u32,
    pub total_pages: u64,
}

impl CampaignList {
    pub fn new(page: Page<Campaign>, request: PageRequest) -> Self {
        Self {
            campaigns: page.items.into_iter().map(Into::into).collect(),
            total: page.total,
            page: request.page,
            per_page: request.per_page,
            total_pages: request.total_pages(page.total),
        }
    }
}

/// A contact.
#[derive(Debug, Serialize, ToSchema)]
pub struct ContactBody {
    #[schema(value_type = uuid::Uuid)]
    pub id: ContactId,
    #[schema(value_type = String, example = "+15551234567")]
    pub phone_number: PhoneNumber,
    pub name: String,
    pub opted_out: bool,
    pub attributes: BTreeMap<String, String>,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
}

impl From<Contact> for ContactBody {
    fn from(c: Contact) -> Self {
        Self {
            id: c.id,
            phone_number: c.phone_number,
            name: c.name,
            opted_out: c.opted_out,
            attributes: c.attributes,
            created_at: c.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ContactList {
    pub contacts: Vec<ContactBody>,
    pub total: u64,
    pub page: u64,
    pub per_page: u32,
    pub total_pages: u64,
}

impl ContactList {
    pub fn new(page: Page<Contact>, request: PageRequest) -> Self {
        Self {
            contacts: page.items.into_iter().map(Into::into).collect(),
            total: page.total,
            page: request.page,
            per_page: request.per_page,
            total_pages: request.total_pages(page.total),
        }
    }
}

/// One contact to add.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewContactBody {
    /// E.164 of a country the server accepts (`contacts.country_codes`, the
    /// pattern). The server also reads national NANP formatting such as
    /// `(555) 123-4567`.
    #[schema(example = "+15551234567")]
    pub phone_number: String,
    /// 1-100 characters.
    #[schema(example = "Ada Lovelace")]
    pub name: String,
    /// Free key/value strings usable in templates.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

impl From<NewContactBody> for ContactInput {
    fn from(b: NewContactBody) -> Self {
        Self {
            phone_number: b.phone_number,
            name: b.name,
            attributes: b.attributes,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddContacts {
    /// 1 to 10,000 contacts; any invalid item rejects the whole request.
    pub contacts: Vec<NewContactBody>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AddContactsResult {
    /// Contacts newly linked to the campaign.
    pub added: u64,
    /// Phones already in the campaign or repeated in the request.
    pub duplicates: u64,
    /// Contacts linked to the campaign afterwards.
    pub total_contacts: u64,
}

/// A CSV upload: multipart/form-data with a `file` field.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct ImportUpload {
    /// UTF-8 CSV with a header row naming `phone_number` (or `phone`) and `name`;
    /// other columns become attributes.
    #[schema(value_type = String, format = Binary, content_media_type = "text/csv")]
    pub file: Vec<u8>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ImportResult {
    pub imported: u64,
    pub duplicates: u64,
    /// Rows skipped as invalid.
    pub errors: u64,
    pub total_contacts: u64,
    /// The first 100 row errors, e.g. `line 7: invalid phone number "12345"`.
    pub error_details: Vec<String>,
}

impl From<ImportReport> for ImportResult {
    fn from(r: ImportReport) -> Self {
        Self {
            imported: r.imported,
            duplicates: r.duplicates,
            errors: r.errors,
            total_contacts: r.total_contacts,
            error_details: r.error_details,
        }
    }
}

/// Changes to a contact; absent fields are unchanged.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactPatch {
    pub name: Option<String>,
    /// Replaces all attributes.
    pub attributes: Option<BTreeMap<String, String>>,
    /// Opting out (or back in) is recorded for consent audits.
    pub opted_out: Option<bool>,
}

impl From<ContactPatch> for ContactChanges {
    fn from(p: ContactPatch) -> Self {
        Self {
            name: p.name,
            attributes: p.attributes,
            opted_out: p.opted_out,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VariantStats {
    pub messages_sent: u64,
    pub messages_delivered: u64,
    pub messages_failed: u64,
    pub messages_pending: u64,
    pub messages_held: u64,
    pub delivery_rate: f64,
    pub success_rate: f64,
}

impl From<Counters> for VariantStats {
    fn from(c: Counters) -> Self {
        Self {
            messages_sent: c.sent,
            messages_delivered: c.delivered,
            messages_failed: c.failed,
            messages_pending: c.pending,
            messages_held: c.held,
            delivery_rate: c.delivery_rate(),
            success_rate: c.success_rate(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignStats {
    /// Contacts linked to the campaign.
    pub total_contacts: u64,
    /// Accepted by the carrier, delivered ones included.
    pub messages_sent: u64,
    pub messages_delivered: u64,
    pub messages_failed: u64,
    /// Queued or sending.
    pub messages_pending: u64,
    /// Of the pending: waiting on a recipient rule (SPEC §4.1).
    pub messages_held: u64,
    /// Held messages per rule id (`us-federal`, `us-fl`, `frequency-cap` …).
    pub held_by_rule: BTreeMap<String, u64>,
    /// Delivered / sent, 2 decimals.
    pub delivery_rate: f64,
    /// Sent / all messages, 2 decimals.
    pub success_rate: f64,
    /// Per A/B variant (`a`, `b`), when the campaign has a B variant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variants: Option<BTreeMap<String, VariantStats>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// `202` answer to `POST /campaigns/{id}/send`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SendAccepted {
    #[schema(value_type = uuid::Uuid)]
    pub task_id: TaskId,
    /// `Campaign sending initiated`, or `Campaign queued for next business day`
    /// when the send window is closed now.
    #[schema(example = "Campaign sending initiated")]
    pub message: &'static str,
    /// Messages created by this request.
    pub queued: u64,
    /// When the window next opens, if it is closed now.
    pub scheduled_for: Option<DateTime<Utc>>,
}

/// A send task and its messages' progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskBody {
    #[schema(value_type = uuid::Uuid)]
    pub task_id: TaskId,
    #[schema(value_type = uuid::Uuid)]
    pub campaign_id: CampaignId,
    /// `queuing` (still creating its messages, in the background), `scheduled` (waiting for the
    /// window), `running`, or `completed` (every message final).
    #[schema(example = "running")]
    pub status: &'static str,
    pub queued: u64,
    /// Accepted by the carrier, delivered ones included.
    pub sent: u64,
    pub delivered: u64,
    pub failed: u64,
    /// Queued or sending.
    pub pending: u64,
    /// Of the pending: waiting on a recipient rule (SPEC §4.1).
    pub held: u64,
    /// Held messages per rule id (`us-federal`, `us-fl`, `frequency-cap` …).
    pub held_by_rule: BTreeMap<String, u64>,
    pub created_at: DateTime<Utc>,
    pub scheduled_for: Option<DateTime<Utc>>,
}
