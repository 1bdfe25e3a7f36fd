//! The HTTP edge (salvo): routing, authentication, request telemetry. Handlers
//! are thin: parse, call domain rules and the store, render. Knows no SQL.

mod audit;
mod campaigns;
mod constraints;
mod contacts;
pub mod docs;
mod dto;
mod events;
mod extract;
mod forecast;
mod json;
mod ops;
pub mod problem;
mod routes;
mod sending;
mod webhooks;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use salvo::catcher::Catcher;
use salvo::http::header::HeaderName;
use salvo::http::header::{CONNECTION, CONTENT_LENGTH};
use salvo::http::{HeaderValue, Method};
use salvo::prelude::*;
use salvo::request_id::{IdGenerator, RequestId, RequestIdDepotExt};
use uuid::Uuid;

use crate::domain::ids::UserId;

use crate::auth::Verifier;
use crate::bus::Bus;
use crate::bus::event::Event;
use crate::clock::Clock;
use crate::config::Config;
use crate::domain::campaign::CampaignRules;
use crate::domain::phone::PhonePolicy;
use crate::outbox::EventOutbox;
use crate::plugin::Plugins;
use crate::scheduler::Scheduler;
use crate::store::Store;
use problem::ApiError;

/// Everything a request handler may use.
pub struct App {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub verifier: Verifier,
    pub clock: Arc<dyn Clock>,
    pub phone_policy: PhonePolicy,
    /// The template plugin (the authority on template syntax) and the carriers.
    pub plugins: Plugins,
    pub bus: Bus,
    /// Where events of committed changes go (a database outbox with NATS).
    pub outbox: Arc<EventOutbox>,
    pub scheduler: Arc<Scheduler>,
    carrier_names: Vec<String>,
    /// Webhook calls per carrier at once (`server.webhook_concurrency`).
    webhook_slots: HashMap<String, Arc<Semaphore>>,
    /// Users known to exist, so provisioning costs one write per user, not per request.
    known_users: RwLock<HashSet<UserId>>,
}

impl App {
    pub fn new(
        config: Config,
        store: Arc<dyn Store>,
        verifier: Verifier,
        clock: Arc<dyn Clock>,
        plugins: Plugins,
        outbox: Arc<EventOutbox>,
        scheduler: Arc<Scheduler>,
    ) -> Self {
        // Metrics recorded before the recorder exists are lost: install it first.
        crate::telemetry::prometheus();
        Self {
            phone_policy: PhonePolicy::new(&config.contacts.country_codes),
            carrier_names: config.carriers.iter().map(|c| c.name.clone()).collect(),
            webhook_slots: config
                .carriers
                .iter()
                .map(|c| {
                    let slots = config.server.webhook_concurrency.max(1) as usize;
                    (c.name.clone(), Arc::new(Semaphore::new(slots)))
                })
                .collect(),
            config,
            store,
            verifier,
            clock,
            plugins,
            bus: outbox.bus().clone(),
            outbox,
            scheduler,
            known_users: RwLock::new(HashSet::new()),
        }
    }

    /// Publishes events of a change already committed, through the outbox: a
    /// bus outage delays them, the request still succeeds.
    pub(crate) async fn publish(&self, events: Vec<Event>) {
        self.outbox.publish(events).await
    }

    /// Waits for a turn to run `carrier`'s webhook plugin.
    pub(crate) async fn webhook_slot(&self, carrier: &str) -> Option<OwnedSemaphorePermit> {
        let slots = self.webhook_slots.get(carrier)?.clone();
        slots.acquire_owned().await.ok()
    }

    pub(crate) fn rules(&self) -> CampaignRules<'_> {
        CampaignRules {
            carriers: &self.carrier_names,
            max_daily_limit: i64::from(self.config.campaigns.max_daily_limit),
        }
    }

    async fn ensure_user(&self, user_id: UserId) -> Result<(), ApiError> {
        if self.known_users.read().expect("lock").contains(&user_id) {
            return Ok(());
        }
        self.store.ensure_user(user_id, self.clock.now()).await?;
        self.known_users.write().expect("lock").insert(user_id);
        Ok(())
    }
}

/// The authenticated user of a request.
#[derive(Debug, Clone, Copy)]
pub struct CurrentUser(pub UserId);

/// Rounds of an optimistic read-modify-write before the API gives up.
const WRITE_ATTEMPTS: u32 = 50;

/// Runs an optimistic read-modify-write until it lands; `Ok(None)` from `attempt`
/// means someone else wrote first. Every lost round is another writer's win, so
/// with N writers at once each lands within N rounds; a short random pause keeps
/// them from retrying in lockstep. Only a resource rewritten by more than
/// [`WRITE_ATTEMPTS`] requests at once is refused, as a busy database is: 503
/// with `Retry-After` (docs/decisions.md). Clients never see a 409.
async fn retry_on_conflict<T, F, Fut>(mut attempt: F) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, ApiError>>,
{
    for round in 0..WRITE_ATTEMPTS {
        if let Some(done) = attempt().await? {
            return Ok(done);
        }
        let most = 2 * u64::from(round.min(10) + 1);
        let pause = rand::random::<u64>() % (most + 1);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    Err(ApiError::Unavailable(
        "the resource is being changed by many requests at once; retry shortly".into(),
    ))
}

#[handler]
async fn authenticate(req: &mut Request, depot: &mut Depot, res: &mut Response, ctrl: &mut FlowCtrl) {
    let app = extract::app(depot);
    let header = req.headers().get("authorization").and_then(|v| v.to_str().ok());
    let user_id = match app.verifier.verify_header(header) {
        Ok(user_id) => user_id,
        Err(reason) => {
            tracing::debug!(%reason, "token refused");
            problem::write_problem(res, &ApiError::Unauthorized.to_problem());
            ctrl.skip_rest();
            return;
        }
    };
    if let Err(e) = app.ensure_user(user_id).await {
        e.write(req, depot, res).await;
        ctrl.skip_rest();
        return;
    }
    depot.insert_typed(CurrentUser(user_id));
}

/// The header carrying a request's id, echoed on every answer.
const REQUEST_ID: &str = "x-request-id";

/// A client's own request id (up to 128 visible characters) is kept, so its logs
/// and Herald's line up; otherwise a new time-ordered id.
struct RequestIds;

impl IdGenerator for RequestIds {
    fn generate(&self, req: &mut Request, _depot: &mut Depot) -> String {
        req.headers()
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128)
            .map_or_else(|| Uuid::now_v7().to_string(), str::to_string)
    }
}

/// Structured log line and metrics for every request (inside its request id's span).
#[handler]
async fn observe(req: &mut Request, depot: &mut Depot, res: &mut Response, ctrl: &mut FlowCtrl) {
    let started = Instant::now();
    ctrl.call_next(req, depot, res).await;
    let status = res.status_code.unwrap_or(StatusCode::OK).as_u16();
    let route = match req.matched_path() {
        "" => "unmatched".to_string(),
        path => format!("/{path}"),
    };
    // Known methods only: a client must not mint metric series.
    let method: &'static str = match *req.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    };
    let elapsed = started.elapsed();
    tracing::info!(
        request_id = depot.request_id().unwrap_or_default(),
        method,
        path = req.uri().path(),
        status,
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        "request"
    );
    metrics::counter!("herald_http_requests_total", "method" => method, "route" => route.clone(), "status" => status.to_string()).increment(1);
    metrics::histogram!("herald_http_request_duration_seconds", "method" => method, "route" => route)
        .record(elapsed.as_secs_f64());
}

/// Herald's limits on the request target and the header section. They sit below
/// hyper's own (a target of 65,534 bytes, a header section of 408 KiB or 100
/// header lines), which hyper answers itself with a bare `414` / `431` status line
/// and no body before closing the connection; under these, the answer is a problem
/// document like every other error.
pub const MAX_URI_BYTES: usize = 8 * 1024;
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Refuses over-long request targets (414) and header sections (431).
#[handler]
async fn request_limits(req: &mut Request, res: &mut Response, ctrl: &mut FlowCtrl) {
    let target = req.uri().path_and_query().map_or(0, |t| t.as_str().len());
    // As on the wire: `name: value\r\n`.
    let headers: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    let refused = if target > MAX_URI_BYTES {
        ApiError::UriTooLong(MAX_URI_BYTES)
    } else if headers > MAX_HEADER_BYTES {
        ApiError::HeadersTooLarge(MAX_HEADER_BYTES)
    } else {
        return;
    };
    res.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    problem::write_problem(res, &refused.to_problem());
    ctrl.skip_rest();
}

/// Oversized bodies up to this size are read and discarded before answering 413:
/// a client still sending would otherwise see a reset connection, not the answer.
const DRAIN_CAP: u64 = 256 * 1024 * 1024;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads and drops up to `max` more bytes of `body`, for at most `timeout`:
/// a client still sending an oversized body then reads the 413 instead of
/// seeing its connection reset.
pub(crate) async fn drain(body: &mut salvo::http::ReqBody, max: u64, timeout: Duration) {
    let mut drained = 0u64;
    let read = async {
        while drained < max
            && let Some(Ok(frame)) = body.frame().await
        {
            drained += frame.data_ref().map_or(0, |data| data.len() as u64);
        }
    };
    let _ = tokio::time::timeout(timeout, read).await;
}

/// Caps request bodies at the given number of bytes: declared-too-large bodies
/// get a 413 before any handler runs; bodies of unknown length are cut off when read.
#[derive(Debug, Clone, Copy)]
struct BodyLimit(u64);

#[async_trait]
impl Handler for BodyLimit {
    async fn handle(&self, req: &mut Request, _depot: &mut Depot, res: &mut Response, ctrl: &mut FlowCtrl) {
        req.set_secure_max_size(self.0 as usize);
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let Some(declared) = declared.filter(|&n| n > self.0) else {
            return;
        };
        if declared <= DRAIN_CAP {
            drain(&mut req.take_body(), DRAIN_CAP, DRAIN_TIMEOUT).await;
        }
        res.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
        problem::write_problem(res, &ApiError::TooLarge(self.0).to_problem());
        ctrl.skip_rest();
    }
}

/// The server's routes ([`routes::table`]), with the OpenAPI document of this
/// configuration served at `/api/v1/openapi.json`.
pub fn router(app: Arc<App>) -> Router {
    let (router, paths) = routes::table(&app.config).finish();
    Router::new()
        .hoop(salvo::affix_state::inject(docs::OpenApiJson::new(paths, &app)))
        .hoop(salvo::affix_state::inject(app))
        .push(router)
}

pub fn service(app: Arc<App>) -> Service {
    Service::new(router(app))
        .hoop(
            RequestId::new()
                .header_name(HeaderName::from_static(REQUEST_ID))
                .generator(RequestIds),
        )
        .hoop(observe)
        .hoop(request_limits)
        .catcher(Catcher::default().hoop(problem::catcher))
}
