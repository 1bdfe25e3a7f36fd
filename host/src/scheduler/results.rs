//! Applying dispatcher results (SPEC §1 step 4): idempotently, in batches,
//! then publishing what changed and the campaign-level consequences (total
//! limit reached → completed; too many failures → paused).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use uuid::Uuid;

use super::{BACKOFF, RESULT_BATCH, Scheduler, SchedulerError};
use crate::bus::{Consumer, Delivery, SendOutcome, SendResult};
use crate::domain::contact::ConsentSource;
use crate::domain::event::{Event, build};
use crate::domain::message::{MessageChange, MessageRecord, MessageStatus, OPTED_OUT};
use crate::domain::schedule::RetryPolicy;
use crate::store::ConsentTarget;

/// How long a receipt whose send result never lands is kept.
const EARLY_RECEIPT_TTL: Duration = Duration::from_secs(24 * 3600);

/// The write a dispatcher's result asks for. Pure: `jitter` in `[0, 1)` comes from the caller.
pub fn plan_change(result: &SendResult, policy: &RetryPolicy, now: DateTime<Utc>, jitter: f64) -> MessageChange {
    let mut change = MessageChange {
        id: result.message_id,
        dispatch: result.dispatch,
        status: MessageStatus::Failed,
        attempts: result.attempts + 1,
        carrier_message_id: None,
        segments: None,
        not_before: None,
        error: None,
        at: now,
        release_slot: false,
        outcome_unknown: false,
        carrier_opt_out: None,
    };
    match &result.outcome {
        SendOutcome::Sent {
            carrier_message_id,
            segments,
            delivered,
        } => {
            change.status = if *delivered {
                MessageStatus::Delivered
            } else {
                MessageStatus::Sent
            };
            change.carrier_message_id = Some(carrier_message_id.clone());
            change.segments = Some(*segments as i32);
        }
        SendOutcome::Failed { reason } => change.error = Some(reason.clone()),
        SendOutcome::Retry { reason, retry_after_ms } => {
            if change.attempts as u32 >= policy.max_attempts {
                change.error = Some(format!("{reason} (gave up after {} attempts)", change.attempts));
            } else {
                let retry_after = retry_after_ms.map(Duration::from_millis);
                let delay = policy.delay(change.attempts as u32, retry_after, jitter);
                change.status = MessageStatus::Queued;
                change.release_slot = true;
                change.not_before = Some(now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX));
                change.error = Some(reason.clone());
            }
        }
        SendOutcome::Postponed { until, reason } => {
            change.status = MessageStatus::Queued;
            change.attempts = result.attempts;
            change.not_before = Some((*until).max(now));
            change.error = Some(reason.clone());
            change.release_slot = true;
        }
        SendOutcome::Unknown { reason } => {
            change.status = MessageStatus::Sending;
            change.outcome_unknown = true;
            change.error = Some(format!("outcome unknown, held for reconciliation: {reason}"));
        }
        SendOutcome::OptedOut { reason } => {
            change.error = Some(OPTED_OUT.into());
            change.carrier_opt_out = Some(reason.clone());
        }
    }
    change
}

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
            while let Err(e) = self.apply(&batch).await {
                tracing::warn!(error = %e, "applying results failed; retrying");
                tokio::time::sleep(BACKOFF).await;
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
        let applied = self.store.apply_changes(&changes).await?;
        metrics::counter!("herald_results_applied_total").increment(applied.len() as u64);
        self.replay_events(&changes, &applied, now).await?;
        self.after_changes(&applied, now).await?;
        self.opt_out_refused(&changes, &applied, now).await?;
        if !applied.is_empty() {
            // Receipts that came first wait for exactly these results.
            self.apply_early_receipts(now, false).await?;
        }
        Ok(())
    }

    /// Opts out the contacts whose carrier refused a message because they
    /// opted out with it (consent source `carrier`).
    async fn opt_out_refused(
        &self,
        changes: &[MessageChange],
        applied: &[MessageRecord],
        now: DateTime<Utc>,
    ) -> Result<(), SchedulerError> {
        let refused: HashMap<Uuid, &str> = changes
            .iter()
            .filter_map(|c| Some((c.id, c.carrier_opt_out.as_deref()?)))
            .collect();
        for message in applied {
            let Some(detail) = refused.get(&message.id) else {
                continue;
            };
            let detail = format!("{detail} (via {})", message.carrier);
            let (contacts, cancelled) = self
                .store
                .set_consent(
                    ConsentTarget::Contact(message.contact_id),
                    true,
                    ConsentSource::Carrier,
                    &detail,
                    now,
                )
                .await?;
            let mut events: Vec<Event> = contacts
                .iter()
                .map(|c| build::consent(c, ConsentSource::Carrier.as_str(), now))
                .collect();
            events.extend(cancelled.iter().filter_map(|m| build::message(m, now)));
            // Not replayed with the result if this batch is retried: keep them.
            self.outbox.publish(events).await;
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
        let applied: HashSet<Uuid> = applied.iter().map(|m| m.id).collect();
        let pending: HashMap<Uuid, &MessageChange> = changes
            .iter()
            .filter(|c| !applied.contains(&c.id))
            .map(|c| (c.id, c))
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = pending.keys().copied().collect();
        let events: Vec<Event> = self
            .store
            .messages(&ids)
            .await?
            .iter()
            .filter(|m| {
                pending
                    .get(&m.id)
                    .is_some_and(|c| c.dispatch == m.dispatch && c.status == m.status)
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
    async fn check_campaign(&self, campaign_id: Uuid, now: DateTime<Utc>) -> Result<(), SchedulerError> {
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

/// The last outcomes of each campaign's sends (failed or not), for auto-pause.
/// Kept in memory: each api host judges the results it applies.
pub(crate) struct RecentOutcomes {
    window: usize,
    by_campaign: Mutex<HashMap<Uuid, VecDeque<bool>>>,
}

impl RecentOutcomes {
    pub(crate) fn new(window: u32) -> Self {
        Self {
            window: window.max(1) as usize,
            by_campaign: Mutex::new(HashMap::new()),
        }
    }

    fn record(&self, campaign: Uuid, failed: bool) {
        let mut all = self.by_campaign.lock().expect("outcomes lock");
        let outcomes = all.entry(campaign).or_default();
        if outcomes.len() == self.window {
            outcomes.pop_front();
        }
        outcomes.push_back(failed);
    }

    /// `(failed, window)` when a full window's failed share is over `limit`.
    fn failing(&self, campaign: Uuid, limit: f64) -> Option<(usize, usize)> {
        let all = self.by_campaign.lock().expect("outcomes lock");
        let outcomes = all.get(&campaign).filter(|o| o.len() == self.window)?;
        let failed = outcomes.iter().filter(|&&f| f).count();
        (failed as f64 / self.window as f64 > limit).then_some((failed, self.window))
    }

    fn forget(&self, campaign: Uuid) {
        self.by_campaign.lock().expect("outcomes lock").remove(&campaign);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(outcome: SendOutcome, attempts: i32) -> SendResult {
        SendResult {
            message_id: Uuid::now_v7(),
            dispatch: 3,
            attempts,
            outcome,
            at: Utc::now(),
        }
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_secs(10),
            max_delay: Duration::from_secs(600),
        }
    }

    #[test]
    fn sent_counts_an_attempt_and_keeps_the_carrier_id() {
        let now = Utc::now();
        let sent = SendOutcome::Sent {
            carrier_message_id: "SM1".into(),
            segments: 2,
            delivered: false,
        };
        let change = plan_change(&result(sent, 0), &policy(), now, 0.5);
        assert_eq!(change.status, MessageStatus::Sent);
        assert_eq!((change.attempts, change.dispatch), (1, 3));
        assert_eq!(change.carrier_message_id.as_deref(), Some("SM1"));
        assert_eq!(change.segments, Some(2));
    }

    #[test]
    fn retries_back_off_until_attempts_run_out() {
        let now = Utc::now();
        let retry = || SendOutcome::Retry {
            reason: "503".into(),
            retry_after_ms: Some(60_000),
        };
        let first = plan_change(&result(retry(), 0), &policy(), now, 0.0);
        assert_eq!(first.status, MessageStatus::Queued);
        // The carrier's retry-after (60 s) beats the first backoff (10 s).
        assert!(first.not_before.unwrap() >= now + chrono::Duration::seconds(60));
        let last = plan_change(&result(retry(), 2), &policy(), now, 0.0);
        assert_eq!(last.status, MessageStatus::Failed);
        assert_eq!(last.attempts, 3);
        assert!(last.error.unwrap().contains("after 3 attempts"));
    }

    #[test]
    fn a_full_window_over_the_limit_is_failing() {
        let outcomes = RecentOutcomes::new(4);
        let campaign = Uuid::now_v7();
        for failed in [true, true, true] {
            outcomes.record(campaign, failed);
        }
        assert_eq!(
            outcomes.failing(campaign, 0.5),
            None,
            "not judged before the window is full"
        );
        outcomes.record(campaign, false);
        assert_eq!(outcomes.failing(campaign, 0.5), Some((3, 4)));
        outcomes.record(campaign, false);
        assert_eq!(outcomes.failing(campaign, 0.5), None, "2 of the last 4 is not over 50%");
        outcomes.forget(campaign);
        assert_eq!(outcomes.failing(campaign, 0.0), None);
    }

    #[test]
    fn an_unknown_outcome_is_held_not_retried() {
        let now = Utc::now();
        let unknown = SendOutcome::Unknown {
            reason: "timeout".into(),
        };
        let change = plan_change(&result(unknown, 0), &policy(), now, 0.0);
        assert_eq!(change.status, MessageStatus::Sending);
        assert!(change.outcome_unknown && !change.release_slot);
        assert_eq!(change.not_before, None, "never queued again");
    }

    #[test]
    fn a_carrier_opt_out_fails_the_message_and_names_the_reason() {
        let refused = SendOutcome::OptedOut {
            reason: "opted-out: Twilio error 21610".into(),
        };
        let change = plan_change(&result(refused, 0), &policy(), Utc::now(), 0.0);
        assert_eq!(change.status, MessageStatus::Failed);
        assert_eq!(change.error.as_deref(), Some(OPTED_OUT));
        assert_eq!(change.carrier_opt_out.as_deref(), Some("opted-out: Twilio error 21610"));
    }

    #[test]
    fn hand_offs_that_go_again_give_their_daily_slot_back() {
        let now = Utc::now();
        let retry = SendOutcome::Retry {
            reason: "503".into(),
            retry_after_ms: None,
        };
        assert!(plan_change(&result(retry.clone(), 0), &policy(), now, 0.0).release_slot);
        assert!(
            !plan_change(&result(retry, 2), &policy(), now, 0.0).release_slot,
            "the last attempt was handed to the carrier and stays counted"
        );
        let sent = SendOutcome::Sent {
            carrier_message_id: "SM1".into(),
            segments: 1,
            delivered: false,
        };
        assert!(!plan_change(&result(sent, 0), &policy(), now, 0.0).release_slot);
    }

    #[test]
    fn postponed_does_not_spend_an_attempt() {
        let now = Utc::now();
        let until = now + chrono::Duration::hours(3);
        let postponed = SendOutcome::Postponed {
            until,
            reason: "window closed".into(),
        };
        let change = plan_change(&result(postponed, 2), &policy(), now, 0.0);
        assert_eq!((change.status, change.attempts), (MessageStatus::Queued, 2));
        assert_eq!(change.not_before, Some(until));
        assert!(change.release_slot, "a postponed hand-off gives its daily slot back");
    }
}
