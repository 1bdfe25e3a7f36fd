//! Applying dispatcher results (SPEC §1 step 4): idempotently, in batches,
//! then publishing what changed and the campaign-level consequences (total
//! limit reached → completed; too many failures → paused).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use crate::domain::ids::{CampaignId, MessageId};
use crate::service::consent;
use chrono::{DateTime, Utc};
use tokio::sync::watch;

use super::{RESULT_BATCH, Scheduler, SchedulerError};
use crate::backoff;
use crate::bus::event::{Event, build};
use crate::bus::{Consumer, Delivery, SendResult};
use crate::domain::contact::ConsentSource;
use crate::domain::message::{MessageChange, MessageRecord, MessageStatus, OPTED_OUT};
use crate::domain::result::plan_change;

/// How long a receipt whose send result never lands is kept.
const EARLY_RECEIPT_TTL: Duration = Duration::from_secs(24 * 3600);

impl Scheduler {
    pub(super) async fn result_loop(&self, mut stop: watch::Receiver<bool>) {
        let mut results = Consumer::<SendResult>::new(self.bus.transport.clone());
        while !*stop.borrow() {
            let batch = tokio::select! {
                batch = results.next(RESULT_BATCH, Duration::from_secs(1)) => batch,
                _ = stop.changed() => break,
            };
            if batch.is_empty() {
                continue;
            }
            let started = std::time::Instant::now();
            let mut delays = backoff::delays();
            while let Err(e) = self.apply(&batch).await {
                tracing::warn!(error = %e, "applying results failed; retrying");
                tokio::time::sleep(delays.next().unwrap_or_default()).await;
                if *stop.borrow() {
                    return;
                }
            }
            let applied_in = started.elapsed();
            let results = batch.len();
            for delivery in batch {
                delivery.ack().await;
            }
            tracing::debug!(results, ?applied_in, acked_in = ?started.elapsed() - applied_in, "results applied");
            self.wake();
        }
    }

    /// Persists a batch of results, then publishes their events and follow-ups.
    pub(super) async fn apply(&self, batch: &[Delivery<SendResult>]) -> Result<(), SchedulerError> {
        let now = self.clock.now();
        let policy = self.policy();
        let changes: Vec<MessageChange> = batch
            .iter()
            .map(|d| plan_change(&d.payload, &policy, now, rand::random::<f64>()))
            .collect();
        let results = self.store.apply_changes(&changes).await?;
        let applied = &results.messages;
        metrics::counter!("herald_results_applied_total").increment(applied.len() as u64);
        self.replay_events(&changes, applied, now).await?;
        self.after_changes(applied, now).await?;
        // Contacts a carrier said opted out: already written with the results.
        let consent_events = consent::events(&results.opted_out, ConsentSource::Carrier, &results.cancelled, now);
        self.outbox.publish(consent_events).await;
        if !applied.is_empty() {
            // Receipts that came first wait for exactly these results.
            self.apply_early_receipts(now, false).await?;
        }
        Ok(())
    }

    /// Applies receipts that arrived before their send result and publishes
    /// what they changed.
    async fn apply_early_receipts(&self, now: DateTime<Utc>, purge: bool) -> Result<(), SchedulerError> {
        let forget_before = purge.then(|| now - chrono::Duration::from_std(EARLY_RECEIPT_TTL).unwrap_or_default());
        let applied = self.store.apply_early_receipts(forget_before).await?;
        if !applied.is_empty() {
            tracing::debug!(
                receipts = applied.len(),
                "applied receipts that came before their send result"
            );
        }
        let events: Vec<Event> = applied.iter().filter_map(|m| build::message(m, now)).collect();
        // The receipts are gone once applied: their events go through the outbox.
        self.outbox.publish(events).await;
        Ok(())
    }

    /// The periodic half of reconciliation: early receipts whose result landed
    /// (also after a crash between the two), and sends whose outcome stayed
    /// unknown past `dispatch.unknown_outcome_secs`, which fail.
    pub(super) async fn reconcile(&self) -> Result<(), SchedulerError> {
        let now = self.clock.now();
        self.apply_early_receipts(now, true).await?;
        let cutoff = now - chrono::Duration::seconds(self.config.unknown_outcome_secs.min(i64::MAX as u64) as i64);
        loop {
            let expired = self.store.expire_unknown_outcomes(cutoff, now, 1_000).await?;
            if expired.is_empty() {
                return Ok(());
            }
            tracing::warn!(
                messages = expired.len(),
                "sends whose outcome stayed unknown are failed"
            );
            self.after_changes(&expired, now).await?;
        }
    }

    /// Publishes again the events of results already applied by an earlier try
    /// (the process died, or the bus failed, between commit and publish). Their
    /// event ids are stable, so the bus and subscribers drop what they already have.
    async fn replay_events(
        &self,
        changes: &[MessageChange],
        applied: &[MessageRecord],
        now: DateTime<Utc>,
    ) -> Result<(), SchedulerError> {
        let applied: HashSet<MessageId> = applied.iter().map(|m| m.id).collect();
        let pending: HashMap<MessageId, &MessageChange> = changes
            .iter()
            .filter(|c| !applied.contains(&c.id))
            .map(|c| (c.id, c))
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        let ids: Vec<MessageId> = pending.keys().copied().collect();
        let events: Vec<Event> = self
            .store
            .messages(&ids)
            .await?
            .iter()
            .filter(|m| {
                pending
                    .get(&m.id)
                    .is_some_and(|c| c.hand_off == m.hand_off && c.status == m.status)
            })
            .filter_map(|m| build::message(m, now))
            .collect();
        if !events.is_empty() {
            tracing::debug!(events = events.len(), "replaying events of results applied before");
        }
        Ok(self.bus.publish_events(events).await?)
    }

    /// Events for changed messages, then campaign consequences.
    pub(crate) async fn after_changes(
        &self,
        changed: &[MessageRecord],
        now: DateTime<Utc>,
    ) -> Result<(), SchedulerError> {
        let events: Vec<Event> = changed.iter().filter_map(|m| build::message(m, now)).collect();
        self.bus.publish_events(events).await?;
        let mut campaigns = BTreeSet::new();
        for message in changed.iter().filter(|m| m.status.is_final()) {
            campaigns.insert(message.campaign_id);
            // Opt-outs are the contact's choice, not a sign of a failing carrier.
            if message.error.as_deref() != Some(OPTED_OUT) {
                self.outcomes
                    .record(message.campaign_id, message.status == MessageStatus::Failed);
            }
        }
        for campaign_id in campaigns {
            self.check_campaign(campaign_id, now).await?;
        }
        Ok(())
    }

    /// Completes a campaign whose `total_limit` is spent; pauses one failing too often.
    async fn check_campaign(&self, campaign_id: CampaignId, now: DateTime<Utc>) -> Result<(), SchedulerError> {
        let Some(campaign) = self.store.campaign_by_id(campaign_id).await? else {
            self.outcomes.forget(campaign_id);
            return Ok(());
        };
        if campaign.total_limit.is_some()
            && let Some(done) = self.store.complete_if_exhausted(&campaign, now).await?
        {
            self.outcomes.forget(campaign_id);
            let event = build::campaign("status_changed", &done, Some("total_limit reached"), now);
            self.outbox.publish(vec![event]).await;
            return Ok(());
        }
        let Some((failed, of)) = self.outcomes.failing(campaign_id, self.config.pause_error_rate) else {
            return Ok(());
        };
        let reason = format!(
            "auto-paused: {failed} of the last {of} sends failed (limit {:.0}%)",
            self.config.pause_error_rate * 100.0
        );
        if let Some(paused) = self.store.pause_campaign(&campaign, &reason, now).await? {
            tracing::warn!(campaign = %campaign_id, %reason, "campaign paused");
            let event = build::campaign("status_changed", &paused, Some(&reason), now);
            self.outbox.publish(vec![event]).await;
        }
        // Judge a resumed campaign on fresh outcomes only.
        self.outcomes.forget(campaign_id);
        Ok(())
    }
}
