//! The OpenAPI document (its paths come from the route table, [`super::routes`])
//! and an offline Swagger UI at `/docs`.

use std::sync::{Arc, LazyLock};

use salvo::http::header::CONTENT_TYPE;
use salvo::prelude::*;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use super::{App, constraints, problem};

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

/// What the document says besides its paths, which [`super::routes`] adds.
#[derive(OpenApi)]
#[openapi(
    info(title = "Herald API", description = "Self-hostable SMS campaigns: campaigns, contacts, CSV import, statistics."),
    components(schemas(problem::Problem, problem::ProblemField)),
    modifiers(&BearerAuth),
    tags(
        (name = "campaigns", description = "Campaigns and their statistics"),
        (name = "contacts", description = "Contacts, JSON and CSV"),
        (name = "sending", description = "Sending a campaign and following its task"),
        (name = "audit", description = "Why each message went when it did, and the consent export (SPEC §4.1)"),
        (name = "forecast", description = "When a campaign will finish under its window, limits and the recipient rules"),
        (name = "settings", description = "Your own settings: the frequency cap across campaigns"),
        (name = "events", description = "Your events as Server-Sent Events (embedded mode)"),
        (name = "webhooks", description = "Carrier delivery receipts and inbound messages (verified by the carrier plugin; also served under /api/v1/webhooks)"),
        (name = "operations", description = "Health, readiness and metrics"),
    )
)]
struct ApiDoc;

/// The OpenAPI 3.1 document of one server, serialized once: some of what it
/// states comes from the configuration (which phone numbers and carriers are
/// accepted, the template plugin's syntax).
#[derive(Clone)]
pub struct OpenApiJson(Arc<str>);

impl OpenApiJson {
    pub(super) fn new(paths: utoipa::openapi::OpenApi, app: &App) -> Self {
        let mut doc = ApiDoc::openapi();
        doc.merge(paths);
        let mut value = serde_json::to_value(&doc).expect("the OpenAPI document serializes");
        constraints::state(&mut value["components"]["schemas"], app);
        let json = serde_json::to_string_pretty(&value).expect("the OpenAPI document serializes");
        Self(json.into())
    }
}

static SWAGGER: LazyLock<Arc<utoipa_swagger_ui::Config<'static>>> =
    LazyLock::new(|| Arc::new(utoipa_swagger_ui::Config::from("/api/v1/openapi.json").persist_authorization(true)));

/// The OpenAPI 3.1 document.
#[handler]
pub async fn openapi_json(depot: &mut Depot, res: &mut Response) {
    let doc = depot
        .get_typed::<OpenApiJson>()
        .expect("the document is injected by the router");
    res.render(Text::Json(doc.0.to_string()));
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
