//! Campaign endpoints.

use salvo::prelude::*;

use super::json::Json;

use crate::domain::ids::{CampaignId, UserId};

use super::dto::{CampaignBody, CampaignInput, CampaignList, CampaignQuery, CampaignStats, NewCampaign};
use super::extract::{self, app, user};
use super::problem::ApiError;
use super::problem::responses::*;
use super::{App, retry_on_conflict};
use crate::bus::event::build;
use crate::domain::FieldError;
use crate::domain::campaign::{self, Campaign, CampaignChanges, CampaignStatus};
use crate::domain::stats::{Tally, tally};

/// Asks the template plugin about every template the request sets.
async fn check_templates(app: &App, changes: &CampaignChanges) -> Result<(), ApiError> {
    let templates = [
        ("message_template", changes.message_template.as_deref()),
        (
            "message_template_b",
            changes.message_template_b.as_ref().and_then(|t| t.as_deref()),
        ),
    ];
    let mut errors = Vec::new();
    for (field, template) in templates {
        let Some(template) = template else { continue };
        match app.plugins.template.validate(template).await {
            Ok(Ok(())) => {}
            Ok(Err(refused)) => errors.push(FieldError::new(field, refused.message)),
            Err(failed) => return Err(ApiError::Unavailable(format!("the template plugin failed: {failed}"))),
        }
    }
    match errors.is_empty() {
        true => Ok(()),
        false => Err(ApiError::Invalid(errors)),
    }
}

pub(super) async fn load(app: &App, user_id: UserId, id: CampaignId) -> Result<Campaign, ApiError> {
    app.store
        .campaign(user_id, id)
        .await?
        .ok_or(ApiError::NotFound("campaign"))
}

/// List your campaigns, newest first.
#[utoipa::path(get, path = "/api/v1/campaigns", tag = "campaigns",
    operation_id = "list_campaigns", impl_for = list, params(CampaignQuery),
    responses(
        (status = 200, description = "One page of your campaigns", body = CampaignList),
        Unauthorized, Invalid, Unavailable,
    ),
    security(("bearer" = [])))]
#[handler]
pub async fn list(req: &mut Request, depot: &mut Depot) -> Result<Json<CampaignList>, ApiError> {
    let page = extract::page(req)?;
    let status = match req.query::<String>("status") {
        None => None,
        Some(raw) => Some(
            raw.parse::<CampaignStatus>()
                .map_err(|e| crate::domain::DomainError::field("status", e))?,
        ),
    };
    let found = app(depot).store.list_campaigns(user(depot), status, page).await?;
    Ok(Json(CampaignList::new(found, page)))
}

/// Create a campaign (always `draft`).
#[utoipa::path(post, path = "/api/v1/campaigns", tag = "campaigns",
    operation_id = "create_campaign", impl_for = create, request_body = NewCampaign,
    responses(
        (status = 201, description = "The new campaign, in `draft`", body = CampaignBody),
        BadRequest, Unauthorized, TooLarge, Invalid, Unavailable,
    ),
    security(("bearer" = [])))]
#[handler]
pub async fn create(req: &mut Request, depot: &mut Depot, res: &mut Response) -> Result<(), ApiError> {
    let app = app(depot);
    let input: CampaignInput = extract::json(req, app.config.server.max_body_bytes).await?;
    let changes: CampaignChanges = input.into();
    let created = campaign::create(
        CampaignId::new(),
        user(depot),
        changes.clone(),
        &app.rules(),
        app.clock.now(),
    )?;
    check_templates(app, &changes).await?;
    let events = vec![build::campaign("created", &created, None, created.created_at)];
    app.store.insert_campaign(&created, app.outbox.durable(&events)).await?;
    app.outbox.committed(events).await;
    res.status_code(StatusCode::CREATED);
    res.render(Json(CampaignBody::from(created)));
    Ok(())
}

/// Get one campaign.
#[utoipa::path(get, path = "/api/v1/campaigns/{id}", tag = "campaigns",
    operation_id = "get_campaign", impl_for = show,
    params(("id" = Uuid, Path, description = "Campaign id")),
    responses(
        (status = 200, description = "The campaign", body = CampaignBody),
        BadRequest, Unauthorized, NotFound, Unavailable,
    ),
    security(("bearer" = [])))]
#[handler]
pub async fn show(req: &mut Request, depot: &mut Depot) -> Result<Json<CampaignBody>, ApiError> {
    let id = extract::path_id(req, "id")?;
    Ok(Json(load(app(depot), user(depot), id).await?.into()))
}

/// Update a campaign: any writable field; status moves and active-campaign rules apply.
#[utoipa::path(put, path = "/api/v1/campaigns/{id}", tag = "campaigns",
    operation_id = "update_campaign", impl_for = update, request_body = CampaignInput,
    params(("id" = Uuid, Path, description = "Campaign id")),
    responses(
        (status = 200, description = "The campaign as changed", body = CampaignBody),
        BadRequest, Unauthorized, NotFound, TooLarge, Invalid, Unavailable,
    ),
    security(("bearer" = [])))]
#[handler]
pub async fn update(req: &mut Request, depot: &mut Depot) -> Result<Json<CampaignBody>, ApiError> {
    let app = app(depot);
    let (user_id, id) = (user(depot), extract::path_id(req, "id")?);
    let input: CampaignInput = extract::json(req, app.config.server.max_body_bytes).await?;
    let changes: CampaignChanges = input.into();
    check_templates(app, &changes).await?;
    let (updated, events, status_changed) = retry_on_conflict(|| async {
        let current = load(app, user_id, id).await?;
        let updated = campaign::update(&current, changes.clone(), &app.rules(), app.clock.now())?;
        if updated == current {
            return Ok(Some((current, Vec::new(), false)));
        }
        let status_changed = current.status != updated.status;
        let mut events = vec![build::campaign("updated", &updated, None, updated.updated_at)];
        if status_changed {
            events.push(build::campaign("status_changed", &updated, None, updated.updated_at));
        }
        let written = app
            .store
            .replace_campaign(&updated, current.version, app.outbox.durable(&events))
            .await?;
        Ok(written.then_some((updated, events, status_changed)))
    })
    .await?;
    if status_changed {
        // Resumed: its held messages are due again.
        app.scheduler.wake();
    }
    app.outbox.committed(events).await;
    Ok(Json(updated.into()))
}

/// Delete a campaign with its messages and contact links (not while active).
#[utoipa::path(delete, path = "/api/v1/campaigns/{id}", tag = "campaigns",
    operation_id = "delete_campaign", impl_for = delete,
    params(("id" = Uuid, Path, description = "Campaign id")),
    responses(
        (status = 204, description = "Deleted"),
        BadRequest, Unauthorized, NotFound, Unavailable,
    ),
    security(("bearer" = [])))]
#[handler]
pub async fn delete(req: &mut Request, depot: &mut Depot, res: &mut Response) -> Result<(), ApiError> {
    let app = app(depot);
    let (user_id, id) = (user(depot), extract::path_id(req, "id")?);
    let events = retry_on_conflict(|| async {
        let current = load(app, user_id, id).await?;
        campaign::check_deletable(&current)?;
        let events = vec![build::campaign("deleted", &current, None, app.clock.now())];
        let deleted = app
            .store
            .delete_campaign(user_id, id, current.version, app.outbox.durable(&events))
            .await?;
        Ok(deleted.then_some(events))
    })
    .await?;
    app.outbox.committed(events).await;
    // Its rows go in the background.
    app.scheduler.wake_background();
    res.status_code(StatusCode::NO_CONTENT);
    Ok(())
}

/// Delivery statistics of a campaign.
#[utoipa::path(get, path = "/api/v1/campaigns/{id}/stats", tag = "campaigns",
    operation_id = "get_campaign_stats", impl_for = stats,
    params(("id" = Uuid, Path, description = "Campaign id")),
    responses(
        (status = 200, description = "Delivery statistics", body = CampaignStats),
        BadRequest, Unauthorized, NotFound, Unavailable,
    ),
    security(("bearer" = [])))]
#[handler]
pub async fn stats(req: &mut Request, depot: &mut Depot) -> Result<Json<CampaignStats>, ApiError> {
    let app = app(depot);
    let campaign = load(app, user(depot), extract::path_id(req, "id")?).await?;
    let counts = app.store.message_counts(campaign.id).await?;
    let total_contacts = app.store.count_campaign_contacts(campaign.id).await?;
    let Tally {
        all,
        variants: mut by_variant,
        held_by_rule,
    } = tally(counts.iter().map(|(v, s, h, n)| (v.as_str(), *s, h.as_str(), *n)));
    let variants = campaign.message_template_b.is_some().then(|| {
        ["a", "b"]
            .into_iter()
            .map(|v| (v.to_string(), by_variant.remove(v).unwrap_or_default().into()))
            .collect()
    });
    Ok(Json(CampaignStats {
        total_contacts,
        messages_sent: all.sent,
        messages_delivered: all.delivered,
        messages_failed: all.failed,
        messages_pending: all.pending,
        messages_held: all.held,
        held_by_rule,
        delivery_rate: all.delivery_rate(),
        success_rate: all.success_rate(),
        variants,
    }))
}
