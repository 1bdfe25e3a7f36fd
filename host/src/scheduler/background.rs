//! Work a request starts and the api role finishes in the background: queueing
//! the rest of a big send (SPEC §3.8), and purging a deleted campaign (§3.6).
//! Both go in bounded batches that each commit their progress, so a crash
//! loses at most one batch's work and a restart carries on from the database.

use std::time::Duration;

use tokio::sync::watch;

use super::{Scheduler, SchedulerError};
use crate::domain::settings::MAX_CAP_HOURS;
use crate::service;
use crate::store::PurgeMark;

/// Send tasks queued at once (each one batch at a time, in turn).
const TASKS_AT_ONCE: u32 = 8;
/// Rows of a deleted campaign removed per transaction: on SQLite about
/// 150 µs a message (seven indexes and the counter trigger), so a batch holds
/// the single writer for under 100 ms (2,000 held it for 640 ms, measured).
const PURGE_BATCH: u32 = 500;
/// How often the loops look for work nobody woke them for (another api host's).
const IDLE_LOOK: Duration = Duration::from_secs(2);

impl Scheduler {
    /// Queues every `queuing` task to its end; returns the messages created.
    pub async fn queue_pending(&self) -> Result<u64, SchedulerError> {
        let mut queued = 0;
        loop {
            let tasks = self.store.queuing_tasks(TASKS_AT_ONCE).await?;
            if tasks.is_empty() {
                return Ok(queued);
            }
            for task_id in tasks {
                let clock = || self.clock.now();
                queued += service::sending::queue_rest(&*self.store, task_id, clock, || self.wake()).await?;
            }
        }
    }

    /// Purges deleted campaigns to their end; returns the rows removed.
    pub async fn purge_deleted(&self) -> Result<u64, SchedulerError> {
        let mut removed = 0;
        let mut mark = PurgeMark::default();
        loop {
            let batch = self.store.purge_deleted(PURGE_BATCH, &mut mark).await?;
            if batch == 0 {
                return Ok(removed);
            }
            removed += batch;
            // Let other writers in between batches.
            tokio::task::yield_now().await;
        }
    }

    /// Forgets hand-outs older than any cap's window (30 days); returns how many.
    pub async fn prune_hand_outs(&self) -> Result<u64, SchedulerError> {
        let before = self.clock.now() - chrono::Duration::hours(i64::from(MAX_CAP_HOURS));
        let mut removed = 0;
        loop {
            let batch = self.store.prune_recipient_sends(before, PURGE_BATCH).await?;
            removed += batch;
            if batch < u64::from(PURGE_BATCH) {
                return Ok(removed);
            }
            tokio::task::yield_now().await;
        }
    }

    /// Look for background work (a send left queuing, a campaign deleted) now.
    pub fn wake_background(&self) {
        self.background.notify_one();
    }

    pub(super) async fn background_loop(&self, mut stop: watch::Receiver<bool>) {
        let mut delays = crate::backoff::delays();
        while !*stop.borrow() {
            let worked = async {
                let queued = self.queue_pending().await?;
                let purged = self.purge_deleted().await? + self.prune_hand_outs().await?;
                Ok::<_, SchedulerError>((queued, purged))
            };
            match worked.await {
                Ok((queued, purged)) => {
                    delays = crate::backoff::delays();
                    if queued + purged > 0 {
                        tracing::debug!(queued, purged, "background work done");
                    }
                    tokio::select! {
                        _ = self.background.notified() => {}
                        _ = tokio::time::sleep(IDLE_LOOK) => {}
                        _ = stop.changed() => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "queueing or purging in the background failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(delays.next().unwrap_or(IDLE_LOOK)) => {}
                        _ = stop.changed() => {}
                    }
                }
            }
        }
    }
}
