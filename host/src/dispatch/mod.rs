//! The dispatcher role (SPEC §1 step 3): consumes send jobs, checks the window
//! again, applies each carrier's rate and concurrency limits, renders through
//! the template plugin, sends through the carrier plugin and publishes the
//! result. It never opens the database: a job carries all it needs.

mod gate;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use crate::bus::{self, Backlog, Bus, Consumer, Delivery, SendJob, SendOutcome, SendResult, WindowSpec};
use crate::clock::Clock;
use crate::config::Config;
use crate::domain::campaign::{SendDays, parse_time_of_day};
use crate::domain::event::{Event, build};
use crate::domain::schedule::SendWindow;
use crate::plugin::carrier::{Message, SendError};
use crate::plugin::{PluginError, Plugins};
use gate::CarrierGate;

/// Jobs fetched from the bus per request.
const FETCH: usize = 256;
/// Results published per bus request.
const RESULT_BATCH: usize = 500;
/// How long a job may wait on a rate-limited carrier before it is handed back
/// to the scheduler (without spending an attempt).
const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);
const BACKOFF: Duration = Duration::from_secs(1);
/// How often the carrier-event relay looks at its backlog unprompted.
const EVENTS_IDLE: Duration = Duration::from_secs(5);

pub struct Dispatcher {
    bus: Bus,
    plugins: Plugins,
    clock: Arc<dyn Clock>,
    gates: HashMap<String, Arc<CarrierGate>>,
    workers: Arc<Semaphore>,
    /// Carrier events the bus has not taken yet (no database here: in memory).
    events: Backlog,
}

impl Dispatcher {
    pub fn new(config: &Config, bus: Bus, plugins: Plugins, clock: Arc<dyn Clock>) -> Arc<Self> {
        let gates = config
            .carriers
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    Arc::new(CarrierGate::new(c.max_per_second, c.max_concurrency)),
                )
            })
            .collect();
        Arc::new(Self {
            bus,
            plugins,
            clock,
            gates,
            workers: Arc::new(Semaphore::new(config.dispatch.workers as usize)),
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
        let outcome = self.deliver(job, &delivery, now).await;
        metrics::counter!("herald_dispatch_outcomes_total", "outcome" => outcome_label(&outcome)).increment(1);
        let result = SendResult {
            message_id: job.message_id,
            dispatch: job.dispatch,
            attempts: job.attempts,
            outcome,
            at: self.clock.now(),
        };
        Some(Finished { result, delivery })
    }

    async fn deliver(&self, job: &SendJob, delivery: &Delivery<SendJob>, now: DateTime<Utc>) -> SendOutcome {
        let window = match parse_window(&job.window) {
            Ok(window) => window,
            Err(reason) => return SendOutcome::Failed { reason },
        };
        if !window.is_open(now) {
            return SendOutcome::Postponed {
                until: window.next_open(now),
                reason: "outside the send window".into(),
            };
        }
        let (Some(carrier), Some(gate)) = (self.plugins.carrier(Some(&job.carrier)), self.gates.get(&job.carrier))
        else {
            return SendOutcome::Failed {
                reason: format!("carrier {:?} is not configured on this dispatcher", job.carrier),
            };
        };
        let rendered = match self.plugins.template.render(&job.template, &job.variables).await {
            Ok(Ok(rendered)) => rendered,
            Ok(Err(refused)) => {
                return SendOutcome::Failed {
                    reason: format!("template: {}", refused.message),
                };
            }
            Err(e) => {
                return SendOutcome::Retry {
                    reason: format!("template plugin: {e}"),
                    retry_after_ms: None,
                };
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
            match carrier.send(&message).await {
                Ok(Ok(accepted)) => {
                    self.carrier_healthy(&job.carrier, gate).await;
                    return SendOutcome::Sent {
                        carrier_message_id: accepted.carrier_message_id,
                        segments: rendered.segments,
                        delivered: matches!(accepted.status, Some(crate::plugin::carrier::DeliveryStatus::Delivered)),
                    };
                }
                Ok(Err(SendError::Permanent(reason))) => return SendOutcome::Failed { reason },
                Ok(Err(SendError::Retryable(reason))) => {
                    return SendOutcome::Retry {
                        reason,
                        retry_after_ms: None,
                    };
                }
                Ok(Err(SendError::RateLimited(retry_after_ms))) => {
                    let pause = Duration::from_millis(retry_after_ms.max(1));
                    gate.pause_for(pause);
                    metrics::counter!("herald_carrier_rate_limited_total", "carrier" => job.carrier.clone())
                        .increment(1);
                    if waiting_since.elapsed() + pause > MAX_RATE_LIMIT_WAIT {
                        return SendOutcome::Postponed {
                            until: self.clock.now() + chrono::Duration::from_std(pause).unwrap_or_default(),
                            reason: "carrier rate-limited".into(),
                        };
                    }
                    // Slow down instead of spending an attempt: wait, then try again.
                    delivery.working().await;
                }
                Err(PluginError::Tripped { retry_in, .. }) => {
                    self.carrier_tripped(&job.carrier, gate).await;
                    return SendOutcome::Postponed {
                        until: self.clock.now() + chrono::Duration::from_std(retry_in).unwrap_or_default(),
                        reason: "carrier plugin tripped".into(),
                    };
                }
                Err(e) => {
                    return SendOutcome::Retry {
                        reason: e.to_string(),
                        retry_after_ms: None,
                    };
                }
            }
        }
    }

    /// Shows a carrier event to local listeners now; the relay retries it on
    /// the bus until taken (bounded, in memory).
    fn publish(&self, event: Event) {
        self.events.push(std::slice::from_ref(&event));
        self.bus.announce(vec![event]);
    }

    async fn carrier_tripped(&self, carrier: &str, gate: &CarrierGate) {
        if gate.mark_tripped(true) {
            self.publish(build::carrier(
                "tripped",
                carrier,
                "repeated plugin traps",
                self.clock.now(),
            ));
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
            let mut tries = 0u32;
            while let Err(e) = self.bus.transport.publish_results(&results).await {
                tries += 1;
                tracing::warn!(error = %e, results = results.len(), "publishing results failed; retrying");
                if tries.is_multiple_of(10) {
                    for f in &batch {
                        f.delivery.working().await;
                    }
                }
                tokio::time::sleep(BACKOFF).await;
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

fn outcome_label(outcome: &SendOutcome) -> &'static str {
    match outcome {
        SendOutcome::Sent { .. } => "sent",
        SendOutcome::Failed { .. } => "failed",
        SendOutcome::Retry { .. } => "retry",
        SendOutcome::Postponed { .. } => "postponed",
    }
}

/// The window a job carries, back in domain form.
pub fn parse_window(spec: &WindowSpec) -> Result<SendWindow, String> {
    let bad = |what: &str| format!("job has a bad send window ({what})");
    Ok(SendWindow {
        timezone: spec.timezone.parse().map_err(|_| bad("timezone"))?,
        start: parse_time_of_day(&spec.start).map_err(|_| bad("start"))?,
        end: parse_time_of_day(&spec.end).map_err(|_| bad("end"))?,
        days: SendDays::parse(&spec.days).map_err(|_| bad("days"))?,
    })
}
