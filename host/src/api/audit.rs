//! The audit (SPEC §4.1): a campaign's messages with why each waits, one
//! message's whole story, the consent export, and the user's frequency cap.

use std::convert::Infallible;

use chrono::{DateTime, Utc};
use salvo::http::header::CONTENT_TYPE;
use salvo::prelude::*;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::campaigns::load;
use super::extract::{self, app, user};
use super::json::Json;
use super::problem::ApiError;
use super::problem::responses::*;
use crate::domain::DomainError;
use crate::domain::audit::{ConsentChange, ConsentFilter, Hold, MessageAudit, MessageFilter};
use crate::domain::ids::{ContactId, MessageId};
use crate::domain::page::PageRequest;
use crate::domain::recipient::locate;
use crate::domain::recipient_zone::presume;
use crate::domain::settings::FrequencyCap;
use crate::store::UserSettings;

/// Consent changes read per statement while the export streams.
const CONSENT_CHUNK: u32 = 1_000;

/// A message in a campaign's audit list.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageBody {
    #[schema(value_type = uuid::Uuid)]
    pub id: MessageId,
    #[schema(value_type = uuid::Uuid)]
    pub campaign_id: crate::domain::ids::CampaignId,
    #[schema(value_type = uuid::Uuid)]
    pub contact_id: ContactId,
    pub phone_number: String,
    /// `a` or `b`.
    pub variant: String,
    /// `queued`, `sending`, `sent`, `delivered` or `failed`.
    pub status: String,
    /// The rule holding it now (`us-federal`, `us-fl`, `frequency-cap` …), or null.
    pub hold_reason: Option<String>,
    /// When a queued message may go next.
    pub not_before: Option<DateTime<Utc>>,
    pub attempts: i32,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    /// When it was first handed to a carrier.
    pub handed_at: Option<DateTime<Utc>>,
    pub sent_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
}

impl From<MessageAudit> for MessageBody {
    fn from(m: MessageAudit) -> Self {
        let queued = m.status == crate::domain::message::MessageStatus::Queued;
        Self {
            hold_reason: m.held_by().map(str::to_string),
            id: m.id,
            campaign_id: m.campaign_id,
            contact_id: m.contact_id,
            phone_number: m.phone_number,
            variant: m.variant.as_str().to_string(),
            status: m.status.as_str().to_string(),
            not_before: queued.then_some(m.not_before),
            attempts: m.attempts,
            error: m.last_error,
            created_at: m.created_at,
            handed_at: m.handed_at,
            sent_at: m.sent_at,
            delivered_at: m.delivered_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MessageList {
    pub messages: Vec<MessageBody>,
    pub total: u64,
    pub page: u64,
    pub per_page: u32,
    pub total_pages: u64,
}

/// Documents the message list query (parsed by the handler).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct MessageQuery {
    /// Page number, from 1 (default 1).
    #[param(minimum = 1)]
    pub page: Option<u64>,
    /// Items per page, 1-100 (default 10).
    #[param(minimum = 1, maximum = 100)]
    pub per_page: Option<u32>,
    /// `queued`, `sending`, `sent`, `delivered`, `failed`, or `held` (queued and waiting on a rule).
    pub status: Option<String>,
}

/// One time a rule held the message.
#[derive(Debug, Serialize, ToSchema)]
pub struct HoldBody {
    /// The rule's id (see the rule set), `campaign-window` or `frequency-cap`.
    pub rule: String,
    /// The recipient's zones then.
    pub zones: Vec<String>,
    pub held_at: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

impl From<Hold> for HoldBody {
    fn from(h: Hold) -> Self {
        Self {
            rule: h.rule,
            zones: h.zones.split('&').map(str::to_string).collect(),
            held_at: h.held_at,
            until: h.until,
        }
    }
}

/// A message and why it went when it did.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageDetail {
    #[serde(flatten)]
    pub message: MessageBody,
    /// The recipient's zones: those it was handed out in, or (not handed out
    /// yet) as presumed now from the contact's `timezone` attribute, else
    /// every zone of the number's prefix.
    pub zones: Vec<String>,
    /// The state or province presumed from the area code (ISO 3166-2), if any.
    pub region: Option<String>,
    /// The rule set version it was handed out under (null until then).
    pub rule_set: Option<String>,
    /// Every hold, oldest first.
    pub holds: Vec<HoldBody>,
}

/// List a campaign's messages, in the order its contacts were added.
#[utoipa::path(get, path = "/api/v1/campaigns/{id}/messages", tag = "audit",
    operation_id = "list_campaign_messages", impl_for = list_messages,
    params(("id" = Uuid, Path, description = "Campaign id"), MessageQuery),
    responses(
        (status = 200, description = "One page of the campaign's messages", body = MessageList),
        BadRequest, Unauthorized, NotFound, Invalid, Unavailable,
    ),
    security(("bearer" = [])))]
#[handler]
pub async fn list_messages(req: &mut Request, depot: &mut Depot) -> Result<Json<MessageList>, ApiError> {
    let app = app(depot);
    let campaign = load(app, user(depot), extract::path_id(req, "id")?).await?;
    let page: PageRequest = extract::page(req)?;
    let filter = match req.query::<String>("status") {
        None => MessageFilter::All,
        Some(raw) => raw.parse().map_err(|e| DomainError::field("status", e))?,
    };
    let found = app.store.campaign_messages(campaign.id, filter, page).await?;
    Ok(Json(MessageList {
        messages: found.items.into_iter().map(Into::into).collect(),
        total: found.total,
        page: page.page,
        per_page: page.per_page,
        total_pages: page.total_pages(found.total),
    }))
}

/// One message: its zones, the rule set, every hold and when it went.
#[utoipa::path(get, path = "/api/v1/messages/{id}", tag = "audit",
    operation_id = "get_message", impl_for = show_message,
    params(("id" = Uuid, Path, description = "Message id")),
    responses(
        (status = 200, description = "The message and why it went when it did", body = MessageDetail),
        BadRequest, Unauthorized, NotFound, Unavailable,
    ),
    security(("bearer" = [])))]
#[handler]
pub async fn show_message(req: &mut Request, depot: &mut Depot) -> Result<Json<MessageDetail>, ApiError> {
    let app = app(depot);
    let owner = user(depot);
    let (message, holds) = app
        .store
        .message_audit(owner, extract::path_id(req, "id")?)
        .await?
        .ok_or(ApiError::NotFound("message"))?;
    let (zones, region) = match &message.zones {
        // Judged at its hand-out: what the audit must show, whatever the contact says now.
        Some(judged) => (
            judged.split('&').map(str::to_string).collect(),
            presume(&message.phone_number).region,
        ),
        None => {
            let attributes = app
                .store
                .contact(owner, message.contact_id)
                .await?
                .map(|c| c.attributes)
                .unwrap_or_default();
            let location = locate(&message.phone_number, &attributes);
            (
                location.zones.iter().map(|z| z.name().to_string()).collect(),
                location.region,
            )
        }
    };
    Ok(Json(MessageDetail {
        zones,
        region: region.map(str::to_string),
        rule_set: message.rule_set.clone(),
        holds: holds.into_iter().map(Into::into).collect(),
        message: message.into(),
    }))
}

/// Documents the consent export query (parsed by the handler).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ConsentQuery {
    /// Only this contact's changes.
    pub contact_id: Option<uuid::Uuid>,
    /// Only changes of contacts with this number (E.164).
    pub phone_number: Option<String>,
    /// From this instant (RFC 3339, inclusive).
    pub from: Option<DateTime<Utc>>,
    /// Until this instant (RFC 3339, exclusive).
    pub to: Option<DateTime<Utc>>,
}

/// One line of the consent export (documented in the operation's response).
#[derive(Debug, Serialize)]
pub struct ConsentLine {
    pub id: uuid::Uuid,
    pub contact_id: ContactId,
    pub phone_number: String,
    /// `opted_out` or `opted_in`.
    pub change: &'static str,
    /// `api`, `keyword`, `import` or `carrier`.
    pub source: &'static str,
    pub detail: Option<String>,
    pub at: DateTime<Utc>,
}

impl From<ConsentChange> for ConsentLine {
    fn from(c: ConsentChange) -> Self {
        Self {
            id: c.id,
            contact_id: c.contact_id,
            phone_number: c.phone_number,
            change: if c.opted_out { "opted_out" } else { "opted_in" },
            source: c.source.as_str(),
            detail: c.detail,
            at: c.at,
        }
    }
}

fn query_value<T: std::str::FromStr>(
    req: &Request,
    name: &str,
    errors: &mut crate::domain::Errors,
    what: &str,
) -> Option<T> {
    let raw = req.query::<String>(name)?;
    errors.check(name, raw.parse().map_err(|_| format!("must be {what} (got {raw:?})")))
}

/// Export consent changes (opt-outs and opt-ins) as NDJSON, oldest first.
///
/// Streamed, so an export of any size holds a bounded amount of memory.
#[utoipa::path(get, path = "/api/v1/consent", tag = "audit",
    operation_id = "export_consent", impl_for = export_consent, params(ConsentQuery),
    responses(
        (status = 200, content_type = "application/x-ndjson", description = "Consent changes, oldest first, one JSON \
            object per line: `id`, `contact_id`, `phone_number`, `change` (`opted_out` or `opted_in`), `source` (`api`, \
            `keyword`, `import` or `carrier`), `detail` (string or null), `at` (RFC 3339)"),
        Unauthorized, Invalid, Unavailable,
    ),
    security(("bearer" = [])))]
#[handler]
pub async fn export_consent(req: &mut Request, depot: &mut Depot, res: &mut Response) -> Result<(), ApiError> {
    let mut errors = crate::domain::Errors::default();
    let filter = ConsentFilter {
        contact_id: query_value::<uuid::Uuid>(req, "contact_id", &mut errors, "a UUID").map(ContactId::from),
        phone_number: req.query::<String>("phone_number"),
        from: query_value(req, "from", &mut errors, "an RFC 3339 timestamp"),
        to: query_value(req, "to", &mut errors, "an RFC 3339 timestamp"),
    };
    errors.into_result()?;
    let store = app(depot).store.clone();
    let owner = user(depot);
    // Reads the first chunk before answering, so a database error is a problem document, not a cut stream.
    let first = store.consent_changes(owner, &filter, None, CONSENT_CHUNK).await?;
    let lines = futures::stream::unfold(Some(first), move |chunk| {
        let (store, filter) = (store.clone(), filter.clone());
        async move {
            let chunk = chunk?;
            if chunk.is_empty() {
                return None;
            }
            let after = chunk.last().map(|c| (c.at, c.id));
            let mut text = Vec::new();
            for change in chunk {
                serde_json::to_writer(&mut text, &ConsentLine::from(change)).expect("a consent line serializes");
                text.push(b'\n');
            }
            let next = match store.consent_changes(owner, &filter, after, CONSENT_CHUNK).await {
                Ok(next) => Some(next),
                Err(e) => {
                    // The status line is gone: end the stream short; the client sees no final newline-terminated marker.
                    tracing::warn!(error = %e, "consent export cut short");
                    None
                }
            };
            Some((Ok::<_, Infallible>(text), next))
        }
    });
    res.add_header(CONTENT_TYPE, "application/x-ndjson", true)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    res.stream(lines);
    Ok(())
}

/// The user's own settings.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsBody {
    /// At most `max` messages per contact per rolling `hours` across all your
    /// campaigns; over it a message waits (`over = "hold"`, the default) or
    /// fails with reason `frequency_cap` (`"skip"`). Null: off (the default).
    #[schema(value_type = Option<Object>, example = json!({"max": 3, "hours": 24, "over": "hold"}))]
    pub frequency_cap: Option<FrequencyCap>,
}

/// Your settings.
#[utoipa::path(get, path = "/api/v1/settings", tag = "settings",
    operation_id = "get_settings", impl_for = show_settings,
    responses((status = 200, description = "Your settings", body = SettingsBody), Unauthorized, Unavailable),
    security(("bearer" = [])))]
#[handler]
pub async fn show_settings(depot: &mut Depot) -> Result<Json<SettingsBody>, ApiError> {
    let settings = app(depot).store.user_settings(user(depot)).await?;
    Ok(Json(SettingsBody {
        frequency_cap: settings.frequency_cap,
    }))
}

/// Replace your settings.
#[utoipa::path(put, path = "/api/v1/settings", tag = "settings",
    operation_id = "replace_settings", impl_for = replace_settings, request_body = SettingsBody,
    responses(
        (status = 200, description = "Your settings now", body = SettingsBody),
        BadRequest, Unauthorized, TooLarge, Invalid, Unavailable,
    ),
    security(("bearer" = [])))]
#[handler]
pub async fn replace_settings(req: &mut Request, depot: &mut Depot) -> Result<Json<SettingsBody>, ApiError> {
    let app = app(depot);
    let body: SettingsBody = extract::json(req, app.config.server.max_body_bytes).await?;
    let frequency_cap = body.frequency_cap.map(FrequencyCap::validate).transpose()?;
    let settings = UserSettings { frequency_cap };
    app.store.set_user_settings(user(depot), &settings).await?;
    Ok(Json(SettingsBody { frequency_cap }))
}
