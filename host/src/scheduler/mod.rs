//! The api role's half of sending (SPEC §1 steps 2 and 4): hands due messages
//! to dispatchers within each campaign's window and daily limit, applies the
//! results that come back, and hands out again whatever a crash left without
//! a result. The database is the source of truth: every step here starts from
//! committed rows, so any of it can be cut off and run again.

mod background;
mod results;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::backoff;
use crate::bus::{Bus, SendJob};
use crate::clock::Clock;
use crate::config::DispatchConfig;
use crate::domain::campaign::Campaign;
use crate::domain::compliance::RuleSet;
use crate::domain::ids::CampaignId;
use crate::domain::message::ClaimedMessage;
use crate::domain::result::RecentOutcomes;
use crate::domain::retry::RetryPolicy;
use crate::domain::window::SendWindow;
use crate::outbox::EventOutbox;
use crate::service;
use crate::service::compliance::Judge;
use crate::store::{Claim, Store, StoreError};

/// Tries to publish a batch of jobs before leaving it to the recovery sweep.
const PUBLISH_ATTEMPTS: u32 = 5;
/// Results applied per transaction.
const RESULT_BATCH: usize = 500;
/// Result loops applying batches concurrently (on disjoint messages).
const RESULT_APPLIERS: usize = 2;
/// Messages claimed per campaign and statement.
const MAX_CLAIM: u32 = 2_000;
/// Job batches published at once while the scheduler claims the next.
const PUBLISHING: usize = 4;

/// Shared by the scheduler's loops.
pub struct Scheduler {
    store: Arc<dyn Store>,
    bus: Bus,
    /// Campaign consequences of results (completed, auto-paused) go through it.
    outbox: Arc<EventOutbox>,
    clock: Arc<dyn Clock>,
    config: DispatchConfig,
    /// The recipient rules every claim applies (SPEC §4.1).
    rules: Arc<RuleSet>,
    /// Woken when work may be due now (a send was queued, results freed room).
    wake: Notify,
    /// Woken when a send was left queuing or a campaign was deleted.
    background: Notify,
    outcomes: RecentOutcomes,
}

impl Scheduler {
    pub fn new(
        store: Arc<dyn Store>,
        bus: Bus,
        outbox: Arc<EventOutbox>,
        clock: Arc<dyn Clock>,
        config: DispatchConfig,
        rules: Arc<RuleSet>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            bus,
            outbox,
            clock,
            outcomes: RecentOutcomes::new(config.pause_window),
            config,
            rules,
            wake: Notify::new(),
            background: Notify::new(),
        })
    }

    /// The recipient rules in force.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Look for due work now rather than at the next tick.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.config.max_attempts,
            base_delay: Duration::from_millis(self.config.retry_base_ms),
            max_delay: Duration::from_millis(self.config.retry_max_ms),
        }
    }

    /// Runs the hand-out loop, the result loop and the recovery sweep until
    /// `stop` turns true.
    pub fn spawn(self: &Arc<Self>, tasks: &mut JoinSet<()>, stop: watch::Receiver<bool>) {
        let this = self.clone();
        let until = stop.clone();
        tasks.spawn(async move { this.hand_out_loop(until).await });
        let this = self.clone();
        let until = stop.clone();
        tasks.spawn(async move { this.background_loop(until).await });
        // Two appliers: one commits a batch while the other reads the next.
        for _ in 0..RESULT_APPLIERS {
            let this = self.clone();
            let until = stop.clone();
            tasks.spawn(async move { this.result_loop(until).await });
        }
        let this = self.clone();
        tasks.spawn(async move { this.recovery_loop(stop).await });
    }

    async fn hand_out_loop(&self, mut stop: watch::Receiver<bool>) {
        let tick = Duration::from_millis(self.config.tick_ms);
        while !*stop.borrow() {
            let more = match self.hand_out().await {
                Ok(more) => more,
                Err(e) => {
                    tracing::warn!(error = %e, "scheduler: handing out due messages failed; retrying");
                    false
                }
            };
            if more {
                continue;
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(tick) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// The loops' periodic work once, now: queue what sends left queuing,
    /// purge deleted campaigns, reconcile receipts and unknown outcomes, then
    /// hand out everything due. Tests call it to act at a moment
    /// of their choosing (after moving a clock) instead of waiting for a timer.
    pub async fn tick(&self) -> Result<(), SchedulerError> {
        self.queue_pending().await?;
        self.purge_deleted().await?;
        self.reconcile().await?;
        while self.hand_out().await? {}
        Ok(())
    }

    /// One pass over the campaigns with due messages; true when there may be
    /// more to hand out right away. Jobs of one campaign are published while the
    /// next campaign's messages are claimed.
    pub async fn hand_out(&self) -> Result<bool, SchedulerError> {
        let mut publishing = JoinSet::new();
        let outcome = self.claim_and_publish(&mut publishing).await;
        // Claimed messages are committed as `sending`: let every publish finish,
        // even when a later claim failed (dropping the set would abort them).
        while publishing.join_next().await.is_some() {}
        outcome
    }

    async fn claim_and_publish(&self, publishing: &mut JoinSet<()>) -> Result<bool, SchedulerError> {
        let in_flight = self.store.count_in_flight().await?;
        let mut room = u64::from(self.config.max_in_flight).saturating_sub(in_flight);
        let now = self.clock.now();
        let mut more = false;
        for campaign in self.store.due_campaigns(now).await? {
            if room == 0 {
                break;
            }
            let window = SendWindow::of(&campaign);
            if !window.is_open(now) {
                self.store.wait_until(campaign.id, window.next_open(now)).await?;
                continue;
            }
            let started = std::time::Instant::now();
            let max = room.min(u64::from(MAX_CLAIM)) as u32;
            let settings = self.store.user_settings(campaign.user_id).await?;
            let lease = chrono::Duration::seconds(self.config.lease_secs as i64);
            let judge = Judge::new(&self.rules, &campaign, settings.frequency_cap, now, lease);
            let outcome = self
                .store
                .claim_due(&Claim {
                    campaign_id: campaign.id,
                    user_id: campaign.user_id,
                    daily_limit: campaign.daily_limit,
                    day: window.local_day(now),
                    max,
                    now,
                    judge: &judge,
                    events_in_outbox: self.bus.transport.remote(),
                })
                .await?;
            let passed_over = outcome.held + outcome.skipped;
            if passed_over > 0 {
                // Those went back to wait (or failed): look at the next due ones now.
                more = true;
            }
            self.outbox.committed(outcome.skipped_events).await;
            if outcome.day_used_up {
                // The rest waits for the next day's window.
                self.store.wait_until(campaign.id, window.next_day_open(now)).await?;
            }
            let claimed = outcome.handed;
            if claimed.is_empty() {
                // Another scheduler took them, or all were held.
                continue;
            }
            room -= claimed.len() as u64;
            more |= claimed.len() as u32 == max;
            tracing::debug!(campaign = %campaign.id, claimed = claimed.len(), held = outcome.held, took = ?started.elapsed(), "claimed");
            let jobs = self.jobs(&campaign, claimed, now);
            if publishing.len() >= PUBLISHING {
                publishing.join_next().await;
            }
            publishing.spawn(publish(self.bus.clone(), jobs));
        }
        Ok(more && room > 0)
    }

    /// Jobs for messages handed out now. A message the recovery sweep hands
    /// out again was judged at its first hand-out: its job carries when its
    /// recipient's hours end now (already, when they are closed), and a
    /// dispatcher sends it back instead of sending it late.
    fn jobs(&self, campaign: &Campaign, claimed: Vec<ClaimedMessage>, now: DateTime<Utc>) -> Vec<SendJob> {
        let lease = chrono::Duration::seconds(self.config.lease_secs as i64);
        let judge = Judge::new(&self.rules, campaign, None, now, lease);
        service::sending::jobs(campaign, claimed, now + lease, |m| judge.allowed_until(m))
    }

    async fn recovery_loop(&self, mut stop: watch::Receiver<bool>) {
        // At start, every `sending` message from before may have lost its job (the
        // in-process transport keeps nothing). They keep their hand-off number, so
        // on NATS a job still queued is recognised as a duplicate, not sent twice.
        // Afterwards, overdue ones get a new number: the job key must change for
        // JetStream to accept the copy within its duplicate window.
        let mut cutoff = self.clock.now();
        let mut new_hand_off = false;
        let lease = chrono::Duration::seconds(self.config.lease_secs as i64);
        let every = Duration::from_secs(self.config.lease_secs.div_ceil(4).max(1));
        let mut delays = backoff::delays();
        while !*stop.borrow() {
            if let Err(e) = self.reconcile().await {
                tracing::warn!(error = %e, "reconciling receipts and unknown outcomes failed; retrying");
            }
            match self.recover(cutoff, new_hand_off).await {
                Ok(0) => {
                    delays = backoff::delays();
                    tokio::select! {
                        _ = tokio::time::sleep(every) => {}
                        _ = stop.changed() => {}
                    }
                    cutoff = self.clock.now() - lease;
                    new_hand_off = true;
                }
                Ok(_) => delays = backoff::delays(),
                Err(e) => {
                    tracing::warn!(error = %e, "recovery sweep failed; retrying");
                    tokio::time::sleep(delays.next().unwrap_or_default()).await;
                }
            }
        }
    }

    /// Hands out again up to a batch of `sending` messages last touched before
    /// `cutoff` (as new hand-offs, or as the same ones); returns how many.
    pub async fn recover(&self, cutoff: DateTime<Utc>, new_hand_off: bool) -> Result<usize, SchedulerError> {
        let now = self.clock.now();
        let overdue = self.store.overdue_hand_offs(cutoff, now, 1_000, new_hand_off).await?;
        let count = overdue.len();
        if count == 0 {
            return Ok(0);
        }
        tracing::info!(messages = count, "handing out again messages whose result never came");
        let mut by_campaign: HashMap<CampaignId, Vec<ClaimedMessage>> = HashMap::new();
        for message in overdue {
            by_campaign.entry(message.campaign_id).or_default().push(message);
        }
        for (campaign_id, messages) in by_campaign {
            let Some(campaign) = self.store.campaign_by_id(campaign_id).await? else {
                continue;
            };
            publish(self.bus.clone(), self.jobs(&campaign, messages, now)).await;
        }
        Ok(count)
    }
}

/// Publishes jobs whose messages are committed as `sending`. If the bus stays
/// down they stay `sending`, and the recovery sweep hands them out again.
async fn publish(bus: Bus, jobs: Vec<SendJob>) {
    for (attempt, delay) in (1..=PUBLISH_ATTEMPTS).zip(backoff::delays()) {
        match bus.transport.publish_jobs(&jobs).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, jobs = jobs.len(), attempt, "publishing jobs failed");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Bus(#[from] crate::bus::BusError),
}
