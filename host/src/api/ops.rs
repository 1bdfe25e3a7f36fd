//! Operations endpoints: liveness, readiness, metrics.

use salvo::http::header::CONTENT_TYPE;
use salvo::prelude::*;

use super::json::Json;

use super::dto::Health;
use super::extract::app;
use super::problem::{ApiError, Problem};

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
#[handler]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The database (and bus) can be reached.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, body = Health),
    (status = 503, body = Problem, content_type = "application/problem+json"),
))]
#[handler]
pub async fn readyz(depot: &mut Depot) -> Result<Json<Health>, ApiError> {
    app(depot)
        .store
        .ping()
        .await
        .map_err(|e| ApiError::Unavailable(format!("database unreachable: {e}")))?;
    Ok(Json(Health { status: "ready" }))
}

/// Prometheus metrics in text format.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses(
    (status = 200, description = "Prometheus text exposition", content_type = "text/plain"),
))]
#[handler]
pub async fn metrics(depot: &mut Depot, res: &mut Response) -> Result<(), ApiError> {
    let app = app(depot);
    for (status, count) in app.store.messages_by_status().await? {
        ::metrics::gauge!("herald_messages", "status" => status).set(count as f64);
    }
    let _ = res.add_header(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8", true);
    res.render(crate::telemetry::prometheus().render());
    Ok(())
}
