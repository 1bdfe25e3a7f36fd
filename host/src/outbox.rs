//! The api role's events outbox (SPEC §9: every event at least once, also
//! through a bus outage).
//!
//! Events are written to the `event_outbox` table, shown to this process's SSE
//! listeners, and left to the relay, which publishes the oldest rows in batches
//! and deletes them once JetStream has acknowledged them. Event ids are stable,
//! so a row published twice (a crash between the acknowledgement and the
//! delete, or two api hosts relaying the same rows) is dropped by JetStream's
//! duplicate window, or by subscribers deduplicating on `id`.
//!
//! Campaign create, update and delete and contact changes write their events in
//! the change's own transaction ([`EventOutbox::durable`], then
//! [`EventOutbox::committed`]). Events whose content comes out of the write
//! (`contacts.imported`, `send.started`, cancellations, webhooks, the
//! scheduler's status changes) are written right after it commits
//! ([`EventOutbox::publish`]): a process killed between the two loses them.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::bus::event::Event;
use crate::bus::{self, Bus};
use crate::store::Store;

/// How often the relay looks at the table without being woken: rows written by
/// another api host, or left by a process that stopped.
const IDLE: Duration = Duration::from_secs(2);

pub struct EventOutbox {
    store: Arc<dyn Store>,
    bus: Bus,
    wake: Notify,
}

impl EventOutbox {
    pub fn new(store: Arc<dyn Store>, bus: Bus) -> Arc<Self> {
        Arc::new(Self {
            store,
            bus,
            wake: Notify::new(),
        })
    }

    /// The bus it publishes on.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Publishes events of a change already committed, through the outbox.
    /// The change stands whatever happens to its events: failures are logged
    /// and counted, never returned.
    pub async fn publish(&self, events: Vec<Event>) {
        let durable = self.durable(&events);
        if !durable.is_empty()
            && let Err(e) = self.store.enqueue_events(durable).await
        {
            // The database took the change a moment ago; the bus may still take its events.
            tracing::warn!(error = %e, "cannot write events to the outbox; publishing them directly");
            return self.publish_now(events).await;
        }
        self.committed(events).await
    }

    /// What a write should put in the outbox in its own transaction: the events
    /// with a remote bus, nothing in process.
    pub fn durable<'a>(&self, events: &'a [Event]) -> &'a [Event] {
        match self.bus.transport.remote() {
            true => events,
            false => &[],
        }
    }

    /// After a write that stored [`EventOutbox::durable`]`(&events)` committed:
    /// shows them to local listeners and wakes the relay (in process, publishes them).
    pub async fn committed(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        if !self.bus.transport.remote() {
            return self.publish_now(events).await;
        }
        self.bus.announce(events);
        self.wake.notify_one();
    }

    async fn publish_now(&self, events: Vec<Event>) {
        if let Err(e) = self.bus.publish_events(events).await {
            metrics::counter!("herald_events_dropped_total").increment(1);
            tracing::warn!(error = %e, "could not publish events");
        }
    }

    /// Runs the relay until `stop` turns true; it drains what an earlier
    /// process left first.
    pub fn spawn(self: &Arc<Self>, tasks: &mut JoinSet<()>, stop: watch::Receiver<bool>) {
        if !self.bus.transport.remote() {
            return;
        }
        let this = self.clone();
        tasks.spawn(async move {
            let transport = this.bus.transport.clone();
            bus::relay(&*transport, &*this, &this.wake, IDLE, stop).await;
        });
    }
}

#[async_trait]
impl bus::Outbox for EventOutbox {
    async fn oldest(&self, max: usize) -> anyhow::Result<Vec<(i64, Event)>> {
        Ok(self.store.outbox_events(max as u32).await?)
    }

    async fn confirm(&self, positions: &[i64]) -> anyhow::Result<()> {
        Ok(self.store.forget_events(positions).await?)
    }
}
