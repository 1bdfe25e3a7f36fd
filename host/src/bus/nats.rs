//! NATS JetStream transport (SPEC §1, §6).
//!
//! Four streams, all created or updated at start so a deployment that an
//! older version set up is brought to the current configuration:
//! `{P}_JOBS` and `{P}_RESULTS` are work queues (a message is gone once one
//! consumer acknowledges it), `{P}_EVENTS` keeps every event for a week for
//! outside subscribers, and `{P}_RATE` holds the carriers' shared rate
//! budgets ([`super::rate`]). Every publish carries `Nats-Msg-Id`, so a publisher
//! that repeats itself after a crash or a timeout is deduplicated by the
//! server within the two-minute window.
//!
//! Jobs and results are consumed through durable pull consumers shared by
//! every process of a role: that is how dispatchers scale out. Each [`Inbox`]
//! has a keeper task that makes its pull requests and reads every reply as it
//! arrives. Two rules keep a message from being sent twice because of the
//! transport, and keep one dispatcher from hoarding work others could take:
//!
//! - **Never ask for more than the caller can take.** A call's `max` is the
//!   inbox's credit (a dispatcher passes its free workers); each message
//!   handed out uses one. The keeper has one pull request open at a time, for
//!   the credit less what it already holds: what it holds and has asked for
//!   never exceeds the credit it had when it asked. (Not the client's pull
//!   stream: it renews its request whenever half has arrived, read or not.)
//! - **Keep what is held in progress.** A message that arrived after a call
//!   returned, or beyond what a call took, waits in the inbox for the next call;
//!   the keeper marks it in progress (`+WPI`) every third of the ack wait, so
//!   the server gives it to no other consumer while it waits. Once handed out
//!   it is the handler's to keep in progress ([`Delivery::working`]). An inbox
//!   that is dropped stops doing so: what it held goes to another consumer
//!   after the ack wait, and is never handed out here.
//!
//! A call returns at most `max`, as soon as a burst has arrived. Pull requests
//! expire after a few seconds and are renewed, so one the server lost in a
//! restart is soon replaced.
//!
//! The connection reconnects forever: a NATS restart mid-campaign makes calls
//! fail with [`BusError::Unavailable`] until it is back, then they resume (an
//! inbox is opened again, which restores its consumer, and its stream, should
//! the server have come back without its storage).

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_nats::connection::State;
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::consumer::pull;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::message::{Acker, PublishMessage};
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use async_nats::jetstream::stream::{ConsumerError, ConsumerErrorKind};
use async_nats::jetstream::{self, AckKind};
use async_nats::{Client, ConnectOptions, StatusCode};
use async_trait::async_trait;
use futures::StreamExt;
use futures::future::join_all;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use crate::bus::event::Event;
use crate::bus::rate::{self, NatsRate, SharedRate};
use crate::bus::{BusError, Delivery, DeliveryHandle, Inbox, SendJob, SendResult, Transport, hand_off_key};

/// How long `connect` keeps trying before it reports the server unreachable,
/// so a misconfigured process fails at start instead of hanging.
const INITIAL_CONNECT: Duration = Duration::from_secs(5);
/// Timeout of JetStream API calls and of each publish acknowledgement.
const API_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on setting up a pull (checking, or restoring, the consumer).
const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(12);
/// Bound on handing an acknowledgement to the connection: while NATS is down
/// the client's command queue fills up and would block the caller until it is
/// back. An ack given up on only means a redelivery after the ack wait.
const ACK_SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Timeout of [`Transport::ping`], short enough for a readiness probe.
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// Deduplication window of every stream: longer than any publisher's retry loop.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// How long outside subscribers can replay events.
const EVENTS_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// A delivery not acknowledged (nor marked in progress) within this is given to
/// another consumer.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// Bounded redelivery of jobs: a job that keeps failing is dropped by the bus,
/// and the api role publishes it again from its database.
const JOBS_MAX_DELIVER: i64 = 20;
/// Unacknowledged deliveries allowed per consumer (all processes together): the
/// server's default of 1,000 would cap throughput below the 5,000 messages/s
/// target once a few dispatchers each hold a batch.
const MAX_ACK_PENDING: i64 = 20_000;
/// Publishes awaiting an acknowledgement at once, per publish call. Keeps one
/// call from holding all of the context's in-flight permits.
const PUBLISH_WINDOW: usize = 1024;
/// In-flight publish permits of the whole context; many windows fit, so
/// concurrent publishers never wait on each other for permits.
const MAX_ACK_INFLIGHT: usize = 64 * PUBLISH_WINDOW;
/// After the first delivery of a call, how long to wait for the rest of the
/// burst: the server sends a batch back to back, far faster than this.
const LINGER: Duration = Duration::from_millis(5);
/// Lifetime of one pull request on the server; the keeper then asks again.
/// Short, so a request the server lost in a restart is replaced soon.
const PULL_EXPIRES: Duration = Duration::from_secs(5);

/// JetStream transport: publishes jobs, results and events, and hands out
/// shares of the job and result queues.
pub struct NatsTransport {
    client: Client,
    js: jetstream::Context,
    layout: Arc<Layout>,
    /// The carriers' rate budgets shared by every dispatcher.
    rate: Arc<NatsRate>,
    /// Set when a publish found no stream: the next publish provisions the
    /// streams again first (a NATS server that lost its storage).
    reprovision: AtomicBool,
}

/// Names and configuration of the streams and consumers, derived from the
/// prefixes so several deployments or test runs can share one server.
struct Layout {
    subject_prefix: String,
    jobs: stream::Config,
    results: stream::Config,
    events: stream::Config,
    rate: stream::Config,
    dispatchers: pull::Config,
    api: pull::Config,
}

impl Layout {
    fn new(stream_prefix: &str, subject_prefix: &str) -> Self {
        let s = subject_prefix;
        let work_queue = |name: String, subjects: String, description: &str| stream::Config {
            name,
            description: Some(description.to_string()),
            subjects: vec![subjects],
            retention: RetentionPolicy::WorkQueue,
            storage: StorageType::File,
            duplicate_window: DUPLICATE_WINDOW,
            ..Default::default()
        };
        Self {
            subject_prefix: s.to_string(),
            jobs: work_queue(
                format!("{stream_prefix}_JOBS"),
                format!("{s}.jobs.>"),
                "Herald send jobs",
            ),
            results: work_queue(
                format!("{stream_prefix}_RESULTS"),
                format!("{s}.results.>"),
                "Herald send results",
            ),
            events: stream::Config {
                name: format!("{stream_prefix}_EVENTS"),
                description: Some("Herald events (CloudEvents JSON)".to_string()),
                subjects: vec![format!("{s}.events.>")],
                retention: RetentionPolicy::Limits,
                storage: StorageType::File,
                max_age: EVENTS_MAX_AGE,
                duplicate_window: DUPLICATE_WINDOW,
                ..Default::default()
            },
            rate: rate::stream_config(stream_prefix, s),
            dispatchers: pull::Config {
                durable_name: Some("dispatchers".to_string()),
                description: Some("Herald dispatchers: send jobs".to_string()),
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::Explicit,
                ack_wait: ACK_WAIT,
                max_deliver: JOBS_MAX_DELIVER,
                filter_subject: format!("{s}.jobs.send.>"),
                max_ack_pending: MAX_ACK_PENDING,
                ..Default::default()
            },
            api: pull::Config {
                durable_name: Some("api".to_string()),
                description: Some("Herald api hosts: send results".to_string()),
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::Explicit,
                ack_wait: ACK_WAIT,
                // Results are facts the database must see: never give up on one.
                max_deliver: -1,
                max_ack_pending: MAX_ACK_PENDING,
                ..Default::default()
            },
        }
    }

    /// The same layout with another ack wait, for tests that wait it out.
    #[cfg(test)]
    fn with_ack_wait(mut self, ack_wait: Duration) -> Self {
        self.dispatchers.ack_wait = ack_wait;
        self.api.ack_wait = ack_wait;
        self
    }

    fn job_subject(&self, carrier: &str) -> String {
        format!("{}.jobs.send.{}", self.subject_prefix, subject_token(carrier))
    }

    fn result_subject(&self) -> String {
        format!("{}.results.send", self.subject_prefix)
    }

    fn event_subject(&self, event: &Event) -> String {
        format!("{}.events.{}", self.subject_prefix, event.subject_tail())
    }
}

/// A carrier name as one subject token: anything but `[A-Za-z0-9_-]` (dots
/// and wildcards above all) becomes `_`.
pub(super) fn subject_token(name: &str) -> String {
    if name.is_empty() {
        return "_".to_string();
    }
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn unavailable(what: impl std::fmt::Display, err: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(format!("{what}: {err}"))
}

/// Creates the stream or brings an existing one to `config`.
pub(super) async fn ensure_stream(js: &jetstream::Context, config: &stream::Config) -> Result<(), BusError> {
    js.create_or_update_stream(config.clone())
        .await
        .map(|_| ())
        .map_err(|err| BusError::Setup(format!("stream {}: {err}", config.name)))
}

/// Creates the durable consumer or updates it to `config` (the server's
/// create call does both for a durable).
async fn ensure_consumer(
    js: &jetstream::Context,
    stream: &str,
    config: &pull::Config,
) -> Result<PullConsumer, ConsumerError> {
    js.create_consumer_on_stream(config.clone(), stream).await
}

fn consumer_failure(stream: &str, config: &pull::Config, err: ConsumerError) -> BusError {
    let name = config.durable_name.as_deref().unwrap_or_default();
    BusError::Setup(format!("consumer {name} on {stream}: {err}"))
}

fn is_stream_not_found(err: &ConsumerError) -> bool {
    matches!(err.kind(), ConsumerErrorKind::JetStream(err) if err.error_code() == ErrorCode::STREAM_NOT_FOUND)
}

impl NatsTransport {
    /// Connects, then creates or updates the streams and consumers.
    ///
    /// The first connection is retried for a few seconds (the server may be
    /// starting alongside us); after that the client reconnects forever.
    pub async fn connect(url: &str, stream_prefix: &str, subject_prefix: &str) -> Result<Self, BusError> {
        Self::connect_with(url, Layout::new(stream_prefix, subject_prefix)).await
    }

    async fn connect_with(url: &str, layout: Layout) -> Result<Self, BusError> {
        let client = connect_client(url).await?;
        let js = jetstream::ContextBuilder::new()
            .timeout(API_TIMEOUT)
            .max_ack_inflight(MAX_ACK_INFLIGHT)
            .build(client.clone());
        let rate = Arc::new(NatsRate::new(
            client.clone(),
            js.clone(),
            layout.rate.clone(),
            &layout.subject_prefix,
        ));
        let transport = Self {
            client,
            js,
            rate,
            layout: Arc::new(layout),
            reprovision: AtomicBool::new(false),
        };
        transport.provision().await?;
        Ok(transport)
    }

    /// Creates or updates every stream and consumer.
    async fn provision(&self) -> Result<(), BusError> {
        let layout = &self.layout;
        for config in [&layout.jobs, &layout.results, &layout.events, &layout.rate] {
            ensure_stream(&self.js, config).await?;
        }
        for (stream, consumer) in [(&layout.jobs, &layout.dispatchers), (&layout.results, &layout.api)] {
            ensure_consumer(&self.js, &stream.name, consumer)
                .await
                .map_err(|err| consumer_failure(&stream.name, consumer, err))?;
        }
        Ok(())
    }

    /// Deletes the four streams (and so their consumers); best effort, for
    /// tests that share a server.
    pub async fn delete_streams(&self) {
        for name in [
            &self.layout.jobs.name,
            &self.layout.results.name,
            &self.layout.events.name,
            &self.layout.rate.name,
        ] {
            if let Err(err) = self.js.delete_stream(name).await {
                tracing::debug!(stream = %name, error = %err, "deleting stream failed");
            }
        }
    }

    /// Publishes `(subject, message id, payload)` triples. Publishes are
    /// pipelined: a window of them is sent, then their acknowledgements are
    /// awaited together, so a slice costs about one round trip, not one per
    /// message.
    async fn publish_all(&self, messages: Vec<(String, String, Vec<u8>)>) -> Result<(), BusError> {
        if messages.is_empty() {
            return Ok(());
        }
        // Known to be down: fail now rather than after the acknowledgement timeout.
        if self.client.connection_state() != State::Connected {
            return Err(BusError::Unavailable("not connected to NATS".to_string()));
        }
        if self.reprovision.swap(false, Ordering::AcqRel)
            && let Err(err) = self.provision().await
        {
            self.reprovision.store(true, Ordering::Release);
            return Err(unavailable("provisioning streams again", err));
        }
        let mut messages = messages.into_iter().peekable();
        while messages.peek().is_some() {
            let mut pending: Vec<(String, PublishAckFuture)> = Vec::with_capacity(PUBLISH_WINDOW);
            let mut failure = None;
            for (subject, id, payload) in messages.by_ref().take(PUBLISH_WINDOW) {
                let publish = PublishMessage::build().payload(payload.into()).message_id(id);
                match self.js.send_publish(subject.clone(), publish).await {
                    Ok(ack) => pending.push((subject, ack)),
                    Err(err) => {
                        failure = Some(unavailable(format!("publish to {subject}"), err));
                        break;
                    }
                }
            }
            // Await what was sent even after a failure: its outcome is moot,
            // but dropping the futures early only moves them to a background task.
            let acks = join_all(
                pending
                    .into_iter()
                    .map(|(subject, ack)| async move { (subject, ack.await) }),
            )
            .await;
            for (subject, ack) in acks {
                if let Err(err) = ack {
                    if err.kind() == PublishErrorKind::StreamNotFound {
                        self.reprovision.store(true, Ordering::Release);
                    }
                    failure.get_or_insert_with(|| unavailable(format!("publish to {subject}"), err));
                }
            }
            if let Some(err) = failure {
                return Err(err);
            }
        }
        Ok(())
    }

    /// A share of the queue behind `consumer` on `stream`.
    async fn inbox<T: DeserializeOwned + Send + 'static>(
        &self,
        stream: &stream::Config,
        consumer: &pull::Config,
    ) -> Result<PullInbox<T>, BusError> {
        if self.client.connection_state() != State::Connected {
            return Err(BusError::Unavailable("not connected to NATS".to_string()));
        }
        let consumer = tokio::time::timeout(ESTABLISH_TIMEOUT, self.restore_consumer(stream, consumer))
            .await
            .map_err(|_| BusError::Unavailable("setting up the pull timed out".to_string()))??;
        Ok(PullInbox::new(self.client.clone(), self.js.clone(), consumer))
    }

    /// The durable consumer, created or brought to `config`, and its stream
    /// too should a server have restarted without its storage. Failures are
    /// [`BusError::Unavailable`]: the caller retries.
    async fn restore_consumer(&self, stream: &stream::Config, config: &pull::Config) -> Result<PullConsumer, BusError> {
        let name = &stream.name;
        match ensure_consumer(&self.js, name, config).await {
            Ok(consumer) => Ok(consumer),
            Err(err) if is_stream_not_found(&err) => {
                ensure_stream(&self.js, stream)
                    .await
                    .map_err(|err| unavailable("restoring", err))?;
                ensure_consumer(&self.js, name, config)
                    .await
                    .map_err(|err| unavailable("restoring", consumer_failure(name, config, err)))
            }
            Err(err) => Err(unavailable("checking", consumer_failure(name, config, err))),
        }
    }
}

/// Connects once the server answers, retrying for [`INITIAL_CONNECT`].
///
/// The first attempt is made by hand rather than with the client's
/// `retry_on_initial_connect`, which keeps a background task dialling forever
/// even after the caller gives up.
async fn connect_client(url: &str) -> Result<Client, BusError> {
    let deadline = Instant::now() + INITIAL_CONNECT;
    let mut last_error = String::from("timed out");
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(BusError::Unavailable(format!(
                "cannot connect to NATS at {url}: {last_error}"
            )));
        }
        let options = ConnectOptions::new()
            .name("herald")
            .connection_timeout(remaining.min(Duration::from_secs(2)))
            // Reconnect forever, quickly: a restarted server is back within
            // seconds and every dispatcher waits on it.
            .max_reconnects(None)
            .reconnect_delay_callback(|attempts| Duration::from_millis((attempts as u64 * 100).min(1000)));
        match tokio::time::timeout(remaining, options.connect(url)).await {
            Ok(Ok(client)) => return Ok(client),
            Ok(Err(err)) if err.kind() == async_nats::ConnectErrorKind::ServerParse => {
                return Err(BusError::Setup(format!("bad NATS URL {url}: {err}")));
            }
            Ok(Err(err)) => last_error = err.to_string(),
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(200).min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

#[async_trait]
impl Transport for NatsTransport {
    fn kind(&self) -> &'static str {
        "nats"
    }

    /// A JetStream API round trip (`$JS.API.INFO`): proves the connection and
    /// that JetStream answers, which a socket check would not. Sent raw because
    /// the client's typed account info does not parse a 2.9 server's answer.
    async fn ping(&self) -> Result<(), BusError> {
        if self.client.connection_state() != State::Connected {
            return Err(BusError::Unavailable("not connected to NATS".to_string()));
        }
        let reply = tokio::time::timeout(PING_TIMEOUT, self.client.request("$JS.API.INFO", Vec::new().into()))
            .await
            .map_err(|_| BusError::Unavailable("JetStream did not answer in time".to_string()))?
            .map_err(|err| unavailable("JetStream info", err))?;
        match serde_json::from_slice::<serde_json::Value>(&reply.payload) {
            Ok(info) if info.get("error").is_none() => Ok(()),
            Ok(info) => Err(unavailable("JetStream info", &info["error"])),
            Err(err) => Err(unavailable("JetStream info", err)),
        }
    }

    async fn publish_jobs(&self, jobs: &[SendJob]) -> Result<(), BusError> {
        let messages = jobs
            .iter()
            .map(|job| {
                let payload = serde_json::to_vec(job).map_err(|err| unavailable("encoding a job", err))?;
                Ok((
                    self.layout.job_subject(&job.carrier),
                    hand_off_key(job.message_id, job.hand_off),
                    payload,
                ))
            })
            .collect::<Result<Vec<_>, BusError>>()?;
        self.publish_all(messages).await
    }

    async fn publish_results(&self, results: &[SendResult]) -> Result<(), BusError> {
        let subject = self.layout.result_subject();
        let messages = results
            .iter()
            .map(|result| {
                let payload = serde_json::to_vec(result).map_err(|err| unavailable("encoding a result", err))?;
                Ok((
                    subject.clone(),
                    hand_off_key(result.message_id, result.hand_off),
                    payload,
                ))
            })
            .collect::<Result<Vec<_>, BusError>>()?;
        self.publish_all(messages).await
    }

    async fn publish_events(&self, events: &[Event]) -> Result<(), BusError> {
        let messages = events
            .iter()
            .map(|event| (self.layout.event_subject(event), event.id.to_string(), event.to_json()))
            .collect();
        self.publish_all(messages).await
    }

    fn shared_rate(&self) -> Option<Arc<dyn SharedRate>> {
        Some(self.rate.clone())
    }

    async fn jobs(&self) -> Result<Box<dyn Inbox<SendJob>>, BusError> {
        let layout = Arc::clone(&self.layout);
        Ok(Box::new(
            self.inbox::<SendJob>(&layout.jobs, &layout.dispatchers).await?,
        ))
    }

    async fn results(&self) -> Result<Box<dyn Inbox<SendResult>>, BusError> {
        let layout = Arc::clone(&self.layout);
        Ok(Box::new(self.inbox::<SendResult>(&layout.results, &layout.api).await?))
    }
}

/// One process's share of a durable pull consumer.
///
/// A keeper task ([`Keeper`]) pulls for it and holds what arrived until a
/// call hands it out; calls only take from what is held and say how many
/// more they can take (the *credit*).
struct PullInbox<T> {
    client: Client,
    shared: Arc<Shared>,
    keeper: tokio::task::JoinHandle<()>,
    _payload: PhantomData<fn() -> T>,
}

/// What the inbox and its keeper share.
#[derive(Default)]
struct Shared {
    held: std::sync::Mutex<Held>,
    /// Signalled by the keeper when a message arrived or a pull failed.
    arrived: Notify,
    /// Signalled by a call when the credit changed.
    asked: Notify,
}

#[derive(Default)]
struct Held {
    /// Pulled and not handed out yet, oldest first; kept in progress.
    messages: VecDeque<jetstream::Message>,
    /// How many more the caller can take: its last call's `max` less what that
    /// call took. The keeper never holds plus requests more than this.
    credit: usize,
    /// Why pulling stopped; reported by the next call that finds nothing held.
    failure: Option<BusError>,
}

impl Shared {
    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().expect("inbox lock")
    }

    /// How many messages the keeper may request now.
    fn wanted(&self) -> usize {
        let held = self.held();
        if held.failure.is_some() {
            return 0;
        }
        held.credit.saturating_sub(held.messages.len())
    }

    fn hold(&self, message: jetstream::Message) {
        self.held().messages.push_back(message);
        self.arrived.notify_one();
    }

    fn fail(&self, err: BusError) {
        self.held().failure.get_or_insert(err);
        self.arrived.notify_one();
    }
}

impl<T: DeserializeOwned + Send + 'static> PullInbox<T> {
    fn new(client: Client, js: jetstream::Context, consumer: PullConsumer) -> Self {
        let shared = Arc::new(Shared::default());
        let keeper = Keeper {
            client: client.clone(),
            js,
            // Well within the ack wait, so one lost or late progress ack is harmless.
            progress_every: consumer.cached_info().config.ack_wait / 3,
            consumer,
            shared: Arc::clone(&shared),
        };
        Self {
            client,
            shared,
            keeper: tokio::spawn(keeper.run()),
            _payload: PhantomData,
        }
    }

    /// Up to `room` held messages, taken off the credit; or the keeper's
    /// failure when nothing is held.
    fn take(&self, room: usize) -> Result<Vec<jetstream::Message>, BusError> {
        let mut held = self.shared.held();
        let n = room.min(held.messages.len());
        if n == 0
            && let Some(err) = held.failure.take()
        {
            return Err(err);
        }
        held.credit = held.credit.saturating_sub(n);
        Ok(held.messages.drain(..n).collect())
    }
}

impl<T> Drop for PullInbox<T> {
    /// What is still held goes to a consumer after the ack wait: without the
    /// keeper nothing keeps it in progress, and it is never handed out here.
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

/// The delivery in `message`, or `None` when its payload does not decode.
async fn decode<T: DeserializeOwned>(message: jetstream::Message) -> Option<Delivery<T>> {
    let (message, acker) = message.split();
    let handle = JetStreamHandle(acker);
    match serde_json::from_slice::<T>(&message.payload) {
        Ok(payload) => Some(Delivery::new(payload, Box::new(handle))),
        Err(err) => {
            // Terminated, never redelivered: no later attempt could decode it,
            // and it must not block the queue.
            tracing::warn!(subject = %message.subject, error = %err, "dropping a bus message that does not decode");
            handle.send(AckKind::Term, "termination").await;
            None
        }
    }
}

#[async_trait]
impl<T: DeserializeOwned + Send + 'static> Inbox<T> for PullInbox<T> {
    async fn next(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery<T>>, BusError> {
        let deadline = tokio::time::Instant::now() + wait;
        self.shared.held().credit = max;
        self.shared.asked.notify_one();
        let mut out = Vec::new();
        while out.len() < max {
            // What is held first, even while disconnected (its acks go out once
            // the connection is back); then wait for the first delivery until
            // the deadline and for the rest of its burst only briefly.
            let taken = match self.take(max - out.len()) {
                Ok(taken) => taken,
                // Pulling failed (a lost consumer, a failed request): the
                // caller opens the inbox again, which restores the consumer.
                Err(err) if out.is_empty() => return Err(err),
                Err(err) => {
                    self.shared.fail(err);
                    break;
                }
            };
            if !taken.is_empty() {
                for message in taken {
                    out.extend(decode(message).await);
                }
                continue;
            }
            if self.client.connection_state() != State::Connected {
                if out.is_empty() {
                    return Err(BusError::Unavailable("not connected to NATS".to_string()));
                }
                break;
            }
            let until = if out.is_empty() {
                deadline
            } else {
                deadline.min(tokio::time::Instant::now() + LINGER)
            };
            if tokio::time::timeout_at(until, self.shared.arrived.notified())
                .await
                .is_err()
            {
                break;
            }
        }
        Ok(out)
    }
}

/// Pulls for one [`PullInbox`] and keeps what it holds in progress.
///
/// One pull request at a time, for what the caller can still take less what
/// is held; a new one once it is filled, expired or the credit was used up.
/// Every message that arrives is read at once into [`Held`], where it is
/// marked in progress every third of the ack wait until a call hands it out:
/// nothing this process holds is given to another consumer meanwhile.
struct Keeper {
    client: Client,
    js: jetstream::Context,
    consumer: PullConsumer,
    shared: Arc<Shared>,
    progress_every: Duration,
}

/// One open pull request: its replies come on a subject of its own.
struct PullRequest {
    replies: async_nats::Subscriber,
    /// Messages still to come.
    remaining: usize,
    /// When to stop waiting for the server to end it (a reply lost in a reconnect).
    given_up_at: tokio::time::Instant,
}

/// What one reply to a pull request means.
enum Reply {
    Message(Box<jetstream::Message>),
    /// Nothing to hold: a status, or the request is over (then `remaining` is 0).
    Nothing,
    Failed(BusError),
}

impl Keeper {
    async fn run(self) {
        let mut request: Option<PullRequest> = None;
        let mut progress = tokio::time::interval(self.progress_every);
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if request.is_none() {
                let wanted = self.shared.wanted();
                if wanted > 0 {
                    match self.request(wanted).await {
                        Ok(opened) => request = Some(opened),
                        Err(err) => self.shared.fail(err),
                    }
                }
            }
            tokio::select! {
                reply = next_reply(request.as_mut(), &self.js) => match reply {
                    Reply::Message(message) => self.shared.hold(*message),
                    Reply::Nothing => {}
                    Reply::Failed(err) => self.shared.fail(err),
                },
                _ = self.shared.asked.notified() => {}
                _ = progress.tick() => self.keep_in_progress().await,
            }
            // Over: filled, expired or failed. Dropping it unsubscribes.
            if request.as_ref().is_some_and(|r| r.remaining == 0) {
                request = None;
            }
        }
    }

    /// Asks the server for `n` messages (no more than the caller can take).
    async fn request(&self, n: usize) -> Result<PullRequest, BusError> {
        let subject = self.client.new_inbox();
        let opening = async {
            let replies = self
                .client
                .subscribe(subject.clone())
                .await
                .map_err(|err| unavailable("pulling messages", err))?;
            let config = pull::BatchConfig {
                batch: n,
                expires: Some(PULL_EXPIRES),
                ..Default::default()
            };
            self.consumer
                .request_batch(config, subject.into())
                .await
                .map_err(|err| unavailable("pulling messages", err))?;
            Ok(PullRequest {
                replies,
                remaining: n,
                given_up_at: tokio::time::Instant::now() + PULL_EXPIRES + API_TIMEOUT,
            })
        };
        tokio::time::timeout(API_TIMEOUT, opening)
            .await
            .map_err(|_| BusError::Unavailable("pull request timed out".to_string()))?
    }

    /// Marks every held message in progress so its ack wait starts again.
    async fn keep_in_progress(&self) {
        let replies: Vec<_> = self
            .shared
            .held()
            .messages
            .iter()
            .filter_map(|message| message.reply.clone())
            .collect();
        for reply in replies {
            JetStreamHandle(Acker::new(self.js.clone(), Some(reply)))
                .send(AckKind::Progress, "progress ack")
                .await;
        }
    }
}

/// The next reply to `request`; never ready without one.
async fn next_reply(request: Option<&mut PullRequest>, js: &jetstream::Context) -> Reply {
    let Some(request) = request else {
        return std::future::pending().await;
    };
    let reply = match tokio::time::timeout_at(request.given_up_at, request.replies.next()).await {
        Ok(Some(reply)) => reply,
        Ok(None) | Err(_) => {
            request.remaining = 0;
            return Reply::Nothing;
        }
    };
    match reply.status {
        None | Some(StatusCode::OK) => {
            request.remaining = request.remaining.saturating_sub(1);
            Reply::Message(Box::new(jetstream::Message {
                message: reply,
                context: js.clone(),
            }))
        }
        Some(StatusCode::IDLE_HEARTBEAT) => Reply::Nothing,
        // Expired, or ended by the server with nothing more to give.
        Some(StatusCode::TIMEOUT) | Some(StatusCode::NOT_FOUND) => {
            request.remaining = 0;
            Reply::Nothing
        }
        Some(status) => {
            request.remaining = 0;
            Reply::Failed(BusError::Unavailable(format!(
                "pull request ended: {status} {}",
                reply.description.as_deref().unwrap_or_default()
            )))
        }
    }
}

/// Acknowledgement of one JetStream delivery. Acks are fire-and-forget (no
/// confirmation round trip): a lost ack only means a redelivery, which
/// deduplication by `(message_id, dispatch)` above the bus absorbs.
struct JetStreamHandle(Acker);

impl JetStreamHandle {
    async fn send(&self, kind: AckKind, what: &str) {
        match tokio::time::timeout(ACK_SEND_TIMEOUT, self.0.ack_with(kind)).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "{what} of a bus message failed"),
            Err(_) => tracing::warn!("{what} of a bus message not sent in time: NATS unreachable"),
        }
    }
}

#[async_trait]
impl DeliveryHandle for JetStreamHandle {
    async fn ack(&self) {
        self.send(AckKind::Ack, "ack").await
    }

    async fn retry_later(&self, delay: Duration) {
        self.send(AckKind::Nak(Some(delay)), "nak").await
    }

    async fn working(&self) {
        self.send(AckKind::Progress, "progress ack").await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;
    use std::time::{SystemTime, UNIX_EPOCH};

    use chrono::Utc;

    use super::*;
    use crate::bus::SendOutcome;

    /// Long enough for anything that should arrive; far below the ack wait.
    const WAIT: Duration = Duration::from_secs(3);
    /// How long to watch for something that should not arrive.
    const QUIET: Duration = Duration::from_millis(300);

    /// A transport on streams and subjects of its own (`HT_<unix time>_…`, the
    /// pattern the API tests sweep once stale) on the NATS server at
    /// `TEST_NATS_URL` (default `nats://127.0.0.1:4222`). `None` after a notice
    /// when NATS is unusable, except under `CI=true`, where the test fails.
    async fn transport() -> Option<NatsTransport> {
        transport_with_ack_wait(ACK_WAIT).await
    }

    /// [`transport`] whose consumers give a delivery to another consumer
    /// after `ack_wait` instead of the production thirty seconds.
    async fn transport_with_ack_wait(ack_wait: Duration) -> Option<NatsTransport> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let url = std::env::var("TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_string());
        let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
        let run = format!("{now}_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let layout = Layout::new(&format!("HT_{run}"), &format!("ht{run}")).with_ack_wait(ack_wait);
        match NatsTransport::connect_with(&url, layout).await {
            Ok(transport) => Some(transport),
            Err(err) if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") => {
                panic!("NATS is required under CI=true but unusable at {url}: {err}")
            }
            Err(err) => {
                eprintln!("note: skipping, NATS at {url} is unusable: {err}");
                None
            }
        }
    }

    /// Results for one message each, told apart by their hand-off numbers.
    fn results(hand_offs: std::ops::Range<i32>) -> Vec<SendResult> {
        hand_offs
            .map(|hand_off| SendResult {
                message_id: crate::domain::ids::MessageId::new(),
                hand_off,
                attempts: 0,
                outcome: SendOutcome::Failed {
                    reason: "test".to_string(),
                },
                at: Utc::now(),
            })
            .collect()
    }

    fn hand_offs(deliveries: &[Delivery<SendResult>]) -> Vec<i32> {
        let mut numbers: Vec<i32> = deliveries.iter().map(|d| d.payload.hand_off).collect();
        numbers.sort_unstable();
        numbers
    }

    /// Calls `next` until `n` deliveries came; fails if a call brings none.
    async fn take(inbox: &mut dyn Inbox<SendResult>, n: usize) -> Vec<Delivery<SendResult>> {
        let mut taken = Vec::new();
        while taken.len() < n {
            let batch = inbox.next(n - taken.len(), WAIT).await.expect("next");
            assert!(
                !batch.is_empty(),
                "only {} of {n} deliveries within {WAIT:?}",
                taken.len()
            );
            taken.extend(batch);
        }
        taken
    }

    async fn ack_all(deliveries: Vec<Delivery<SendResult>>) {
        for delivery in deliveries {
            delivery.ack().await;
        }
    }

    #[tokio::test]
    async fn a_call_returns_at_most_max_and_the_next_calls_the_rest() {
        let Some(bus) = transport().await else { return };
        bus.publish_results(&results(0..5)).await.unwrap();
        let mut inbox = bus.results().await.unwrap();

        let mut taken = Vec::new();
        for _ in 0..2 {
            let batch = inbox.next(2, WAIT).await.unwrap();
            assert_eq!(batch.len(), 2, "a full batch, and no more than asked for");
            taken.extend(batch);
        }
        let last = inbox.next(2, WAIT).await.unwrap();
        assert_eq!(last.len(), 1);
        taken.extend(last);
        assert_eq!(hand_offs(&taken), vec![0, 1, 2, 3, 4]);

        ack_all(taken).await;
        assert!(inbox.next(10, QUIET).await.unwrap().is_empty(), "acknowledged: gone");
        bus.delete_streams().await;
    }

    #[tokio::test]
    async fn a_message_pulled_after_a_call_returned_is_handed_out_by_the_next_call() {
        let Some(bus) = transport().await else { return };
        let mut first = bus.results().await.unwrap();
        // The call returns empty-handed, but its pull for three stays open.
        assert!(first.next(3, QUIET).await.unwrap().is_empty());
        bus.publish_results(&results(0..3)).await.unwrap();
        tokio::time::sleep(QUIET).await;
        let mut second = bus.results().await.unwrap();
        assert!(
            second.next(10, QUIET).await.unwrap().is_empty(),
            "held by the first inbox"
        );

        let started = Instant::now();
        let rest = first.next(10, WAIT).await.unwrap();
        assert_eq!(hand_offs(&rest), vec![0, 1, 2]);
        assert!(
            started.elapsed() < QUIET,
            "handed out at once, from what the inbox holds"
        );
        ack_all(rest).await;
        bus.delete_streams().await;
    }

    #[tokio::test]
    async fn an_inbox_holds_no_more_than_its_caller_can_take() {
        let Some(bus) = transport().await else { return };
        bus.publish_results(&results(0..5)).await.unwrap();
        let mut first = bus.results().await.unwrap();
        let taken = first.next(2, WAIT).await.unwrap();
        assert_eq!(hand_offs(&taken), vec![0, 1]);
        // Its caller took all it asked for: the first inbox pulls nothing more,
        // so the rest is there for other consumers.
        tokio::time::sleep(QUIET).await;
        let mut second = bus.results().await.unwrap();
        let rest = take(&mut *second, 3).await;
        assert_eq!(hand_offs(&rest), vec![2, 3, 4]);
        ack_all(taken).await;
        ack_all(rest).await;
        bus.delete_streams().await;
    }

    #[tokio::test]
    async fn what_an_inbox_holds_past_the_ack_wait_goes_to_no_other_consumer() {
        let ack_wait = Duration::from_secs(2);
        let Some(bus) = transport_with_ack_wait(ack_wait).await else {
            return;
        };
        let mut first = bus.results().await.unwrap();
        // Its caller can take three, and takes one: two stay held, unread.
        assert!(first.next(3, QUIET).await.unwrap().is_empty());
        bus.publish_results(&results(0..5)).await.unwrap();
        let taken = take(&mut *first, 1).await;
        assert_eq!(hand_offs(&taken), vec![0]);
        ack_all(taken).await;

        tokio::time::sleep(ack_wait * 3).await;
        let mut second = bus.results().await.unwrap();
        let others = take(&mut *second, 2).await;
        assert_eq!(hand_offs(&others), vec![3, 4], "only what the first inbox never pulled");
        ack_all(others).await;
        assert!(
            second.next(10, ack_wait).await.unwrap().is_empty(),
            "nothing the first inbox holds is redelivered"
        );

        let held = first.next(10, WAIT).await.unwrap();
        assert_eq!(hand_offs(&held), vec![1, 2], "still handed out by the first inbox");
        ack_all(held).await;
        assert!(second.next(10, QUIET).await.unwrap().is_empty(), "each sent once");
        bus.delete_streams().await;
    }

    #[tokio::test]
    async fn an_empty_queue_returns_nothing_after_the_wait() {
        let Some(bus) = transport().await else { return };
        let mut inbox = bus.results().await.unwrap();
        for _ in 0..2 {
            let started = Instant::now();
            assert!(inbox.next(10, QUIET).await.unwrap().is_empty());
            let took = started.elapsed();
            assert!(took >= QUIET && took < QUIET + Duration::from_secs(1), "took {took:?}");
        }
        bus.delete_streams().await;
    }

    #[tokio::test]
    async fn a_call_returns_as_soon_as_a_burst_arrived() {
        let Some(bus) = transport().await else { return };
        let mut inbox = bus.results().await.unwrap();
        let publish = async {
            tokio::time::sleep(QUIET).await;
            bus.publish_results(&results(0..3)).await.unwrap();
        };
        let started = Instant::now();
        let (batch, ()) = tokio::join!(inbox.next(100, Duration::from_secs(20)), publish);
        let batch = batch.unwrap();
        assert!(!batch.is_empty());
        assert!(
            started.elapsed() < WAIT,
            "returned once the burst arrived, not after the wait"
        );
        let mut all = take(&mut *inbox, 3 - batch.len()).await;
        all.extend(batch);
        assert_eq!(hand_offs(&all), vec![0, 1, 2]);
        ack_all(all).await;
        bus.delete_streams().await;
    }

    #[tokio::test]
    async fn a_delivery_put_back_comes_again_after_its_delay() {
        let Some(bus) = transport().await else { return };
        let published = results(7..8);
        bus.publish_results(&published).await.unwrap();
        let mut inbox = bus.results().await.unwrap();
        let first = take(&mut *inbox, 1).await.pop().unwrap();
        assert_eq!(first.payload, published[0]);

        let delay = Duration::from_millis(500);
        let put_back = Instant::now();
        first.retry_later(delay).await;
        let again = take(&mut *inbox, 1).await;
        assert!(
            put_back.elapsed() >= delay - Duration::from_millis(100),
            "not before its delay"
        );
        assert_eq!(again[0].payload, published[0]);
        ack_all(again).await;
        assert!(inbox.next(10, QUIET).await.unwrap().is_empty(), "acknowledged: gone");
        bus.delete_streams().await;
    }

    #[tokio::test]
    async fn rate_leases_claimed_at_once_never_overlap() {
        let Some(bus) = transport().await else { return };
        let rate = bus.shared_rate().expect("NATS shares rate budgets");
        let interval = Duration::from_millis(1);
        let claims = (0..3).map(|_| {
            let rate = rate.clone();
            async move {
                let mut leases = Vec::new();
                for _ in 0..10 {
                    leases.push(rate.claim("gw.1", 2, interval).await.expect("claim"));
                }
                leases
            }
        });
        let mut leases: Vec<rate::Lease> = join_all(claims).await.into_iter().flatten().collect();
        leases.sort_by_key(|lease| lease.start);
        assert_eq!(leases.len(), 30);
        for pair in leases.windows(2) {
            // Each lease's instant is converted from the wall clock on its own:
            // allow a little for that.
            let gap = pair[1].start - pair[0].start;
            assert!(gap >= interval * 2 - Duration::from_micros(200), "{pair:?}");
        }
        // Another carrier's budget is its own: it starts now.
        let other = rate.claim("other", 1, interval).await.expect("claim");
        assert!(other.start <= tokio::time::Instant::now());
        bus.delete_streams().await;
    }

    #[tokio::test]
    async fn a_lost_rate_stream_is_created_again() {
        let Some(bus) = transport().await else { return };
        let rate = bus.shared_rate().expect("NATS shares rate budgets");
        rate.claim("gw", 1, Duration::from_millis(1)).await.expect("claim");
        bus.js.delete_stream(&bus.layout.rate.name).await.expect("deleted");
        rate.claim("gw", 1, Duration::from_millis(1))
            .await
            .expect("claimed once the stream is back");
        bus.delete_streams().await;
    }

    #[tokio::test]
    async fn a_result_published_twice_is_delivered_once() {
        let Some(bus) = transport().await else { return };
        let result = results(1..2).remove(0);
        bus.publish_results(std::slice::from_ref(&result)).await.unwrap();
        bus.publish_results(std::slice::from_ref(&result)).await.unwrap();
        // The next hand-off of the same message has a key of its own.
        let next_hand_off = SendResult {
            hand_off: 2,
            ..result.clone()
        };
        bus.publish_results(&[next_hand_off]).await.unwrap();

        let mut inbox = bus.results().await.unwrap();
        let taken = take(&mut *inbox, 2).await;
        assert_eq!(hand_offs(&taken), vec![1, 2]);
        assert!(
            inbox.next(10, QUIET).await.unwrap().is_empty(),
            "the repeat was dropped"
        );
        ack_all(taken).await;
        bus.delete_streams().await;
    }
}
