//! Carrier webhooks (SPEC §3.8): delivery receipts and inbound messages. No
//! bearer token: the carrier's plugin verifies each request (e.g. Twilio's
//! signature) and turns it into events.

use http_body_util::BodyExt;
use salvo::prelude::*;

use super::App;
use super::extract::app;
use super::problem::{ApiError, Problem};
use crate::domain::event::{Event, build};
use crate::domain::message::MessageStatus;
use crate::domain::schedule::{Keyword, classify_inbound};
use crate::plugin::carrier::{DeliveryStatus, WebhookError, WebhookEvent, WebhookKind, WebhookRequest};
use crate::plugin::http::plugin_headers;

/// Delivery receipts from a carrier.
#[utoipa::path(post, path = "/webhooks/{carrier}/status", tag = "webhooks",
    params(("carrier" = String, Path, description = "Configured carrier name")),
    responses(
        (status = 204, description = "Accepted and applied"),
        (status = 400, description = "The carrier plugin could not parse it", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Signature rejected by the carrier plugin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such carrier", body = Problem, content_type = "application/problem+json"),
    ))]
#[handler]
pub async fn status(req: &mut Request, depot: &mut Depot, res: &mut Response) -> Result<(), ApiError> {
    receive(req, depot, res, WebhookKind::Status).await
}

/// Inbound messages (STOP, START, replies) from a carrier.
#[utoipa::path(post, path = "/webhooks/{carrier}/inbound", tag = "webhooks",
    params(("carrier" = String, Path, description = "Configured carrier name")),
    responses(
        (status = 204, description = "Accepted and applied"),
        (status = 400, description = "The carrier plugin could not parse it", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Signature rejected by the carrier plugin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such carrier", body = Problem, content_type = "application/problem+json"),
    ))]
#[handler]
pub async fn inbound(req: &mut Request, depot: &mut Depot, res: &mut Response) -> Result<(), ApiError> {
    receive(req, depot, res, WebhookKind::Inbound).await
}

async fn receive(req: &mut Request, depot: &Depot, res: &mut Response, kind: WebhookKind) -> Result<(), ApiError> {
    let app = app(depot);
    let name = req.param::<String>("carrier").unwrap_or_default();
    let carrier = app
        .config
        .carriers
        .iter()
        .find(|c| c.name == name)
        .and_then(|c| app.plugins.carrier(Some(&c.name)))
        .ok_or(ApiError::NotFound("carrier"))?;
    let request = webhook_request(app, req).await?;
    let events = match carrier.handle_webhook(kind, &request).await {
        Ok(Ok(events)) => events,
        Ok(Err(WebhookError::Unauthorized(reason))) => {
            tracing::warn!(carrier = %name, %reason, "webhook refused");
            return Err(ApiError::Unauthorized);
        }
        Ok(Err(WebhookError::Malformed(reason))) => return Err(ApiError::BadRequest(reason)),
        Err(e) => return Err(ApiError::Unavailable(format!("the carrier plugin failed: {e}"))),
    };
    let mut published = Vec::new();
    for event in events {
        published.extend(apply(app, &name, event).await?);
    }
    app.publish(published).await;
    res.status_code(StatusCode::NO_CONTENT);
    Ok(())
}

/// The request as the plugin sees it: the public URL the carrier called.
async fn webhook_request(app: &App, req: &mut Request) -> Result<WebhookRequest, ApiError> {
    let path = req.uri().path().to_string();
    let url = match app.config.server.public_url.as_deref() {
        Some(base) => format!("{}{path}", base.trim_end_matches('/')),
        None => {
            let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
            let scheme = header("x-forwarded-proto").unwrap_or("http");
            let host = header("x-forwarded-host").or(header("host")).unwrap_or("localhost");
            format!("{scheme}://{host}{path}")
        }
    };
    let headers = plugin_headers(req.headers());
    let body = req
        .take_body()
        .collect()
        .await
        .map_err(|e| ApiError::BadRequest(format!("cannot read the request body: {e}")))?
        .to_bytes()
        .to_vec();
    Ok(WebhookRequest {
        method: req.method().as_str().to_string(),
        url,
        query: req.uri().query().unwrap_or_default().to_string(),
        headers,
        body,
    })
}

/// Applies one webhook event; returns the events to publish.
async fn apply(app: &App, carrier: &str, event: WebhookEvent) -> Result<Vec<Event>, ApiError> {
    let now = app.clock.now();
    match event {
        WebhookEvent::Delivery(update) => {
            let new_status = match update.status {
                DeliveryStatus::Delivered => MessageStatus::Delivered,
                DeliveryStatus::Failed => MessageStatus::Failed,
                // Accepted is what the send result already recorded.
                DeliveryStatus::Sent => return Ok(Vec::new()),
            };
            let changed = app
                .store
                .apply_receipt(
                    carrier,
                    &update.carrier_message_id,
                    new_status,
                    update.error.as_deref(),
                    now,
                )
                .await?;
            if changed.is_none() {
                tracing::debug!(carrier, id = %update.carrier_message_id, "receipt for no sent message; ignored");
            }
            Ok(changed.iter().filter_map(|m| build::message(m, now)).collect())
        }
        WebhookEvent::Inbound(message) => {
            let from = message.from.trim();
            let opted_out = match classify_inbound(&message.body) {
                Keyword::OptOut => true,
                Keyword::OptIn => false,
                Keyword::Other => {
                    let owners = app.store.owners_messaged(carrier, from).await?;
                    return Ok(owners
                        .into_iter()
                        .map(|owner| build::inbound(owner, carrier, from, &message.to, &message.body, now))
                        .collect());
                }
            };
            let detail = format!("{} via {carrier}", message.body.trim().to_uppercase());
            let (contacts, cancelled) = app
                .store
                .set_consent_by_phone(carrier, from, opted_out, &detail, now)
                .await?;
            let mut events: Vec<Event> = contacts.iter().map(|c| build::consent(c, "keyword", now)).collect();
            events.extend(cancelled.iter().filter_map(|m| build::message(m, now)));
            Ok(events)
        }
    }
}
