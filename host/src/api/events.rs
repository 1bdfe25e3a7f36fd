//! `GET /api/v1/events`: the caller's events as Server-Sent Events (SPEC §6),
//! the embedded mode's stand-in for a NATS subscription.

use std::convert::Infallible;
use std::time::Duration;

use salvo::prelude::*;
use salvo::sse::{SseEvent, SseKeepAlive};
use tokio::sync::broadcast::error::RecvError;

use super::extract::{app, user};
use super::problem::responses::*;

/// Stream your events as they happen (`text/event-stream`).
///
/// Your events and the system's (`carrier.tripped|recovered`). Each SSE event
/// is named by the CloudEvents `type` (e.g. `herald.message.sent`),
/// carries the event id as its `id`, and the CloudEvents JSON document as its data.
/// Events published before the connection opened are not replayed.
#[utoipa::path(get, path = "/api/v1/events", tag = "events",
    operation_id = "stream_events", impl_for = stream,
    responses(
        (status = 200, description = "An endless event stream", content_type = "text/event-stream"),
        Unauthorized, Unavailable,
    ),
    security(("bearer" = [])))]
#[handler]
pub async fn stream(depot: &mut Depot, res: &mut Response) {
    let owner = user(depot);
    let events = app(depot).bus.listen();
    let frames = futures::stream::unfold(events, move |mut events| async move {
        loop {
            match events.recv().await {
                // A tenant's own events, and system events (carriers), which hold no tenant data.
                Ok(event) if event.owner.is_none_or(|o| o == owner) => {
                    let sse = SseEvent::default()
                        .name(event.kind())
                        .id(event.id.to_string())
                        .text(String::from_utf8_lossy(&event.to_json()).into_owned());
                    return Some((Ok::<_, Infallible>(sse), events));
                }
                Ok(_) => {}
                Err(RecvError::Lagged(missed)) => {
                    // A slow reader is told, rather than silently missing events.
                    let sse = SseEvent::default()
                        .name("herald.lagged")
                        .text(format!("{{\"missed\":{missed}}}"));
                    return Some((Ok(sse), events));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    });
    SseKeepAlive::new(frames)
        .max_interval(Duration::from_secs(15))
        .stream(res);
}
