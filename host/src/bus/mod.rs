//! The bus between the api role and dispatchers: send jobs out, results back,
//! events to subscribers. One small [`Transport`] interface with two
//! implementations: in-process ([`memory`], the embedded default) and NATS
//! JetStream ([`nats`]). Everything above this module is the same for both.

pub mod event;
pub mod memory;
pub mod nats;
pub mod rate;

use crate::domain::ids::{CampaignId, MessageId, UserId};
use crate::domain::window::SendWindow;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, broadcast, watch};

use crate::bus::event::Event;
pub use crate::domain::message::{SendOutcome, SendResult};

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
    pub message_id: MessageId,
    pub campaign_id: CampaignId,
    pub user_id: UserId,
    /// Which hand-off of this message this job is; its result names it, and a
    /// result for an older hand-off is ignored. With `message_id` it is the
    /// job's deduplication key. (Called `dispatch` before 0.1's edges work:
    /// jobs still queued under that name are read too.)
    #[serde(alias = "dispatch")]
    pub hand_off: i32,
    /// Carrier attempts made before this one.
    pub attempts: i32,
    pub carrier: String,
    pub to: String,
    /// Sender; empty means the carrier plugin's own setting.
    pub from: String,
    pub template: String,
    pub variables: Vec<(String, String)>,
    /// The campaign's send window, checked again just before sending.
    pub window: SendWindow,
    /// When the recipient's allowed hours end (SPEC §4.1; `None`: no rule
    /// limits them): a job not sent by then goes back to be judged again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient_until: Option<DateTime<Utc>>,
    /// After this instant the job is stale: the api role will have handed the
    /// message out again, so a dispatcher drops it unsent.
    pub deadline: DateTime<Utc>,
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
    /// Whether a publish can fail (a bus across the network): events then wait
    /// in an outbox until the bus confirms them. In process nothing can be lost
    /// on the way, and nobody outside the process could read them anyway.
    fn remote(&self) -> bool {
        true
    }
    async fn ping(&self) -> Result<(), BusError>;
    /// The carriers' rate budgets shared by every dispatcher on this bus;
    /// `None` where a process's dispatcher is the only one (in process).
    fn shared_rate(&self) -> Option<Arc<dyn rate::SharedRate>> {
        None
    }
    /// Returns once the bus holds every job. Deduplicated by `(message_id, hand_off)`.
    async fn publish_jobs(&self, jobs: &[SendJob]) -> Result<(), BusError>;
    /// Returns once the bus holds every result. Deduplicated by `(message_id, hand_off)`.
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

/// A consumer that opens its inbox when needed and opens it again after an
/// error: a bus outage becomes a pause (logged), not a failure of its loop.
pub struct Consumer<T: Queued> {
    transport: Arc<dyn Transport>,
    inbox: Option<Box<dyn Inbox<T>>>,
    /// Delays between tries after failures; reset by a successful read.
    delays: crate::backoff::Delays,
}

impl<T: Queued> Consumer<T> {
    pub fn new(transport: Arc<dyn Transport>) -> Self {
        Self {
            transport,
            inbox: None,
            delays: crate::backoff::delays(),
        }
    }

    /// Waits before the next try after a failure.
    async fn back_off(&mut self) {
        tokio::time::sleep(self.delays.next().unwrap_or_default()).await;
    }

    /// Up to `max` deliveries available within `wait`; none while the bus is down.
    pub async fn next(&mut self, max: usize, wait: Duration) -> Vec<Delivery<T>> {
        let inbox = match &mut self.inbox {
            Some(inbox) => inbox,
            None => match T::open(&*self.transport).await {
                Ok(opened) => self.inbox.insert(opened),
                Err(e) => {
                    tracing::warn!(error = %e, queue = T::QUEUE, "cannot consume; retrying");
                    self.back_off().await;
                    return Vec::new();
                }
            },
        };
        match inbox.next(max, wait).await {
            Ok(batch) => {
                self.delays = crate::backoff::delays();
                batch
            }
            Err(e) => {
                tracing::warn!(error = %e, queue = T::QUEUE, "reading failed; reopening");
                self.inbox = None;
                self.back_off().await;
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

    /// Hands events to this process's listeners only; the transport gets
    /// them from an outbox ([`relay`]).
    pub fn announce(&self, events: Vec<Event>) {
        for event in events {
            let _ = self.local_events.send(Arc::new(event));
        }
    }

    /// Every event this process publishes from now on.
    pub fn listen(&self) -> broadcast::Receiver<Arc<Event>> {
        self.local_events.subscribe()
    }
}

/// Events waiting for the bus to confirm them, oldest first: the api role's
/// database outbox, or a dispatcher's [`Backlog`] in memory.
#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Up to `max` of the oldest waiting events, each with its position.
    async fn oldest(&self, max: usize) -> anyhow::Result<Vec<(i64, Event)>>;
    /// Forgets the events at these positions: the bus holds them.
    async fn confirm(&self, positions: &[i64]) -> anyhow::Result<()>;
}

/// Events published per bus request by [`relay`].
const RELAY_BATCH: usize = 500;

/// Publishes `outbox` on `transport` in order, in batches, until `stop` turns
/// true; an event is forgotten only once the bus confirmed it. While the bus or
/// the outbox fails it retries with exponential backoff. Looks again when
/// `wake` is notified, and at least every `idle` (another process may write).
pub async fn relay(
    transport: &dyn Transport,
    outbox: &dyn Outbox,
    wake: &Notify,
    idle: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut delays = crate::backoff::delays();
    while !*stop.borrow() {
        match relay_batch(transport, outbox).await {
            Ok(relayed) => {
                delays = crate::backoff::delays();
                if relayed == RELAY_BATCH {
                    continue;
                }
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(idle) => {}
                    _ = stop.changed() => {}
                }
            }
            Err(e) => {
                let delay = delays.next().unwrap_or_default();
                tracing::warn!("events wait for the bus: {e:#}; retrying in {delay:?}");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }
}

/// One batch of [`relay`]: how many events the bus confirmed.
pub async fn relay_batch(transport: &dyn Transport, outbox: &dyn Outbox) -> anyhow::Result<usize> {
    let waiting = outbox.oldest(RELAY_BATCH).await?;
    if waiting.is_empty() {
        return Ok(0);
    }
    let (positions, events): (Vec<i64>, Vec<Event>) = waiting.into_iter().unzip();
    transport.publish_events(&events).await?;
    outbox.confirm(&positions).await?;
    metrics::counter!("herald_events_relayed_total").increment(events.len() as u64);
    Ok(events.len())
}

/// Most events a [`Backlog`] keeps; past it the oldest are dropped (counted).
const BACKLOG_CAPACITY: usize = 10_000;

/// The outbox of a process without a database (a dispatcher's carrier events):
/// kept in memory, bounded, retried by [`relay`] until the bus takes them. It
/// does not survive the process.
pub struct Backlog {
    waiting: Mutex<(i64, VecDeque<(i64, Event)>)>,
    pub wake: Notify,
}

impl Default for Backlog {
    fn default() -> Self {
        Self {
            waiting: Mutex::new((0, VecDeque::new())),
            wake: Notify::new(),
        }
    }
}

impl Backlog {
    /// Queues events for the relay; the oldest go when the backlog is full.
    pub fn push(&self, events: &[Event]) {
        let mut guard = self.waiting.lock().expect("backlog lock");
        let (next, waiting) = &mut *guard;
        for event in events {
            if waiting.len() == BACKLOG_CAPACITY {
                waiting.pop_front();
                metrics::counter!("herald_events_dropped_total").increment(1);
                tracing::warn!("event backlog full: dropped the oldest event");
            }
            *next += 1;
            waiting.push_back((*next, event.clone()));
        }
        drop(guard);
        self.wake.notify_one();
    }
}

#[async_trait]
impl Outbox for Backlog {
    async fn oldest(&self, max: usize) -> anyhow::Result<Vec<(i64, Event)>> {
        let guard = self.waiting.lock().expect("backlog lock");
        Ok(guard.1.iter().take(max).cloned().collect())
    }

    async fn confirm(&self, positions: &[i64]) -> anyhow::Result<()> {
        // Positions only grow: everything up to the last confirmed one is on the bus
        // (or was dropped while the publish ran).
        if let Some(&last) = positions.last() {
            let mut guard = self.waiting.lock().expect("backlog lock");
            while guard.1.front().is_some_and(|(at, _)| *at <= last) {
                guard.1.pop_front();
            }
        }
        Ok(())
    }
}

/// The deduplication key of a job or result.
pub fn hand_off_key(message_id: MessageId, hand_off: i32) -> String {
    format!("{message_id}.{hand_off}")
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::bus::event::build;

    /// A bus that refuses events while `down`, and records what it took.
    #[derive(Default)]
    struct Flaky {
        down: AtomicBool,
        taken: Mutex<Vec<uuid::Uuid>>,
    }

    #[async_trait]
    impl Transport for Flaky {
        fn kind(&self) -> &'static str {
            "flaky"
        }
        async fn ping(&self) -> Result<(), BusError> {
            Ok(())
        }
        async fn publish_jobs(&self, _: &[SendJob]) -> Result<(), BusError> {
            Ok(())
        }
        async fn publish_results(&self, _: &[SendResult]) -> Result<(), BusError> {
            Ok(())
        }
        async fn publish_events(&self, events: &[Event]) -> Result<(), BusError> {
            if self.down.load(Ordering::Acquire) {
                return Err(BusError::Unavailable("down".into()));
            }
            self.taken.lock().unwrap().extend(events.iter().map(|e| e.id));
            Ok(())
        }
        async fn jobs(&self) -> Result<Box<dyn Inbox<SendJob>>, BusError> {
            Err(BusError::Setup("no queues".into()))
        }
        async fn results(&self) -> Result<Box<dyn Inbox<SendResult>>, BusError> {
            Err(BusError::Setup("no queues".into()))
        }
    }

    fn carrier_events(n: usize) -> Vec<Event> {
        (0..n)
            .map(|i| build::carrier("tripped", &format!("c{i}"), "test", Utc::now()))
            .collect()
    }

    #[tokio::test]
    async fn a_backlog_waits_out_an_outage_and_is_published_in_order() {
        let (bus, backlog) = (Flaky::default(), Backlog::default());
        bus.down.store(true, Ordering::Release);
        let events = carrier_events(3);
        backlog.push(&events);
        assert!(relay_batch(&bus, &backlog).await.is_err());
        assert_eq!(backlog.oldest(10).await.unwrap().len(), 3, "kept while the bus is down");

        bus.down.store(false, Ordering::Release);
        assert_eq!(relay_batch(&bus, &backlog).await.unwrap(), 3);
        let ids: Vec<uuid::Uuid> = events.iter().map(|e| e.id).collect();
        assert_eq!(*bus.taken.lock().unwrap(), ids);
        assert!(backlog.oldest(10).await.unwrap().is_empty(), "forgotten once taken");
    }

    #[tokio::test]
    async fn a_full_backlog_drops_its_oldest_events() {
        let backlog = Backlog::default();
        let events = carrier_events(BACKLOG_CAPACITY + 1);
        backlog.push(&events);
        let oldest = backlog.oldest(1).await.unwrap();
        assert_eq!(oldest[0].1.id, events[1].id);
    }
}
