//! Operations endpoints: liveness, readiness, metrics.

use salvo::http::header::CONTENT_TYPE;
use salvo::prelude::*;

use super::json::Json;

use super::dto::Health;
use super::extract::app;
use super::problem::ApiError;
use super::problem::responses::*;
use crate::domain::message::MessageStatus;

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    operation_id = "healthz", impl_for = healthz,
    responses(
        (status = 200, description = "Alive", body = Health),
    ))]
#[handler]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The database (and bus) can be reached.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    operation_id = "readyz", impl_for = readyz,
    responses(
        (status = 200, description = "Ready to serve", body = Health),
        Unavailable,
    ))]
#[handler]
pub async fn readyz(depot: &mut Depot) -> Result<Json<Health>, ApiError> {
    let app = app(depot);
    if let Err(e) = app.store.ping().await {
        tracing::warn!(error = %e, "readiness check failed");
        return Err(ApiError::Unavailable("the database is unreachable".into()));
    }
    if let Err(e) = app.bus.transport.ping().await {
        tracing::warn!(error = %e, "readiness check failed");
        return Err(ApiError::Unavailable("the message bus is unreachable".into()));
    }
    Ok(Json(Health { status: "ready" }))
}

/// Prometheus metrics in text format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    operation_id = "metrics", impl_for = metrics,
    responses(
        (status = 200, description = "Prometheus text exposition", content_type = "text/plain"),
        Unavailable,
    ))]
#[handler]
pub async fn metrics(depot: &mut Depot, res: &mut Response) -> Result<(), ApiError> {
    let app = app(depot);
    let counts = app.store.messages_by_status().await?;
    // Every status, so one that empties reads 0, not its last count. `queued`
    // is the queue depth; `sending` is what dispatchers hold.
    for status in MessageStatus::ALL {
        let count = counts.iter().find(|(s, _)| *s == status).map_or(0, |(_, n)| *n);
        ::metrics::gauge!("herald_messages", "status" => status.as_str()).set(count as f64);
    }
    let _ = res.add_header(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8", true);
    res.render(crate::telemetry::prometheus().render());
    Ok(())
}
