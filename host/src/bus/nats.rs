//! NATS JetStream transport (SPEC §1, §6).
//!
//! Three streams, all created or updated at start so a deployment that an
//! older version set up is brought to the current configuration:
//! `{P}_JOBS` and `{P}_RESULTS` are work queues (a message is gone once one
//! consumer acknowledges it), `{P}_EVENTS` keeps every event for a week for
//! outside subscribers. Every publish carries `Nats-Msg-Id`, so a publisher
//! that repeats itself after a crash or a timeout is deduplicated by the
//! server within the two-minute window.
//!
//! Jobs and results are consumed through durable pull consumers shared by
//! every process of a role: that is how dispatchers scale out. Pull requests
//! are issued by hand on one long-lived inbox per [`Inbox`] (see
//! `PullInbox`) rather than through the client's `fetch` or `stream`
//! helpers: `fetch` either returns at once when the queue is empty or waits
//! for a full batch, and `stream` prefetches on its own schedule. Here a call
//! asks the server for at most what the caller can take, returns as soon as a
//! burst has arrived, and keeps anything that arrives later for the next call
//! instead of losing it until the ack wait expires.
//!
//! The connection reconnects forever: a NATS restart mid-campaign makes calls
//! fail with [`BusError::Unavailable`] until it is back, then they resume.

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_nats::connection::State;
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::consumer::pull::{self, BatchConfig};
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy};
use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::message::{Acker, PublishMessage};
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use async_nats::jetstream::stream::{ConsumerError, ConsumerErrorKind};
use async_nats::jetstream::{self, AckKind};
use async_nats::{Client, ConnectOptions, StatusCode, Subject, Subscriber};
use async_trait::async_trait;
use futures::StreamExt;
use futures::future::join_all;
use serde::de::DeserializeOwned;

use crate::bus::event::Event;
use crate::bus::{BusError, Delivery, DeliveryHandle, Inbox, SendJob, SendResult, Transport, hand_off_key};

/// How long `connect` keeps trying before it reports the server unreachable,
/// so a misconfigured process fails at start instead of hanging.
const INITIAL_CONNECT: Duration = Duration::from_secs(5);
/// Timeout of JetStream API calls and of each publish acknowledgement.
const API_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on setting up a pull (consumer check and inbox subscription).
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
/// Shortest pull request: the server needs some time to answer at all.
const MIN_EXPIRES: Duration = Duration::from_millis(20);
/// Margin after a pull request's expiry by which its timeout notice must have
/// arrived; past it, the request is assumed gone (e.g. lost in a reconnect).
const EXPIRY_GRACE: Duration = Duration::from_millis(500);

/// JetStream transport: publishes jobs, results and events, and hands out
/// shares of the job and result queues.
pub struct NatsTransport {
    client: Client,
    js: jetstream::Context,
    layout: Arc<Layout>,
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
fn subject_token(name: &str) -> String {
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
async fn ensure_stream(js: &jetstream::Context, config: &stream::Config) -> Result<(), BusError> {
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
) -> Result<jetstream::consumer::PullConsumer, ConsumerError> {
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
        let client = connect_client(url).await?;
        let js = jetstream::ContextBuilder::new()
            .timeout(API_TIMEOUT)
            .max_ack_inflight(MAX_ACK_INFLIGHT)
            .build(client.clone());
        let transport = Self {
            client,
            js,
            layout: Arc::new(Layout::new(stream_prefix, subject_prefix)),
            reprovision: AtomicBool::new(false),
        };
        transport.provision().await?;
        Ok(transport)
    }

    /// Creates or updates every stream and consumer.
    async fn provision(&self) -> Result<(), BusError> {
        let layout = &self.layout;
        for config in [&layout.jobs, &layout.results, &layout.events] {
            ensure_stream(&self.js, config).await?;
        }
        for (stream, consumer) in [(&layout.jobs, &layout.dispatchers), (&layout.results, &layout.api)] {
            ensure_consumer(&self.js, &stream.name, consumer)
                .await
                .map_err(|err| consumer_failure(&stream.name, consumer, err))?;
        }
        Ok(())
    }

    /// Deletes the three streams (and so their consumers); best effort, for
    /// tests that share a server.
    pub async fn delete_streams(&self) {
        for name in [
            &self.layout.jobs.name,
            &self.layout.results.name,
            &self.layout.events.name,
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
        let mut inbox = PullInbox::new(self.client.clone(), self.js.clone(), stream, consumer);
        inbox.establish().await?;
        Ok(inbox)
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
/// It owns one inbox subscription that lives across calls (and across
/// reconnects: the client subscribes again by itself) and sends pull requests
/// to it, tracking how many messages requested are still to come so it never
/// asks for more than a caller wanted. Deliveries that arrive after a call
/// returned wait in the subscription for the next call rather than being lost
/// until their ack wait expires.
struct PullInbox<T> {
    client: Client,
    js: jetstream::Context,
    stream: stream::Config,
    config: pull::Config,
    consumer: Option<jetstream::consumer::PullConsumer>,
    inbox: Subject,
    subscriber: Option<Subscriber>,
    /// Set after an error: the next call checks the consumer (and stream) first.
    check: bool,
    /// Messages requested and neither delivered nor released by the server.
    outstanding: usize,
    /// When every outstanding request has expired on the server.
    outstanding_until: Instant,
    /// The client's connection count when the consumer was last checked: a
    /// reconnect makes the server forget pending pull requests, and a server
    /// that restarted without its storage lost the consumer.
    connects: u64,
    _payload: PhantomData<fn() -> T>,
}

/// What became of one message from the inbox subscription.
enum Received<T> {
    Delivery(Delivery<T>),
    /// A pull request ended: more may be asked for.
    Released,
    /// A heartbeat or an undecodable message: nothing for the caller.
    Nothing,
}

impl<T: DeserializeOwned + Send + 'static> PullInbox<T> {
    fn new(client: Client, js: jetstream::Context, stream: &stream::Config, config: &pull::Config) -> Self {
        Self {
            inbox: Subject::from(client.new_inbox()),
            client,
            js,
            stream: stream.clone(),
            config: config.clone(),
            consumer: None,
            subscriber: None,
            check: true,
            outstanding: 0,
            outstanding_until: Instant::now(),
            connects: 0,
            _payload: PhantomData,
        }
    }

    /// Makes sure the consumer exists (and its stream, should a server have
    /// restarted without its storage) and the inbox is subscribed. Failures
    /// are [`BusError::Unavailable`]: the caller retries.
    async fn establish(&mut self) -> Result<(), BusError> {
        tokio::time::timeout(ESTABLISH_TIMEOUT, self.try_establish())
            .await
            .map_err(|_| BusError::Unavailable("setting up the pull timed out".to_string()))?
    }

    async fn try_establish(&mut self) -> Result<(), BusError> {
        if self.client.connection_state() != State::Connected {
            return Err(BusError::Unavailable("not connected to NATS".to_string()));
        }
        let connects = self.client.statistics().connects.load(Ordering::Relaxed);
        let stream = &self.stream.name;
        let consumer = match ensure_consumer(&self.js, stream, &self.config).await {
            Ok(consumer) => consumer,
            Err(err) if is_stream_not_found(&err) => {
                ensure_stream(&self.js, &self.stream)
                    .await
                    .map_err(|err| unavailable("restoring", err))?;
                ensure_consumer(&self.js, stream, &self.config)
                    .await
                    .map_err(|err| unavailable("restoring", consumer_failure(stream, &self.config, err)))?
            }
            Err(err) => return Err(unavailable("checking", consumer_failure(stream, &self.config, err))),
        };
        if self.subscriber.is_none() {
            self.inbox = Subject::from(self.client.new_inbox());
            let subscriber = self
                .client
                .subscribe(self.inbox.clone())
                .await
                .map_err(|err| unavailable("subscribing to the pull inbox", err))?;
            self.subscriber = Some(subscriber);
        }
        self.consumer = Some(consumer);
        self.check = false;
        self.connects = connects;
        self.outstanding = 0;
        Ok(())
    }

    /// Checks that the pull can be used now: connected, and the consumer
    /// checked since the last error or reconnect.
    async fn prepare(&mut self) -> Result<(), BusError> {
        if self.client.connection_state() != State::Connected {
            return Err(BusError::Unavailable("not connected to NATS".to_string()));
        }
        if self.check || self.client.statistics().connects.load(Ordering::Relaxed) != self.connects {
            self.establish().await?;
        }
        Ok(())
    }

    /// Asks the server for up to `wanted` more messages, less what earlier
    /// requests may still bring.
    async fn request(&mut self, wanted: usize, expires: Duration) -> Result<(), BusError> {
        let now = Instant::now();
        if now >= self.outstanding_until {
            self.outstanding = 0;
        }
        let batch = wanted.saturating_sub(self.outstanding);
        let Some(consumer) = &self.consumer else {
            return Err(BusError::Unavailable("pull consumer not set up".to_string()));
        };
        if batch == 0 {
            return Ok(());
        }
        let expires = expires.max(MIN_EXPIRES);
        let request = BatchConfig {
            batch,
            expires: Some(expires),
            ..Default::default()
        };
        match tokio::time::timeout(API_TIMEOUT, consumer.request_batch(request, self.inbox.clone())).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => return Err(unavailable("pull request", err)),
            Err(_) => return Err(BusError::Unavailable("pull request not sent in time".to_string())),
        }
        self.outstanding += batch;
        self.outstanding_until = self.outstanding_until.max(now + expires + EXPIRY_GRACE);
        Ok(())
    }

    /// Handles one message from the inbox: a delivery, or a status notice
    /// that settles the accounting of outstanding requests.
    async fn receive(&mut self, message: async_nats::Message) -> Result<Received<T>, BusError> {
        match message.status {
            None | Some(StatusCode::OK) => {
                self.outstanding = self.outstanding.saturating_sub(1);
                let (message, acker) = jetstream::Message {
                    message,
                    context: self.js.clone(),
                }
                .split();
                match serde_json::from_slice::<T>(&message.payload) {
                    Ok(payload) => Ok(Received::Delivery(Delivery::new(
                        payload,
                        Box::new(JetStreamHandle(acker)),
                    ))),
                    Err(err) => {
                        // Terminated, never redelivered: no later attempt could decode it,
                        // and it must not block the queue.
                        tracing::warn!(
                            subject = %message.subject,
                            error = %err,
                            "dropping a bus message that does not decode"
                        );
                        if let Err(err) = acker.ack_with(AckKind::Term).await {
                            tracing::warn!(error = %err, "terminating an undecodable message failed");
                        }
                        Ok(Received::Nothing)
                    }
                }
            }
            Some(StatusCode::IDLE_HEARTBEAT) => Ok(Received::Nothing),
            Some(StatusCode::TIMEOUT | StatusCode::REQUEST_TERMINATED) => {
                let description = message.description.as_deref().unwrap_or_default();
                if description.contains("Consumer Deleted") || description.contains("push based") {
                    return Err(BusError::Unavailable(format!("pull consumer: {description}")));
                }
                // A request ended; the server says how much of it went unfilled.
                // Without that, assume nothing more is coming.
                let released = message
                    .headers
                    .as_ref()
                    .and_then(|headers| headers.get("Nats-Pending-Messages"))
                    .and_then(|value| value.as_str().parse::<usize>().ok());
                self.outstanding = released.map_or(0, |n| self.outstanding.saturating_sub(n));
                Ok(Received::Released)
            }
            Some(StatusCode::NOT_FOUND) => {
                self.outstanding = 0;
                Ok(Received::Released)
            }
            Some(StatusCode::NO_RESPONDERS) => Err(BusError::Unavailable("JetStream is not answering".to_string())),
            Some(status) => {
                tracing::warn!(%status, description = ?message.description, "unexpected pull status");
                self.outstanding = 0;
                Ok(Received::Released)
            }
        }
    }
}

#[async_trait]
impl<T: DeserializeOwned + Send + 'static> Inbox<T> for PullInbox<T> {
    async fn next(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery<T>>, BusError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let deadline = tokio::time::Instant::now() + wait;
        let mut out = Vec::new();
        // When the pull cannot be used, deliveries already received are still
        // handed over (their acks go out once the connection is back) rather
        // than left in a subscription the caller may drop on the error.
        let mut failure = self.prepare().await.err();
        let live = failure.is_none();
        // Whether a request covering this call's need is out.
        let mut asked = false;
        while out.len() < max {
            let Some(subscriber) = self.subscriber.as_mut() else {
                break;
            };
            // What is already here first; then ask for the rest; then wait for
            // the first delivery until the deadline and for the rest of its
            // burst only briefly.
            let message = match futures::FutureExt::now_or_never(subscriber.next()) {
                Some(message) => message,
                None if !live => break,
                None if !asked => {
                    asked = true;
                    let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
                    if let Err(err) = self.request(max - out.len(), remaining).await {
                        failure = Some(err);
                        break;
                    }
                    continue;
                }
                None => {
                    let until = if out.is_empty() {
                        deadline
                    } else {
                        deadline.min(tokio::time::Instant::now() + LINGER)
                    };
                    match tokio::time::timeout_at(until, subscriber.next()).await {
                        Ok(message) => message,
                        Err(_) => break,
                    }
                }
            };
            let Some(message) = message else {
                self.subscriber = None;
                failure = Some(BusError::Unavailable("pull inbox closed".to_string()));
                break;
            };
            match self.receive(message).await {
                Ok(Received::Delivery(delivery)) => out.push(delivery),
                Ok(Received::Released) => asked = false,
                Ok(Received::Nothing) => {}
                Err(err) => {
                    failure.get_or_insert(err);
                    break;
                }
            }
        }
        if let Some(err) = failure {
            self.check = true;
            // Hand over what arrived; the error shows on the next call if it persists.
            if out.is_empty() {
                return Err(err);
            }
        }
        Ok(out)
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
