//! Carrier webhooks (SPEC §3.8): delivery receipts and inbound messages. No
//! bearer token: the carrier's plugin verifies each request (e.g. Twilio's
//! signature) and turns it into events.

use http_body_util::BodyExt;
use salvo::prelude::*;

use crate::domain::ids::MessageId;

use super::extract::app;
use super::problem::ApiError;
use super::problem::responses::*;
use super::{App, drain};
use crate::config::CarrierConfig;
use crate::plugin::carrier::{WebhookError, WebhookEvent, WebhookKind, WebhookRequest};
use crate::plugin::http::plugin_headers;
use crate::service;

/// Delivery receipts from a carrier.
#[utoipa::path(post, path = "/webhooks/{carrier}/status", tag = "webhooks",
    operation_id = "receive_delivery_receipts", impl_for = status,
    params(("carrier" = String, Path, description = "Configured carrier name")),
    responses(
        (status = 204, description = "Accepted and applied"),
        BadRequest, Unauthorized, NotFound, TooLarge, Unavailable,
    ))]
#[handler]
pub async fn status(req: &mut Request, depot: &mut Depot, res: &mut Response) -> Result<(), ApiError> {
    receive(req, depot, res, WebhookKind::Status).await
}

/// Inbound messages (STOP, START, replies) from a carrier.
#[utoipa::path(post, path = "/webhooks/{carrier}/inbound", tag = "webhooks",
    operation_id = "receive_inbound_messages", impl_for = inbound,
    params(("carrier" = String, Path, description = "Configured carrier name")),
    responses(
        (status = 204, description = "Accepted and applied"),
        BadRequest, Unauthorized, NotFound, TooLarge, Unavailable,
    ))]
#[handler]
pub async fn inbound(req: &mut Request, depot: &mut Depot, res: &mut Response) -> Result<(), ApiError> {
    receive(req, depot, res, WebhookKind::Inbound).await
}

async fn receive(req: &mut Request, depot: &Depot, res: &mut Response, kind: WebhookKind) -> Result<(), ApiError> {
    let app = app(depot);
    let name = req.param::<String>("carrier").unwrap_or_default();
    let config = app
        .config
        .carriers
        .iter()
        .find(|c| c.name == name)
        .filter(|c| webhooks_enabled(c))
        .ok_or(ApiError::NotFound("carrier"))?;
    let carrier = app
        .plugins
        .carrier(Some(&config.name))
        .ok_or(ApiError::NotFound("carrier"))?;
    let request = webhook_request(app, req).await?;
    // Anonymous input: a flood waits its turn instead of taking every core.
    let _slot = app.webhook_slot(&name).await;
    let events = match carrier.handle_webhook(kind, &request).await {
        Ok(Ok(events)) => events,
        Ok(Err(WebhookError::Unauthorized(reason))) => {
            tracing::warn!(carrier = %name, %reason, "webhook refused");
            return Err(ApiError::Unauthorized);
        }
        Ok(Err(WebhookError::Malformed(reason))) => return Err(ApiError::BadRequest(reason)),
        // The plugin trapped on this input (too big, too deep, a bug): the
        // request is what is wrong as far as the carrier is concerned.
        Err(e) => {
            return Err(ApiError::BadRequest(format!(
                "the carrier plugin could not handle it: {e}"
            )));
        }
    };
    // Herald's own message id, when the plugin put it in the callback URL it
    // gave the carrier; only meaningful for a single receipt.
    let message_id = match events.as_slice() {
        [WebhookEvent::Delivery(_)] => query_message_id(&request.query),
        _ => None,
    };
    let mut published = Vec::new();
    for event in events {
        published.extend(
            service::webhook::apply(
                &*app.store,
                &app.phone_policy,
                &name,
                event,
                message_id,
                app.clock.now(),
            )
            .await?,
        );
    }
    app.publish(published).await;
    res.status_code(StatusCode::NO_CONTENT);
    Ok(())
}

/// The log carrier authenticates webhooks with a shared secret; without one
/// configured its webhooks do not exist (anyone could post STOP for anyone).
fn webhooks_enabled(carrier: &CarrierConfig) -> bool {
    carrier.plugin != "builtin:log"
        || carrier
            .settings
            .get(LOG_WEBHOOK_SECRET)
            .is_some_and(|secret| !secret.trim().is_empty())
}

/// The setting holding the log carrier's webhook secret.
const LOG_WEBHOOK_SECRET: &str = "webhook_secret";

/// The query parameter naming Herald's message id in a status callback URL.
const MESSAGE_ID_PARAM: &str = "herald_message_id";

fn query_message_id(query: &str) -> Option<MessageId> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == MESSAGE_ID_PARAM)
        .and_then(|(_, value)| value.parse().ok())
}

/// The request as the plugin sees it: the public URL the carrier called. The
/// body is read up to `server.max_webhook_bytes`, counted as it streams.
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
    let body = read_limited(req, app.config.server.max_webhook_bytes).await?;
    Ok(WebhookRequest {
        method: req.method().as_str().to_string(),
        url,
        query: req.uri().query().unwrap_or_default().to_string(),
        headers,
        body,
    })
}

/// Past the limit, this much more of a body is drained (for at most
/// [`DRAIN_TIME`]): less than for declared lengths, since nothing bounds it.
const DRAIN_BYTES: u64 = 16 * 1024 * 1024;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// The body, counted as it streams (declared length or not), never buffered
/// past `limit`.
async fn read_limited(req: &mut Request, limit: u64) -> Result<Vec<u8>, ApiError> {
    let mut stream = req.take_body();
    let mut body = Vec::new();
    while let Some(frame) = stream.frame().await {
        let frame = frame.map_err(|e| ApiError::BadRequest(format!("the request body could not be read: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        if (body.len() + data.len()) as u64 > limit {
            drop(body);
            drain(&mut stream, DRAIN_BYTES, DRAIN_TIME).await;
            return Err(ApiError::TooLarge(limit));
        }
        body.extend_from_slice(&data);
    }
    Ok(body)
}
