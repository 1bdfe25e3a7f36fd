//! Sending a campaign and following its task (SPEC §3.8).

use salvo::prelude::*;
use uuid::Uuid;

use super::campaigns::load;
use super::dto::{SendAccepted, TaskBody};
use super::extract::{self, app, user};
use super::problem::ApiError;
use super::problem::responses::*;
use crate::bus::event::build;
use crate::domain::campaign;
use crate::domain::message::{MessageStatus, SendRequest};
use crate::domain::stats::{Counters, task_status};
use crate::domain::variant::variant_for;
use crate::domain::window::SendWindow;

/// Queue the campaign's eligible contacts for sending.
///
/// Eligible: linked, not opted out, no message in this campaign yet, within
/// `total_limit`. Calling it again queues only contacts added since.
#[utoipa::path(post, path = "/api/v1/campaigns/{id}/send", tag = "sending",
    operation_id = "send_campaign", impl_for = send,
    params(("id" = Uuid, Path, description = "Campaign id")),
    responses(
        (status = 202, description = "Queued; follow the task", body = SendAccepted),
        BadRequest, Unauthorized, NotFound, Unavailable,
    ),
    security(("bearer" = [])))]
#[handler]
pub async fn send(req: &mut Request, depot: &mut Depot, res: &mut Response) -> Result<(), ApiError> {
    let app = app(depot);
    let user_id = user(depot);
    let campaign = load(app, user_id, extract::path_id(req, "id")?).await?;
    campaign::check_sendable(&campaign)?;
    let now = app.clock.now();
    let window = SendWindow::of(&campaign);
    let scheduled_for = (!window.is_open(now)).then(|| window.next_open(now));
    let carrier = campaign
        .carrier
        .clone()
        .or_else(|| app.config.default_carrier().map(str::to_string))
        .ok_or_else(|| ApiError::BadRequest("no carrier is configured for this campaign".into()))?;
    let b_percentage = campaign.message_template_b.as_ref().and(campaign.ab_test_percentage);
    let request = SendRequest {
        task_id: Uuid::now_v7(),
        user_id,
        campaign_id: campaign.id,
        b_percentage,
        carrier,
        not_before: scheduled_for.unwrap_or(now),
        scheduled_for,
        now,
    };
    let assign = |contact: Uuid| variant_for(campaign.id, contact, b_percentage);
    let queued = app
        .store
        .queue_send(&request, campaign.total_limit, &assign)
        .await?
        .ok_or_else(|| ApiError::BadRequest("only an active campaign can be sent".into()))?;
    app.publish(vec![build::send_started(
        user_id,
        campaign.id,
        request.task_id,
        queued,
        scheduled_for,
        now,
    )])
    .await;
    app.scheduler.wake();
    res.status_code(StatusCode::ACCEPTED);
    res.render(Json(SendAccepted {
        task_id: request.task_id,
        message: match scheduled_for {
            None => "Campaign sending initiated",
            Some(_) => "Campaign queued for next business day",
        },
        queued,
        scheduled_for,
    }));
    Ok(())
}

/// A send task's progress.
#[utoipa::path(get, path = "/api/v1/tasks/{id}", tag = "sending",
    operation_id = "get_task", impl_for = task,
    params(("id" = Uuid, Path, description = "Task id (from the send answer)")),
    responses(
        (status = 200, description = "The task's progress", body = TaskBody),
        BadRequest, Unauthorized, NotFound, Unavailable,
    ),
    security(("bearer" = [])))]
#[handler]
pub async fn task(req: &mut Request, depot: &mut Depot) -> Result<Json<TaskBody>, ApiError> {
    let app = app(depot);
    let report = app
        .store
        .task(user(depot), extract::path_id(req, "id")?)
        .await?
        .ok_or(ApiError::NotFound("task"))?;
    let mut counters = Counters::default();
    let mut handed_out = false;
    for (status, count) in &report.counts {
        counters.add(*status, *count);
        handed_out |= *status != MessageStatus::Queued;
    }
    let now = app.clock.now();
    let window_opened = report.scheduled_for.is_none_or(|at| at <= now);
    Ok(Json(TaskBody {
        task_id: report.id,
        campaign_id: report.campaign_id,
        status: task_status(&counters, handed_out, window_opened),
        queued: report.queued,
        sent: counters.sent,
        delivered: counters.delivered,
        failed: counters.failed,
        pending: counters.pending,
        created_at: report.created_at,
        scheduled_for: report.scheduled_for,
    }))
}
