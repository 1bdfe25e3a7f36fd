//! The dispatcher role (SPEC §1 step 3): consumes send jobs, checks the window
//! again, applies each carrier's rate and concurrency limits, renders through
//! the template plugin, sends through the carrier plugin and publishes the
//! result. It never opens the database: a job carries all it needs.

mod gate;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use crate::backoff;
use crate::bus::event::{Event, build};
use crate::bus::{self, Backlog, Bus, Consumer, Delivery, SendJob, SendOutcome, SendResult};
use crate::clock::Clock;
use crate::config::Config;
use crate::domain::ids::MessageId;
use crate::domain::refusal::{Refusal, classify, outcome_unknown};
use crate::plugin::carrier::{Message, Reach, SendError};
use crate::plugin::{PluginError, Plugins};
use gate::CarrierGate;

/// Jobs fetched from the bus per request.
const FETCH: usize = 256;
/// Results published per bus request.
const RESULT_BATCH: usize = 500;
/// How long a job may wait on a rate-limited carrier before it is handed back
/// to the scheduler (without spending an attempt).
const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);
/// How often a job waiting for its carrier tells the bus it is still being
/// worked on (well within JetStream's ack wait), so it is not delivered twice.
const HEARTBEAT: Duration = Duration::from_secs(10);
/// Slack between the last instant a carrier call may start and the job's
/// deadline, on top of the call's own bounds (CPU deadline and HTTP timeout).
const START_MARGIN: Duration = Duration::from_secs(5);
/// How often the carrier-event relay looks at its backlog unprompted.
const EVENTS_IDLE: Duration = Duration::from_secs(5);

pub struct Dispatcher {
    bus: Bus,
    plugins: Plugins,
    clock: Arc<dyn Clock>,
    gates: HashMap<String, Arc<CarrierGate>>,
    /// Carriers that deduplicate on the message id: an unknown outcome is retried.
    idempotent: HashSet<String>,
    workers: Arc<Semaphore>,
    /// Jobs being worked on here, by message and hand-off: a redelivery of one
    /// of them (the bus's ack wait passed) is not sent a second time.
    working: Mutex<HashSet<(MessageId, i32)>>,
    /// The latest a carrier call may start before a job's deadline.
    start_by: chrono::Duration,
    /// How long a carrier reporting itself misconfigured is paused.
    misconfigured_pause: Duration,
    /// Carrier events the bus has not taken yet (no database here: in memory).
    events: Backlog,
}

impl Dispatcher {
    pub fn new(config: &Config, bus: Bus, plugins: Plugins, clock: Arc<dyn Clock>) -> Arc<Self> {
        // On a shared bus other dispatchers send to the same carriers: their
        // max_per_second is spent from a budget on the bus.
        let shared = bus.transport.shared_rate();
        if shared.is_some() {
            tracing::info!("carriers' max_per_second is shared with every dispatcher on the bus");
        }
        let gates = config
            .carriers
            .iter()
            .map(|c| {
                let gate = match &shared {
                    Some(budget) => CarrierGate::shared(&c.name, c.max_per_second, c.max_concurrency, budget.clone()),
                    None => CarrierGate::new(c.max_per_second, c.max_concurrency),
                };
                (c.name.clone(), Arc::new(gate))
            })
            .collect();
        let call_bound = Duration::from_millis(config.plugins.call_timeout_ms + config.plugins.http_timeout_ms);
        let lease = Duration::from_secs(config.dispatch.lease_secs);
        Arc::new(Self {
            bus,
            plugins,
            clock,
            gates,
            idempotent: config
                .carriers
                .iter()
                .filter(|c| c.idempotent)
                .map(|c| c.name.clone())
                .collect(),
            workers: Arc::new(Semaphore::new(config.dispatch.workers as usize)),
            working: Mutex::new(HashSet::new()),
            // A lease shorter than a call's bounds already trades duplicates for
            // speed (docs/delivery.md); then keep at least half of it for waiting.
            start_by: chrono::Duration::from_std((call_bound + START_MARGIN).min(lease / 2)).unwrap_or_default(),
            misconfigured_pause: Duration::from_millis(config.plugins.trip_cooldown_ms.max(1)),
            events: Backlog::default(),
        })
    }

    /// Consumes jobs until `stop` turns true; results are published by a
    /// second task in batches.
    pub fn spawn(self: &Arc<Self>, tasks: &mut JoinSet<()>, stop: watch::Receiver<bool>) {
        let (done, finished) = mpsc::channel(RESULT_BATCH * 4);
        let this = self.clone();
        let until = stop.clone();
        tasks.spawn(async move {
            let events = &this.events;
            bus::relay(&*this.bus.transport, events, &events.wake, EVENTS_IDLE, until).await;
        });
        let this = self.clone();
        tasks.spawn(async move { this.consume(done, stop).await });
        let this = self.clone();
        tasks.spawn(async move { this.publish_results(finished).await });
    }

    async fn consume(self: Arc<Self>, done: mpsc::Sender<Finished>, mut stop: watch::Receiver<bool>) {
        let mut jobs = Consumer::<SendJob>::new(self.bus.transport.clone());
        while !*stop.borrow() {
            let room = self.workers.available_permits().clamp(1, FETCH);
            let batch = tokio::select! {
                batch = jobs.next(room, Duration::from_secs(1)) => batch,
                _ = stop.changed() => break,
            };
            for delivery in batch {
                let Ok(permit) = self.workers.clone().acquire_owned().await else {
                    return;
                };
                let this = self.clone();
                let done = done.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    if let Some(finished) = this.handle(delivery).await {
                        let _ = done.send(finished).await;
                    }
                });
            }
        }
    }

    /// Works one job to its result; `None` when the job is stale and dropped.
    async fn handle(&self, delivery: Delivery<SendJob>) -> Option<Finished> {
        let job = &delivery.payload;
        let now = self.clock.now();
        if now > job.deadline {
            tracing::debug!(message = %job.message_id, "dropping a stale job: it has been handed out again");
            delivery.ack().await;
            return None;
        }
        let key = (job.message_id, job.hand_off);
        if !self.working.lock().expect("working lock").insert(key) {
            // The bus redelivered a job this dispatcher is still on; the first
            // copy answers and acknowledges it.
            tracing::debug!(message = %job.message_id, "ignoring a redelivery of a job in progress");
            return None;
        }
        let outcome = {
            let heartbeat = async {
                loop {
                    tokio::time::sleep(HEARTBEAT).await;
                    delivery.working().await;
                }
            };
            tokio::select! {
                outcome = self.deliver(job, now) => outcome,
                () = heartbeat => unreachable!("the heartbeat never ends"),
            }
        };
        self.working.lock().expect("working lock").remove(&key);
        let Some(outcome) = outcome else {
            tracing::debug!(message = %job.message_id, "dropping a job that waited past its deadline");
            delivery.ack().await;
            return None;
        };
        metrics::counter!("herald_dispatch_outcomes_total", "outcome" => outcome_label(&outcome)).increment(1);
        let result = SendResult {
            message_id: job.message_id,
            hand_off: job.hand_off,
            attempts: job.attempts,
            outcome,
            at: self.clock.now(),
        };
        Some(Finished { result, delivery })
    }

    /// The job's outcome; `None` when it waited so long that it may already be
    /// handed out again (the job is dropped unsent).
    async fn deliver(&self, job: &SendJob, now: DateTime<Utc>) -> Option<SendOutcome> {
        let window = job.window;
        if !window.is_open(now) {
            return Some(SendOutcome::Postponed {
                until: window.next_open(now),
                reason: "outside the send window".into(),
            });
        }
        if let Some(late) = past_recipient_hours(job, now) {
            return Some(late);
        }
        let (Some(carrier), Some(gate)) = (self.plugins.carrier(Some(&job.carrier)), self.gates.get(&job.carrier))
        else {
            return Some(SendOutcome::Failed {
                reason: format!("carrier {:?} is not configured on this dispatcher", job.carrier),
            });
        };
        let rendered = match self.plugins.template.render(&job.template, &job.variables).await {
            Ok(Ok(rendered)) => rendered,
            Ok(Err(refused)) => {
                return Some(SendOutcome::Failed {
                    reason: format!("template: {}", refused.message),
                });
            }
            Err(e) => {
                return Some(SendOutcome::Retry {
                    reason: format!("template plugin: {e}"),
                    retry_after_ms: None,
                });
            }
        };
        let message = Message {
            id: job.message_id.to_string(),
            to: job.to.clone(),
            from: job.from.clone(),
            body: rendered.body,
            segments: rendered.segments,
            encoding: rendered.encoding,
            metadata: vec![
                ("campaign_id".into(), job.campaign_id.to_string()),
                ("attempt".into(), (job.attempts + 1).to_string()),
            ],
        };
        let waiting_since = tokio::time::Instant::now();
        loop {
            let _slot = gate.acquire(rendered.segments).await;
            // Checked once a call slot is ours: calls queued behind the one that
            // found the carrier misconfigured must not each try again.
            if let Some(left) = gate.suspended() {
                return Some(self.postpone(left, "carrier paused: it reported itself misconfigured"));
            }
            // A call started later could still be running when the api role
            // hands the message out again.
            if self.clock.now() > job.deadline - self.start_by {
                return None;
            }
            // However long it waited at the gate, not after the recipient's hours.
            if let Some(late) = past_recipient_hours(job, self.clock.now()) {
                return Some(late);
            }
            let (result, reach) = carrier.send(&message).await;
            // Whether the carrier may hold the message though the call did not
            // say it accepted it: then a second call could be a second SMS.
            let unknown = |reason: String| {
                if self.idempotent.contains(&job.carrier) {
                    SendOutcome::Retry {
                        reason,
                        retry_after_ms: None,
                    }
                } else {
                    SendOutcome::Unknown { reason }
                }
            };
            return Some(match result {
                Ok(Ok(accepted)) => {
                    self.carrier_healthy(&job.carrier, gate).await;
                    SendOutcome::Sent {
                        carrier_message_id: accepted.carrier_message_id,
                        segments: rendered.segments,
                        delivered: matches!(accepted.status, Some(crate::plugin::carrier::DeliveryStatus::Delivered)),
                    }
                }
                Ok(Err(SendError::Permanent(reason))) => match classify(&reason) {
                    Refusal::Message => SendOutcome::Failed { reason },
                    Refusal::RecipientOptedOut => SendOutcome::OptedOut { reason },
                    Refusal::CarrierMisconfigured => {
                        gate.suspend_for(self.misconfigured_pause);
                        self.carrier_tripped(&job.carrier, gate, &reason).await;
                        self.postpone(self.misconfigured_pause, &reason)
                    }
                },
                Ok(Err(SendError::Retryable(reason))) if reach == Reach::Unanswered || outcome_unknown(&reason) => {
                    unknown(reason)
                }
                Ok(Err(SendError::Retryable(reason))) => SendOutcome::Retry {
                    reason,
                    retry_after_ms: None,
                },
                Ok(Err(SendError::RateLimited(retry_after_ms))) => {
                    let pause = Duration::from_millis(retry_after_ms.max(1));
                    gate.pause_for(pause);
                    metrics::counter!("herald_carrier_rate_limited_total", "carrier" => job.carrier.clone())
                        .increment(1);
                    if waiting_since.elapsed() + pause > MAX_RATE_LIMIT_WAIT {
                        return Some(self.postpone(pause, "carrier rate-limited"));
                    }
                    // Slow down instead of spending an attempt: wait (the heartbeat
                    // keeps the job ours), then try again.
                    continue;
                }
                Err(PluginError::Tripped { retry_in, .. }) => {
                    self.carrier_tripped(&job.carrier, gate, "repeated plugin traps").await;
                    self.postpone(retry_in, "carrier plugin tripped")
                }
                // A trap after a request went out: the carrier may have taken it.
                Err(e) if reach != Reach::NotSent => unknown(e.to_string()),
                Err(e) => SendOutcome::Retry {
                    reason: e.to_string(),
                    retry_after_ms: None,
                },
            });
        }
    }

    fn postpone(&self, wait: Duration, reason: &str) -> SendOutcome {
        SendOutcome::Postponed {
            until: self.clock.now() + chrono::Duration::from_std(wait).unwrap_or_default(),
            reason: reason.into(),
        }
    }

    /// Shows a carrier event to local listeners now; the relay retries it on
    /// the bus until taken (bounded, in memory).
    fn publish(&self, event: Event) {
        self.events.push(std::slice::from_ref(&event));
        self.bus.announce(vec![event]);
    }

    async fn carrier_tripped(&self, carrier: &str, gate: &CarrierGate, reason: &str) {
        if gate.mark_tripped(true) {
            self.publish(build::carrier("tripped", carrier, reason, self.clock.now()));
        }
    }

    async fn carrier_healthy(&self, carrier: &str, gate: &CarrierGate) {
        if gate.mark_tripped(false) {
            self.publish(build::carrier(
                "recovered",
                carrier,
                "calls succeed again",
                self.clock.now(),
            ));
        }
    }

    /// Publishes results in batches, then acknowledges their jobs: a job is
    /// only forgotten once its result is on the bus.
    async fn publish_results(self: Arc<Self>, mut finished: mpsc::Receiver<Finished>) {
        let mut batch = Vec::with_capacity(RESULT_BATCH);
        while finished.recv_many(&mut batch, RESULT_BATCH).await > 0 {
            let results: Vec<SendResult> = batch.iter().map(|f| f.result.clone()).collect();
            let mut delays = backoff::delays();
            let mut told = tokio::time::Instant::now();
            while let Err(e) = self.bus.transport.publish_results(&results).await {
                tracing::warn!(error = %e, results = results.len(), "publishing results failed; retrying");
                // Keep the jobs ours while their results wait for the bus.
                if told.elapsed() >= HEARTBEAT {
                    for f in &batch {
                        f.delivery.working().await;
                    }
                    told = tokio::time::Instant::now();
                }
                tokio::time::sleep(delays.next().unwrap_or_default()).await;
            }
            for f in batch.drain(..) {
                f.delivery.ack().await;
            }
        }
    }
}

struct Finished {
    result: SendResult,
    delivery: Delivery<SendJob>,
}

/// A job whose recipient's allowed hours (SPEC §4.1) ended goes back to the
/// scheduler, which holds it until the recipient's next allowed instant.
fn past_recipient_hours(job: &SendJob, now: DateTime<Utc>) -> Option<SendOutcome> {
    job.recipient_until
        .is_some_and(|end| now >= end)
        .then(|| SendOutcome::Postponed {
            until: now,
            reason: "outside the recipient's allowed hours".into(),
        })
}

fn outcome_label(outcome: &SendOutcome) -> &'static str {
    match outcome {
        SendOutcome::Sent { .. } => "sent",
        SendOutcome::Failed { .. } => "failed",
        SendOutcome::Retry { .. } => "retry",
        SendOutcome::Postponed { .. } => "postponed",
        SendOutcome::Unknown { .. } => "unknown",
        SendOutcome::OptedOut { .. } => "opted_out",
    }
}
