//! Sending a campaign and following its task (SPEC §3.8).

use salvo::prelude::*;

use super::campaigns::load;
use super::dto::{SendAccepted, TaskBody};
use super::extract::{self, app, user};
use super::problem::ApiError;
use super::problem::responses::*;
use crate::domain::campaign;
use crate::domain::message::MessageStatus;
use crate::domain::stats::{tally, task_status};
use crate::service;

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
    let service::sending::Queued {
        task_id,
        queued,
        queuing,
        scheduled_for,
        event,
    } = service::sending::queue(&*app.store, &campaign, app.config.default_carrier(), app.clock.now()).await?;
    app.publish(vec![event]).await;
    app.scheduler.wake();
    if queuing {
        app.scheduler.wake_background();
    }
    res.status_code(StatusCode::ACCEPTED);
    res.render(Json(SendAccepted {
        task_id,
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
    let counted = tally(report.counts.iter().map(|(s, h, n)| ("", *s, h.as_str(), *n)));
    let counters = counted.all;
    let handed_out = report
        .counts
        .iter()
        .any(|(status, _, n)| *status != MessageStatus::Queued && *n > 0);
    let now = app.clock.now();
    let window_opened = report.scheduled_for.is_none_or(|at| at <= now);
    Ok(Json(TaskBody {
        task_id: report.id,
        campaign_id: report.campaign_id,
        status: task_status(report.queuing, &counters, handed_out, window_opened),
        queued: report.queued,
        sent: counters.sent,
        delivered: counters.delivered,
        failed: counters.failed,
        pending: counters.pending,
        held: counters.held,
        held_by_rule: counted.held_by_rule,
        created_at: report.created_at,
        scheduled_for: report.scheduled_for,
    }))
}
