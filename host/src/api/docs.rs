//! The OpenAPI document (generated from the handler and body types) and an
//! offline Swagger UI at `/docs`.

use std::sync::{Arc, LazyLock};

use salvo::http::header::CONTENT_TYPE;
use salvo::prelude::*;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use super::{campaigns, contacts, dto, events, ops, problem, sending, webhooks};

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("JWT")
                        .build(),
                ),
            );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Herald API", description = "Self-hostable SMS campaigns: campaigns, contacts, CSV import, statistics."),
    paths(
        campaigns::list, campaigns::create, campaigns::show, campaigns::update, campaigns::delete, campaigns::stats,
        contacts::add, contacts::import, contacts::list, contacts::show, contacts::patch,
        sending::send, sending::task, events::stream, webhooks::status, webhooks::inbound,
        ops::healthz, ops::readyz, ops::metrics,
    ),
    components(schemas(dto::Status, problem::Problem, problem::ProblemField)),
    modifiers(&BearerAuth),
    tags(
        (name = "campaigns", description = "Campaigns and their statistics"),
        (name = "contacts", description = "Contacts, JSON and CSV"),
        (name = "sending", description = "Sending a campaign and following its task"),
        (name = "events", description = "Your events as Server-Sent Events (embedded mode)"),
        (name = "webhooks", description = "Carrier delivery receipts and inbound messages (verified by the carrier plugin; also served under /api/v1/webhooks)"),
        (name = "operations", description = "Health, readiness and metrics"),
    )
)]
pub struct ApiDoc;

static OPENAPI_JSON: LazyLock<String> = LazyLock::new(|| {
    ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serializes")
});

static SWAGGER: LazyLock<Arc<utoipa_swagger_ui::Config<'static>>> =
    LazyLock::new(|| Arc::new(utoipa_swagger_ui::Config::from("/api/v1/openapi.json").persist_authorization(true)));

/// The OpenAPI 3.1 document.
#[handler]
pub async fn openapi_json(res: &mut Response) {
    res.render(Text::Json(OPENAPI_JSON.as_str()));
}

/// Swagger UI, served from assets compiled into the binary.
#[handler]
pub async fn swagger(req: &mut Request, res: &mut Response) {
    let rest = req.param::<String>("rest").unwrap_or_default();
    if rest.is_empty() && !req.uri().path().ends_with('/') {
        res.render(Redirect::found("/docs/"));
        return;
    }
    match utoipa_swagger_ui::serve(rest.trim_start_matches('/'), SWAGGER.clone()) {
        Ok(Some(file)) => {
            let _ = res.add_header(CONTENT_TYPE, file.content_type, true);
            res.body(file.bytes.into_owned());
        }
        Ok(None) => {
            res.status_code(StatusCode::NOT_FOUND);
        }
        Err(e) => {
            tracing::error!(error = %e, "swagger ui asset failed");
            res.status_code(StatusCode::INTERNAL_SERVER_ERROR);
        }
    }
}
