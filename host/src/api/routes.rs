//! The HTTP edge, declared once: [`table`] lists every route, and each
//! documented route is served and documented by one call, from its handler's
//! `#[utoipa::path]` (path, method, security), so the router and the OpenAPI
//! document cannot disagree.

use salvo::handler::ArcHandler;
use salvo::http::Method;
use salvo::prelude::*;
use salvo::routing::filters::MethodFilter;
// utoipa's own router integrations read an operation's schemas and tags so.
use utoipa::__dev::{SchemaReferences, Tags};
use utoipa::openapi::path::{HttpMethod, Paths};
use utoipa::openapi::schema::Schema;
use utoipa::openapi::{OpenApi, RefOr};

use super::{BodyLimit, audit, authenticate, campaigns, contacts, docs, events, forecast, ops, sending, webhooks};
use crate::config::Config;

/// Headroom for multipart framing around an upload of `max_import_bytes`.
const MULTIPART_SLACK: u64 = 64 * 1024;

/// Every route of the server.
pub(super) fn table(config: &Config) -> Routes {
    let json = Some(BodyLimit(config.server.max_body_bytes));
    let upload = Some(BodyLimit(config.contacts.max_import_bytes + MULTIPART_SLACK));
    let webhook = Some(BodyLimit(config.server.max_webhook_bytes));
    let mut routes = Routes::default();

    routes.add(campaigns::list, json);
    routes.add(campaigns::create, json);
    routes.add(campaigns::show, json);
    routes.add(campaigns::update, json);
    routes.add(campaigns::delete, json);
    routes.add(campaigns::stats, json);
    routes.add(contacts::list, json);
    routes.add(contacts::add, json);
    routes.add(contacts::import, upload);
    routes.add(contacts::show, json);
    routes.add(contacts::patch, json);
    routes.add(sending::send, json);
    routes.add(sending::task, json);
    routes.add(audit::list_messages, json);
    routes.add(audit::show_message, json);
    routes.add(audit::export_consent, json);
    routes.add(audit::show_settings, json);
    routes.add(audit::replace_settings, json);
    routes.add(forecast::forecast, json);
    routes.add(events::stream, json);
    // Carriers are configured with either URL; the document names the short one.
    routes.add_also_under("/api/v1", webhooks::status, webhook);
    routes.add_also_under("/api/v1", webhooks::inbound, webhook);
    routes.add(ops::healthz, None);
    routes.add(ops::readyz, None);
    routes.add(ops::metrics, None);

    // The document and its UI are not part of the API they describe.
    routes.undocumented("/api/v1/openapi.json", Method::GET, docs::openapi_json);
    routes.undocumented("/docs", Method::GET, docs::swagger);
    routes.undocumented("/docs/{**rest}", Method::GET, docs::swagger);
    routes
}

/// Routes being declared: the salvo routers and the OpenAPI paths they serve.
#[derive(Default)]
pub(super) struct Routes {
    /// One router per path, in declaration order, each with a child per method.
    routers: Vec<(String, Router)>,
    paths: Paths,
    /// The schemas the documented operations refer to.
    schemas: Vec<(String, RefOr<Schema>)>,
}

impl Routes {
    /// Serves `handler` at the path and method of its `#[utoipa::path]` and
    /// documents it there. An operation that declares `security` needs a bearer
    /// token; `limit` caps the request body.
    pub fn add<H>(&mut self, handler: H, limit: Option<BodyLimit>)
    where
        H: Handler + utoipa::Path + SchemaReferences + for<'t> Tags<'t>,
    {
        self.document::<H>();
        self.serve(
            &H::path(),
            &H::methods(),
            handler.arc(),
            limit,
            declares_security::<H>(),
        );
    }

    /// As [`Routes::add`], also served (undocumented) under `prefix`.
    pub fn add_also_under<H>(&mut self, prefix: &str, handler: H, limit: Option<BodyLimit>)
    where
        H: Handler + utoipa::Path + SchemaReferences + for<'t> Tags<'t>,
    {
        let handler = handler.arc();
        let secured = declares_security::<H>();
        self.document::<H>();
        self.serve(&H::path(), &H::methods(), handler.clone(), limit, secured);
        self.serve(
            &format!("{prefix}{}", H::path()),
            &H::methods(),
            handler,
            limit,
            secured,
        );
    }

    /// Serves a route the OpenAPI document leaves out.
    pub fn undocumented(&mut self, path: &str, method: Method, handler: impl Handler) {
        let route = Router::with_filter(MethodFilter(method)).goal(handler);
        self.push(path, route);
    }

    /// The router, and the document's paths with the schemas they use.
    pub fn finish(self) -> (Router, OpenApi) {
        let router = self
            .routers
            .into_iter()
            .fold(Router::new(), |root, (_, router)| root.push(router));
        let mut doc = OpenApi::new(utoipa::openapi::Info::default(), self.paths);
        doc.components
            .get_or_insert_with(Default::default)
            .schemas
            .extend(self.schemas);
        (router, doc)
    }

    fn document<H: utoipa::Path + SchemaReferences + for<'t> Tags<'t>>(&mut self) {
        let (path, mut operation) = (H::path(), H::operation());
        operation.tags = Some(H::tags().into_iter().map(str::to_string).collect());
        for method in H::methods() {
            self.paths.add_path_operation(&path, vec![method], operation.clone());
        }
        H::schemas(&mut self.schemas);
    }

    fn serve(
        &mut self,
        path: &str,
        methods: &[HttpMethod],
        handler: ArcHandler,
        limit: Option<BodyLimit>,
        secured: bool,
    ) {
        for method in methods {
            let mut route = Router::with_filter(MethodFilter(salvo_method(method)));
            // Authentication first: an anonymous oversized body is a 401, not a 413.
            if secured {
                route = route.hoop(authenticate);
            }
            if let Some(limit) = limit {
                route = route.hoop(limit);
            }
            self.push(path, route.goal(handler.clone()));
        }
    }

    fn push(&mut self, path: &str, route: Router) {
        let path = path.trim_start_matches('/');
        match self.routers.iter_mut().find(|(known, _)| known == path) {
            Some((_, router)) => *router = std::mem::take(router).push(route),
            None => self
                .routers
                .push((path.to_string(), Router::with_path(path).push(route))),
        }
    }
}

fn declares_security<H: utoipa::Path>() -> bool {
    H::operation()
        .security
        .is_some_and(|requirements| !requirements.is_empty())
}

fn salvo_method(method: &HttpMethod) -> Method {
    match method {
        HttpMethod::Get => Method::GET,
        HttpMethod::Post => Method::POST,
        HttpMethod::Put => Method::PUT,
        HttpMethod::Delete => Method::DELETE,
        HttpMethod::Options => Method::OPTIONS,
        HttpMethod::Head => Method::HEAD,
        HttpMethod::Patch => Method::PATCH,
        HttpMethod::Trace => Method::TRACE,
    }
}
