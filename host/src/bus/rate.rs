//! A carrier's `max_per_second` shared by every dispatcher process (SPEC §8).
//!
//! The budget of a carrier is a sequence of send slots, one every
//! `1 / max_per_second`, common to all dispatchers: the generic cell rate
//! algorithm (GCRA) with no burst. The bus keeps, per carrier, the
//! *theoretical arrival time* (TAT): the instant after the last slot handed
//! out. A dispatcher claims a lease of `tokens` consecutive slots starting at
//! `max(TAT, now)` and moves the TAT past them, then spends the slots itself,
//! each no earlier than its time ([`crate::dispatch`]'s gate). Leases never
//! overlap, so calls of all dispatchers together are spaced as one dispatcher's
//! would be.
//!
//! On NATS the TAT lives in a stream of its own, `{P}_RATE` (memory storage,
//! one message per subject `{s}.rate.<carrier>`, its payload the TAT in
//! nanoseconds since the Unix epoch, as text). A claim reads the subject's last
//! message and publishes the next TAT with `Nats-Expected-Last-Subject-Sequence`
//! set to the sequence it read: a compare-and-swap, the primitive JetStream's
//! key-value buckets are made of. When another dispatcher moved the TAT in
//! between, the server refuses the publish and the claim reads again. (A plain
//! stream rather than the client's KV API: creating a bucket asks for the
//! account's info, which this client does not parse from a 2.9 server.)
//!
//! Times are every host's own wall clock: dispatcher hosts must agree on the
//! time (NTP). A host whose clock is ahead by `d` starts its leases up to `d`
//! early in the others' view, so a one-second window may see up to
//! `d × max_per_second` more calls; one that is behind waits up to `d` longer
//! for its slots. Losing the stream (memory storage: any NATS restart) loses
//! only TATs, which begin again at `now`: no burst; the next claim creates it
//! again.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::Client;
use async_nats::connection::State;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{self, LastRawMessageErrorKind, StorageType};
use async_nats::jetstream::{self, ErrorCode};
use async_trait::async_trait;
use tokio::time::Instant;

use crate::bus::BusError;
use crate::bus::nats::{ensure_stream, subject_token};

/// Compare-and-swap attempts of one claim before it reports contention as a
/// failure (the caller waits and claims again).
const MAX_CONFLICTS: usize = 32;
/// A lease starting further ahead than this is logged: dispatchers leasing a
/// twentieth of a second each do not queue that long unless clocks disagree.
const FAR_AHEAD: Duration = Duration::from_secs(5);

/// `tokens` consecutive slots of a carrier's budget, the first at `start`, one
/// every `interval` (as claimed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub start: Instant,
    pub tokens: u32,
}

/// A rate budget shared by every dispatcher process.
#[async_trait]
pub trait SharedRate: Send + Sync + 'static {
    /// Reserves `tokens` consecutive slots, one every `interval`, of `carrier`'s
    /// budget, the first no earlier than now. Fails (retry later) when the
    /// shared state cannot be reached: then nothing may be sent.
    async fn claim(&self, carrier: &str, tokens: u32, interval: Duration) -> Result<Lease, BusError>;
}

/// The stream holding every carrier's TAT.
pub(crate) fn stream_config(stream_prefix: &str, subject_prefix: &str) -> stream::Config {
    stream::Config {
        name: format!("{stream_prefix}_RATE"),
        description: Some("Herald carriers' shared rate budgets (next free send slot)".to_string()),
        subjects: vec![format!("{subject_prefix}.rate.>")],
        // Lost with any restart of the server: harmless, see above.
        storage: StorageType::Memory,
        max_messages_per_subject: 1,
        ..Default::default()
    }
}

/// [`SharedRate`] on NATS JetStream.
pub struct NatsRate {
    client: Client,
    js: jetstream::Context,
    stream: Arc<stream::Config>,
    subject_prefix: String,
}

fn unavailable(what: impl std::fmt::Display, err: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(format!("{what}: {err}"))
}

/// Nanoseconds since the Unix epoch.
fn unix_nanos(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

impl NatsRate {
    pub(crate) fn new(client: Client, js: jetstream::Context, stream: stream::Config, subject_prefix: &str) -> Self {
        Self {
            client,
            js,
            stream: Arc::new(stream),
            subject_prefix: subject_prefix.to_string(),
        }
    }

    fn subject(&self, carrier: &str) -> String {
        format!("{}.rate.{}", self.subject_prefix, subject_token(carrier))
    }

    /// The subject's last sequence and TAT; `(0, 0)` when it has none.
    async fn read(&self, subject: &str) -> Result<(u64, u64), BusError> {
        let stream = self
            .js
            .get_stream_no_info(&self.stream.name)
            .await
            .map_err(|err| unavailable("the rate stream", err))?;
        match stream.get_last_raw_message_by_subject(subject).await {
            // A payload that is no number (written by hand?) is replaced.
            Ok(message) => Ok((
                message.sequence,
                std::str::from_utf8(&message.payload)
                    .ok()
                    .and_then(|text| text.parse().ok())
                    .unwrap_or(0),
            )),
            Err(err) if err.kind() == LastRawMessageErrorKind::NoMessageFound => Ok((0, 0)),
            Err(err) if matches!(err.kind(), LastRawMessageErrorKind::JetStream(e) if e.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
            {
                self.restore().await?;
                Ok((0, 0))
            }
            Err(err) => Err(unavailable("reading a rate budget", err)),
        }
    }

    /// Creates the stream again (a server that lost its memory storage).
    async fn restore(&self) -> Result<(), BusError> {
        tracing::info!(stream = %self.stream.name, "creating the shared rate stream again");
        ensure_stream(&self.js, &self.stream)
            .await
            .map_err(|err| unavailable("restoring the rate stream", err))
    }
}

#[async_trait]
impl SharedRate for NatsRate {
    async fn claim(&self, carrier: &str, tokens: u32, interval: Duration) -> Result<Lease, BusError> {
        if self.client.connection_state() != State::Connected {
            return Err(BusError::Unavailable("not connected to NATS".to_string()));
        }
        let subject = self.subject(carrier);
        let span = (interval.as_nanos() as u64).saturating_mul(u64::from(tokens.max(1)));
        for _ in 0..MAX_CONFLICTS {
            let (sequence, tat) = self.read(&subject).await?;
            // Both clocks read at one moment: the wall clock to agree with other
            // hosts, the monotonic one to wait on.
            let (now, here) = (unix_nanos(SystemTime::now()), Instant::now());
            let start = tat.max(now);
            let next = start.saturating_add(span);
            let publish = PublishMessage::build()
                .payload(next.to_string().into())
                .expected_last_subject_sequence(sequence);
            let ack = self
                .js
                .send_publish(subject.clone(), publish)
                .await
                .map_err(|err| unavailable("claiming a rate lease", err))?;
            match ack.await {
                Ok(_) => {
                    metrics::counter!("herald_rate_leases_total", "carrier" => carrier.to_string()).increment(1);
                    let ahead = Duration::from_nanos(start - now);
                    if ahead > FAR_AHEAD {
                        tracing::warn!(
                            carrier,
                            "the shared rate budget is taken {ahead:.1?} ahead: do the dispatcher hosts' clocks agree?"
                        );
                    }
                    return Ok(Lease {
                        start: here + ahead,
                        tokens,
                    });
                }
                // Another dispatcher claimed in between: read again.
                Err(err) if err.kind() == PublishErrorKind::WrongLastSequence => {
                    metrics::counter!("herald_rate_lease_conflicts_total", "carrier" => carrier.to_string())
                        .increment(1);
                }
                Err(err) if err.kind() == PublishErrorKind::StreamNotFound => self.restore().await?,
                Err(err) => return Err(unavailable("claiming a rate lease", err)),
            }
        }
        Err(BusError::Unavailable(format!(
            "rate budget of {carrier}: {MAX_CONFLICTS} claims in a row lost to other dispatchers"
        )))
    }
}
