//! The bus between the api role and dispatchers: send jobs out, results back,
//! events to subscribers. One small [`Transport`] interface with two
//! implementations: in-process ([`memory`], the embedded default) and NATS
//! JetStream ([`nats`]). Everything above this module is the same for both.

pub mod memory;
pub mod nats;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::domain::event::Event;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The bus cannot be reached or did not confirm in time; retrying may succeed.
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    /// Setting up streams or consumers failed (bad configuration, server limits).
    #[error("bus set-up failed: {0}")]
    Setup(String),
}

/// Everything a dispatcher needs to deliver one message (SPEC §1): it holds no
/// database credentials, so nothing may be looked up later.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendJob {
    pub message_id: Uuid,
    pub campaign_id: Uuid,
    pub user_id: Uuid,
    /// Which hand-off of this message this job is; its result names it, and a
    /// result for an older hand-off is ignored. With `message_id` it is the
    /// job's deduplication key.
    pub dispatch: i32,
    /// Carrier attempts made before this one.
    pub attempts: i32,
    pub carrier: String,
    pub to: String,
    /// Sender; empty means the carrier plugin's own setting.
    pub from: String,
    pub template: String,
    pub variables: Vec<(String, String)>,
    /// The campaign's send window, checked again just before sending.
    pub window: WindowSpec,
    /// After this instant the job is stale: the api role will have handed the
    /// message out again, so a dispatcher drops it unsent.
    pub deadline: DateTime<Utc>,
}

/// A campaign's send window as it travels in a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSpec {
    pub timezone: String,
    /// `HH:MM`
    pub start: String,
    /// `HH:MM`
    pub end: String,
    /// `mon`…`sun`
    pub days: Vec<String>,
}

/// What became of a job, sent back to the api role, which persists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendResult {
    pub message_id: Uuid,
    pub dispatch: i32,
    /// Carrier attempts before this job (copied from the job).
    pub attempts: i32,
    pub outcome: SendOutcome,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SendOutcome {
    /// The carrier accepted the message.
    Sent {
        carrier_message_id: String,
        segments: u32,
        /// The carrier said it is already delivered.
        delivered: bool,
    },
    /// A permanent failure: never retried.
    Failed { reason: String },
    /// A retryable failure; counts as an attempt.
    Retry {
        reason: String,
        retry_after_ms: Option<u64>,
    },
    /// Not handed to the carrier (window closed, carrier tripped, paused or
    /// rate-limited for too long): queue again from `until`, without counting
    /// an attempt or a slot of the daily limit.
    Postponed { until: DateTime<Utc>, reason: String },
    /// The request may have reached a carrier that does not deduplicate, and no
    /// answer came back: held for reconciliation, never sent again blindly.
    Unknown { reason: String },
    /// The carrier refused because the recipient opted out with it: the
    /// message fails and the contact is opted out.
    OptedOut { reason: String },
}

/// One message taken from the bus. Acknowledge it once handled; until then a
/// crash makes the bus deliver it again.
pub struct Delivery<T> {
    pub payload: T,
    handle: Box<dyn DeliveryHandle>,
}

impl<T> Delivery<T> {
    pub fn new(payload: T, handle: Box<dyn DeliveryHandle>) -> Self {
        Self { payload, handle }
    }

    /// Done with it: the bus forgets it.
    pub async fn ack(self) {
        self.handle.ack().await
    }

    /// Not now: the bus delivers it again after `delay`.
    pub async fn retry_later(self, delay: Duration) {
        self.handle.retry_later(delay).await
    }

    /// Still working on it: keeps the bus from delivering it to someone else.
    pub async fn working(&self) {
        self.handle.working().await
    }
}

#[async_trait]
pub trait DeliveryHandle: Send + Sync {
    async fn ack(&self);
    async fn retry_later(&self, delay: Duration);
    async fn working(&self);
}

/// A consumer's share of a queue.
#[async_trait]
pub trait Inbox<T>: Send {
    /// Waits up to `wait` for deliveries; returns at most `max` (possibly none).
    async fn next(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery<T>>, BusError>;
}

/// The transport interface (SPEC §1, §6).
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// `in-process` or `nats`, for logs and `/readyz`.
    fn kind(&self) -> &'static str;
    async fn ping(&self) -> Result<(), BusError>;
    /// Returns once the bus holds every job. Deduplicated by `(message_id, dispatch)`.
    async fn publish_jobs(&self, jobs: &[SendJob]) -> Result<(), BusError>;
    /// Returns once the bus holds every result. Deduplicated by `(message_id, dispatch)`.
    async fn publish_results(&self, results: &[SendResult]) -> Result<(), BusError>;
    /// Returns once the bus holds every event. Deduplicated by event id.
    async fn publish_events(&self, events: &[Event]) -> Result<(), BusError>;
    /// This dispatcher's share of the job queue (shared by every dispatcher).
    async fn jobs(&self) -> Result<Box<dyn Inbox<SendJob>>, BusError>;
    /// Results for the api role (shared by every api host).
    async fn results(&self) -> Result<Box<dyn Inbox<SendResult>>, BusError>;
}

/// A queue's message type, and how to open a consumer of it.
#[async_trait]
pub trait Queued: Sized + Send + 'static {
    /// The queue's name, for logs.
    const QUEUE: &'static str;
    async fn open(transport: &dyn Transport) -> Result<Box<dyn Inbox<Self>>, BusError>;
}

#[async_trait]
impl Queued for SendJob {
    const QUEUE: &'static str = "jobs";
    async fn open(transport: &dyn Transport) -> Result<Box<dyn Inbox<Self>>, BusError> {
        transport.jobs().await
    }
}

#[async_trait]
impl Queued for SendResult {
    const QUEUE: &'static str = "results";
    async fn open(transport: &dyn Transport) -> Result<Box<dyn Inbox<Self>>, BusError> {
        transport.results().await
    }
}

/// How long a consumer waits before trying again after the bus failed.
const REOPEN_AFTER: Duration = Duration::from_secs(1);

/// A consumer that opens its inbox when needed and opens it again after an
/// error: a bus outage becomes a pause (logged), not a failure of its loop.
pub struct Consumer<T: Queued> {
    transport: Arc<dyn Transport>,
    inbox: Option<Box<dyn Inbox<T>>>,
}

impl<T: Queued> Consumer<T> {
    pub fn new(transport: Arc<dyn Transport>) -> Self {
        Self { transport, inbox: None }
    }

    /// Up to `max` deliveries available within `wait`; none while the bus is down.
    pub async fn next(&mut self, max: usize, wait: Duration) -> Vec<Delivery<T>> {
        let inbox = match &mut self.inbox {
            Some(inbox) => inbox,
            None => match T::open(&*self.transport).await {
                Ok(opened) => self.inbox.insert(opened),
                Err(e) => {
                    tracing::warn!(error = %e, queue = T::QUEUE, "cannot consume; retrying");
                    tokio::time::sleep(REOPEN_AFTER).await;
                    return Vec::new();
                }
            },
        };
        match inbox.next(max, wait).await {
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!(error = %e, queue = T::QUEUE, "reading failed; reopening");
                self.inbox = None;
                tokio::time::sleep(REOPEN_AFTER).await;
                Vec::new()
            }
        }
    }
}

/// The transport plus this process's own fan-out of the events it publishes,
/// which `GET /api/v1/events` streams to their owners.
#[derive(Clone)]
pub struct Bus {
    pub transport: Arc<dyn Transport>,
    local_events: broadcast::Sender<Arc<Event>>,
}

impl Bus {
    pub fn new(transport: Arc<dyn Transport>) -> Self {
        Self {
            transport,
            local_events: broadcast::channel(4096).0,
        }
    }

    /// Publishes events on the transport, then to local listeners.
    pub async fn publish_events(&self, events: Vec<Event>) -> Result<(), BusError> {
        if events.is_empty() {
            return Ok(());
        }
        let published = self.transport.publish_events(&events).await;
        for event in events {
            // No listener is fine: SSE clients come and go.
            let _ = self.local_events.send(Arc::new(event));
        }
        published
    }

    /// Every event this process publishes from now on.
    pub fn listen(&self) -> broadcast::Receiver<Arc<Event>> {
        self.local_events.subscribe()
    }
}

/// The deduplication key of a job or result.
pub fn dispatch_key(message_id: Uuid, dispatch: i32) -> String {
    format!("{message_id}.{dispatch}")
}
