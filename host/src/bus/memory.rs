//! The in-process transport (embedded default): queues inside one process.
//! Nothing survives a restart, which is fine: the database is the source of
//! truth and the api role hands unfinished work out again at start.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;

use super::{BusError, Delivery, DeliveryHandle, Inbox, SendJob, SendResult, Transport};
use crate::bus::event::Event;

/// A multi-consumer queue: every consumer takes from the same items.
struct Queue<T> {
    items: Mutex<VecDeque<T>>,
    ready: Notify,
}

impl<T: Clone + Send + 'static> Queue<T> {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            items: Mutex::new(VecDeque::new()),
            ready: Notify::new(),
        })
    }

    fn push_all(&self, items: impl IntoIterator<Item = T>) {
        self.items.lock().expect("queue lock").extend(items);
        self.ready.notify_waiters();
        self.ready.notify_one();
    }

    fn take(&self, max: usize) -> Vec<T> {
        let mut items = self.items.lock().expect("queue lock");
        let n = max.min(items.len());
        items.drain(..n).collect()
    }
}

struct QueueInbox<T>(Arc<Queue<T>>);

#[async_trait]
impl<T: Clone + Send + Sync + 'static> Inbox<T> for QueueInbox<T> {
    async fn next(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery<T>>, BusError> {
        let queue = &self.0;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = queue.ready.notified();
            let batch = queue.take(max);
            if !batch.is_empty() {
                return Ok(batch
                    .into_iter()
                    .map(|item| {
                        let handle = Requeue {
                            queue: queue.clone(),
                            item: item.clone(),
                        };
                        Delivery::new(item, Box::new(handle))
                    })
                    .collect());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }
}

/// In process, acknowledging is forgetting; "later" puts the item back after a delay.
struct Requeue<T> {
    queue: Arc<Queue<T>>,
    item: T,
}

#[async_trait]
impl<T: Clone + Send + Sync + 'static> DeliveryHandle for Requeue<T> {
    async fn ack(&self) {}

    async fn retry_later(&self, delay: Duration) {
        let queue = self.queue.clone();
        let item = self.item.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            queue.push_all([item]);
        });
    }

    async fn working(&self) {}
}

/// Jobs and results queued in memory; events go only to this process's
/// listeners (see [`super::Bus`]).
pub struct MemoryTransport {
    jobs: Arc<Queue<SendJob>>,
    results: Arc<Queue<SendResult>>,
}

impl MemoryTransport {
    pub fn new() -> Self {
        Self {
            jobs: Queue::new(),
            results: Queue::new(),
        }
    }
}

impl Default for MemoryTransport {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Transport for MemoryTransport {
    fn kind(&self) -> &'static str {
        "in-process"
    }

    fn remote(&self) -> bool {
        false
    }

    async fn ping(&self) -> Result<(), BusError> {
        Ok(())
    }

    async fn publish_jobs(&self, jobs: &[SendJob]) -> Result<(), BusError> {
        self.jobs.push_all(jobs.iter().cloned());
        Ok(())
    }

    async fn publish_results(&self, results: &[SendResult]) -> Result<(), BusError> {
        self.results.push_all(results.iter().cloned());
        Ok(())
    }

    async fn publish_events(&self, _events: &[Event]) -> Result<(), BusError> {
        Ok(())
    }

    async fn jobs(&self) -> Result<Box<dyn Inbox<SendJob>>, BusError> {
        Ok(Box::new(QueueInbox(self.jobs.clone())))
    }

    async fn results(&self) -> Result<Box<dyn Inbox<SendResult>>, BusError> {
        Ok(Box::new(QueueInbox(self.results.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::{SendOutcome, SendResult};
    use chrono::Utc;

    fn result(hand_off: i32) -> SendResult {
        SendResult {
            message_id: crate::domain::ids::MessageId::new(),
            hand_off,
            attempts: 0,
            outcome: SendOutcome::Failed { reason: "x".into() },
            at: Utc::now(),
        }
    }

    #[tokio::test]
    async fn consumers_share_one_queue_and_a_late_item_comes_back() {
        let transport = MemoryTransport::new();
        let (mut first, mut second) = (transport.results().await.unwrap(), transport.results().await.unwrap());
        transport
            .publish_results(&[result(1), result(2), result(3)])
            .await
            .unwrap();
        let taken = first.next(2, Duration::from_millis(10)).await.unwrap();
        let rest = second.next(10, Duration::from_millis(10)).await.unwrap();
        assert_eq!((taken.len(), rest.len()), (2, 1), "each item goes to one consumer");

        let item = rest.into_iter().next().unwrap();
        let hand_off = item.payload.hand_off;
        item.retry_later(Duration::from_millis(20)).await;
        assert!(
            first.next(10, Duration::from_millis(5)).await.unwrap().is_empty(),
            "not before the delay"
        );
        let again = first.next(10, Duration::from_millis(500)).await.unwrap();
        assert_eq!(
            again.iter().map(|d| d.payload.hand_off).collect::<Vec<_>>(),
            vec![hand_off]
        );
    }

    #[tokio::test]
    async fn a_waiting_consumer_wakes_when_items_arrive() {
        let transport = Arc::new(MemoryTransport::new());
        let mut inbox = transport.results().await.unwrap();
        let publisher = transport.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            publisher.publish_results(&[result(7)]).await.unwrap();
        });
        let started = std::time::Instant::now();
        let batch = inbox.next(10, Duration::from_secs(5)).await.unwrap();
        assert_eq!(batch.len(), 1);
        assert!(started.elapsed() < Duration::from_secs(2), "woken, not timed out");
    }
}
