//! Storage: one [`Store`] interface, implemented for SQLite (embedded default) and
//! PostgreSQL. Both run the same SQL (see `sql.rs`); only connecting and a few
//! dialect details differ. Knows nothing of HTTP.

mod cache;
mod columns;
mod sql;

pub mod postgres;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use tokio::sync::mpsc;

use crate::bus::event::Event;
use crate::config::DatabaseConfig;
use crate::domain::audit::{ConsentChange, ConsentFilter, Hold, MessageAudit, MessageFilter};
use crate::domain::campaign::{Campaign, CampaignStatus};
use crate::domain::contact::{ConsentSource, Contact, NewContact};
use crate::domain::ids::{CampaignId, ContactId, MessageId, TaskId, UserId};
use crate::domain::message::{
    ClaimedMessage, MessageChange, MessageRecord, MessageStatus, Receipt, ReceiptOutcome, SendRequest, TaskReport,
    Verdict,
};
use crate::domain::page::{Page, PageRequest};
use crate::domain::settings::FrequencyCap;
use crate::domain::variant::Variant;
use cache::ReadCache;
pub use sql::SqlStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(sqlx::Error),
    /// Lock contention, a deadlock or an exhausted pool: retrying may succeed.
    #[error("database busy: {0}")]
    Busy(sqlx::Error),
    /// A row names a parent that no longer exists (deleted concurrently).
    #[error("referenced row is gone: {0}")]
    MissingReference(sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is not valid: {0}")]
    Corrupt(String),
    /// The producer of a bulk write gave up half-way; nothing was written.
    #[error("write aborted: {0}")]
    Aborted(String),
    /// Another process holds the SQLite database's lock file.
    #[error(
        "another Herald process is using the SQLite database {database}: it holds the lock file {lock}. \
         Only one `herald serve` may use a SQLite file; stop the other one, or give this one its own \
         data_dir (PostgreSQL serves several api hosts)"
    )]
    InUse { database: String, lock: String },
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        let code = match &e {
            sqlx::Error::PoolTimedOut => return Self::Busy(e),
            sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
            _ => None,
        };
        match code.as_deref() {
            // PostgreSQL: deadlock, serialization failure, lock not available.
            // SQLite: SQLITE_BUSY, SQLITE_LOCKED and their extended codes.
            Some("40P01" | "40001" | "55P03" | "5" | "6" | "261" | "262" | "517") => Self::Busy(e),
            // Foreign-key violation: PostgreSQL, SQLITE_CONSTRAINT_FOREIGNKEY.
            Some("23503" | "787") => Self::MissingReference(e),
            _ => Self::Database(e),
        }
    }
}

/// One message of a bulk write's producer. A write commits only after `End`;
/// `Abort`, or a producer that goes away without `End`, rolls it back.
#[derive(Debug)]
pub enum ContactBatch {
    Rows(Vec<NewContact>),
    End,
    Abort(String),
}

pub type ContactBatches = mpsc::Receiver<ContactBatch>;

/// The next rows of a bulk write, `None` at its end.
pub(crate) async fn next_rows(batches: &mut ContactBatches) -> Result<Option<Vec<NewContact>>, StoreError> {
    match batches.recv().await {
        Some(ContactBatch::Rows(rows)) => Ok(Some(rows)),
        Some(ContactBatch::End) => Ok(None),
        Some(ContactBatch::Abort(reason)) => Err(StoreError::Aborted(reason)),
        None => Err(StoreError::Aborted("the producer stopped before the end".into())),
    }
}

/// Result of linking contacts to a campaign.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkOutcome {
    /// Contacts newly linked to the campaign (created or already the user's).
    pub linked: u64,
    /// Contacts that were already linked to the campaign.
    pub already_linked: u64,
    /// Contacts linked to the campaign afterwards.
    pub total_contacts: u64,
}

/// How far the purge of a deleted campaign has got, kept by the purger
/// between batches: each batch starts after the last one's rows instead of at
/// the campaign's first index entry. PostgreSQL keeps a deleted row's index
/// entries until a vacuum, so starting at the first entry walked past every
/// row deleted so far: quadratic, 162 s for 1,000,000 messages in batches of
/// 500 (docs/benchmarks.md, "Closing the scale gaps"). A fresh mark (after a
/// restart) is always right, only slower.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeMark {
    /// The campaign being purged; another one starts from the beginning.
    pub campaign: Option<CampaignId>,
    /// Messages are deleted in contact order; those up to this contact are gone.
    pub messages_through: Option<ContactId>,
    /// Links are deleted in position order; those up to this position are gone.
    pub links_through: i64,
}

/// Message counts of a campaign: `(variant, status, hold rule, count)`.
pub type MessageCounts = Vec<(Variant, MessageStatus, String, u64)>;

/// All of storage: what the API host's roles hold. Each capability is a trait
/// of its own, so a reader sees what a caller can do with it.
pub trait Store: CampaignStore + ContactStore + SendingStore + AuditStore + OpsStore {}

impl<T: CampaignStore + ContactStore + SendingStore + AuditStore + OpsStore> Store for T {}

/// Campaigns (SPEC §3.1). Every write names the campaign's user, so the read
/// cache can invalidate that user's entries.
#[async_trait]
pub trait CampaignStore: Send + Sync + 'static {
    /// Creates the user row on first sight of a token's `sub`.
    async fn ensure_user(&self, user_id: UserId, now: DateTime<Utc>) -> Result<(), StoreError>;
    /// The user's own settings (defaults for a user never seen).
    async fn user_settings(&self, user_id: UserId) -> Result<UserSettings, StoreError>;
    /// Replaces the user's settings (the user row exists: see `ensure_user`).
    async fn set_user_settings(&self, user_id: UserId, settings: &UserSettings) -> Result<(), StoreError>;
    /// Writes a new campaign, and `events` to the outbox in the same transaction.
    async fn insert_campaign(&self, campaign: &Campaign, events: &[Event]) -> Result<(), StoreError>;
    async fn campaign(&self, user_id: UserId, id: CampaignId) -> Result<Option<Campaign>, StoreError>;
    async fn list_campaigns(
        &self,
        user_id: UserId,
        status: Option<CampaignStatus>,
        page: PageRequest,
    ) -> Result<Page<Campaign>, StoreError>;
    /// Writes `campaign` if the stored row is still at `seen_version` (optimistic
    /// concurrency) and moves its version on; false when someone else wrote first.
    /// `events` go to the outbox in the same transaction, only if it lands.
    async fn replace_campaign(
        &self,
        campaign: &Campaign,
        seen_version: i64,
        events: &[Event],
    ) -> Result<bool, StoreError>;
    /// Deletes the campaign if still at `seen_version`: at once for every
    /// read, while [`CampaignStore::purge_deleted`] removes its messages and
    /// contact links in the background. `events` go to the outbox in the same
    /// transaction.
    async fn delete_campaign(
        &self,
        user_id: UserId,
        id: CampaignId,
        seen_version: i64,
        events: &[Event],
    ) -> Result<bool, StoreError>;
    /// A campaign by id whoever owns it (the scheduler works for every user).
    async fn campaign_by_id(&self, id: CampaignId) -> Result<Option<Campaign>, StoreError>;
    /// Active campaigns with queued messages due at `now`, except those
    /// waiting (see [`SendingStore::wait_until`]).
    async fn due_campaigns(&self, now: DateTime<Utc>) -> Result<Vec<Campaign>, StoreError>;
    /// Moves the campaign to `completed` once `total_limit` messages are final.
    async fn complete_if_exhausted(
        &self,
        campaign: &Campaign,
        at: DateTime<Utc>,
    ) -> Result<Option<Campaign>, StoreError>;
    /// Removes up to about `max_rows` rows of a deleted campaign (messages
    /// first, then contact links, then the campaign), each batch its own short
    /// transaction, starting where `mark` says the last batch ended and moving
    /// it on; 0 when no deleted campaign is left to purge.
    async fn purge_deleted(&self, max_rows: u32, mark: &mut PurgeMark) -> Result<u64, StoreError>;
    /// Pauses an active campaign for `reason` (auto-pause).
    async fn pause_campaign(
        &self,
        campaign: &Campaign,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<Campaign>, StoreError>;
}

/// Contacts, their links to campaigns, and consent (SPEC §3.2–3.4, §4).
#[async_trait]
pub trait ContactStore: Send + Sync + 'static {
    /// Creates the user's contacts that do not exist yet and links every one of
    /// them to the campaign, in one transaction: all of it or none of it.
    async fn link_contacts(
        &self,
        user_id: UserId,
        campaign_id: CampaignId,
        batches: ContactBatches,
        now: DateTime<Utc>,
    ) -> Result<LinkOutcome, StoreError>;
    async fn campaign_contacts(&self, campaign_id: CampaignId, page: PageRequest) -> Result<Page<Contact>, StoreError>;
    async fn count_campaign_contacts(&self, campaign_id: CampaignId) -> Result<u64, StoreError>;
    async fn contact(&self, user_id: UserId, id: ContactId) -> Result<Option<Contact>, StoreError>;
    /// Writes `contact` if still at `seen_version` and moves its version on;
    /// records a consent event from `consent`, and `events` in the outbox, in
    /// the same transaction.
    async fn replace_contact(
        &self,
        contact: &Contact,
        seen_version: i64,
        consent: Option<ConsentSource>,
        events: &[Event],
    ) -> Result<bool, StoreError>;
    /// Opts out (or back in) the target's contacts, recording a consent event
    /// with `source` and `detail`; opting out cancels their queued messages.
    /// Returns the contacts that changed and the cancelled messages.
    async fn set_consent(
        &self,
        target: ConsentTarget<'_>,
        opted_out: bool,
        source: ConsentSource,
        detail: &str,
        at: DateTime<Utc>,
    ) -> Result<(Vec<Contact>, Vec<MessageRecord>), StoreError>;
    /// Users who messaged `phone_number` through `carrier` (inbound routing).
    async fn owners_messaged(&self, carrier: &str, phone_number: &str) -> Result<Vec<UserId>, StoreError>;
    /// Cancels the contact's queued messages (it opted out).
    async fn cancel_queued_for(
        &self,
        contact_id: ContactId,
        at: DateTime<Utc>,
    ) -> Result<Vec<MessageRecord>, StoreError>;
}

/// What a batch of results changed, all in one transaction.
#[derive(Debug, Default)]
pub struct AppliedResults {
    /// Messages moved on by their results.
    pub messages: Vec<MessageRecord>,
    /// Contacts opted out because a carrier refused their message (consent
    /// source `carrier`)…
    pub opted_out: Vec<Contact>,
    /// …and their queued messages, cancelled.
    pub cancelled: Vec<MessageRecord>,
}

/// What one batch of a task's queueing did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueStep {
    pub campaign_id: CampaignId,
    /// Messages this batch created.
    pub queued: u64,
    /// Every contact linked when the batch ran has been looked at (or the
    /// campaign reached its `total_limit`, or is gone): the task is queued.
    pub done: bool,
}

/// A counter of `message_counts` that differs from a recount of the messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterDrift {
    pub campaign_id: CampaignId,
    pub task_id: Option<TaskId>,
    pub variant: String,
    pub status: String,
    /// The rule holding the messages counted ('' when none).
    pub hold: String,
    pub counted: i64,
    pub actual: i64,
}

/// Whose consent a change is about.
#[derive(Debug, Clone, Copy)]
pub enum ConsentTarget<'a> {
    /// Every contact messaged at this number through this carrier (inbound keywords).
    Phone { carrier: &'a str, phone_number: &'a str },
    /// One contact (a carrier refused its message: the recipient opted out).
    Contact(ContactId),
}

/// The audit reads (SPEC §4.1) and what a forecast needs.
#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    /// A page of the campaign's messages, in the order contacts were added.
    async fn campaign_messages(
        &self,
        campaign_id: CampaignId,
        filter: MessageFilter,
        page: PageRequest,
    ) -> Result<Page<MessageAudit>, StoreError>;
    /// One of the user's messages with every hold it had.
    async fn message_audit(
        &self,
        user_id: UserId,
        id: MessageId,
    ) -> Result<Option<(MessageAudit, Vec<Hold>)>, StoreError>;
    /// Up to `max` consent changes of the user's contacts after `after`
    /// (time, id), in time order.
    async fn consent_changes(
        &self,
        user_id: UserId,
        filter: &ConsentFilter,
        after: Option<(DateTime<Utc>, uuid::Uuid)>,
        max: u32,
    ) -> Result<Vec<ConsentChange>, StoreError>;
    /// The campaign's recipients still to be handed out, grouped by number
    /// prefix and `timezone` attribute.
    async fn forecast_recipients(&self, campaign_id: CampaignId) -> Result<Vec<RecipientGroup>, StoreError>;
    /// Forgets up to `max` recorded hand-outs older than `before` (no cap
    /// looks that far back); returns how many.
    async fn prune_recipient_sends(&self, before: DateTime<Utc>, max: u32) -> Result<u64, StoreError>;
    /// Messages of the campaign handed out on its local `day` (the daily limit's count).
    async fn handed_on(&self, campaign_id: CampaignId, day: NaiveDate) -> Result<u32, StoreError>;
}

/// Recipients sharing a number prefix and `timezone` attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientGroup {
    pub prefix: String,
    pub timezone: Option<String>,
    pub recipients: u64,
}

/// A user's own settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserSettings {
    /// Off when `None` (the default).
    pub frequency_cap: Option<FrequencyCap>,
}

/// A claim of one campaign's due messages (see [`SendingStore::claim_due`]).
pub struct Claim<'a> {
    pub campaign_id: CampaignId,
    pub user_id: UserId,
    pub daily_limit: i32,
    /// The local day (campaign zone) the daily limit counts.
    pub day: NaiveDate,
    pub max: u32,
    pub now: DateTime<Utc>,
    /// Decides, for each candidate, whether it may go now (SPEC §4.1).
    pub judge: &'a dyn HandOutJudge,
    /// Append the events of skipped messages to the outbox in the claim's
    /// transaction (a remote bus; see `EventOutbox::durable`).
    pub events_in_outbox: bool,
}

/// The rules a claim applies to each candidate message.
pub trait HandOutJudge: Send + Sync {
    /// How far back this recipient's hand-outs matter (a cap applies to
    /// them), or `None` when no cap does: then none are loaded or recorded.
    fn history_needed(&self, message: &ClaimedMessage) -> Option<chrono::Duration>;
    /// The verdict, given the instants this recipient was handed to a
    /// carrier within [`HandOutJudge::history_needed`] (any of the user's campaigns).
    fn judge(&self, message: &ClaimedMessage, history: &[DateTime<Utc>]) -> Verdict;
    /// The rule set version recorded on each message handed out.
    fn rule_set(&self) -> &str;
}

/// What a claim did.
#[derive(Debug, Default)]
pub struct Claimed {
    /// Taken for a hand-off (`sending`), with their new hand-off number.
    pub handed: Vec<ClaimedMessage>,
    /// Put back to wait for their own instant.
    pub held: usize,
    /// Failed at once (over the user's frequency cap, in `skip` mode).
    pub skipped: usize,
    /// Their `message.failed` events, for the outbox's local listeners.
    pub skipped_events: Vec<Event>,
    /// The day's limit had no room left: nothing more goes before the next
    /// local day (unless a postponed hand-off gives its slot back).
    pub day_used_up: bool,
}

/// The sending half of storage (SPEC §1 flow, §4): the outbox of messages.
#[async_trait]
pub trait SendingStore: Send + Sync + 'static {
    /// Creates the send task, `queuing`, if the campaign is active, and
    /// queues its first batch (up to `first` contacts) in the same
    /// transaction; `None` when the campaign is not active (or gone). The rest
    /// is queued by [`SendingStore::queue_batch`].
    async fn start_send(&self, request: &SendRequest, first: u32) -> Result<Option<QueueStep>, StoreError>;
    /// Queues the next contacts of a `queuing` task, looking at up to `max` of
    /// the campaign's contacts past the task's cursor: a `queued` message for
    /// each eligible one (not opted out, no message in this campaign yet,
    /// within `total_limit`), in one transaction with the cursor, so a crash
    /// resumes where the last batch ended. `None` when the task is not queuing.
    async fn queue_batch(&self, task_id: TaskId, max: u32, now: DateTime<Utc>)
    -> Result<Option<QueueStep>, StoreError>;
    /// Tasks still queuing, oldest first (at start: those a crash interrupted).
    async fn queuing_tasks(&self, max: u32) -> Result<Vec<TaskId>, StoreError>;
    async fn task(&self, user_id: UserId, task_id: TaskId) -> Result<Option<TaskReport>, StoreError>;
    /// Leaves the campaign out of [`CampaignStore::due_campaigns`] until
    /// `until` (window closed, or the day's limit used up); any write of the
    /// campaign (a new window or limit, a resume) ends the wait.
    async fn wait_until(&self, campaign_id: CampaignId, until: DateTime<Utc>) -> Result<(), StoreError>;
    /// Looks at up to `max` due messages of the campaign, no more than
    /// `daily_limit` leaves for the local day, oldest first, and asks the
    /// judge about each, in one transaction: those it lets go are taken for a
    /// hand-off and counted for the day (and, when a cap applies to their
    /// recipient, recorded as sent to them); held ones wait until their own
    /// instant with the rule that held them, without using the day's limit;
    /// skipped ones fail with the judge's reason (their events are appended
    /// to the outbox in the same transaction).
    async fn claim_due(&self, claim: &Claim<'_>) -> Result<Claimed, StoreError>;
    /// The messages with these ids (those that still exist).
    async fn messages(&self, ids: &[MessageId]) -> Result<Vec<MessageRecord>, StoreError>;
    /// Messages handed out and still without a result.
    async fn count_in_flight(&self) -> Result<u64, StoreError>;
    /// Hand-offs last touched before `cutoff` and still without a result,
    /// re-stamped at `now` so they are handed out again. With `new_hand_off`
    /// they get a new hand-off number (a fresh job key, and a late result of
    /// the old job is ignored); without it they keep theirs (a job still on the
    /// bus is then recognised as the same one).
    async fn overdue_hand_offs(
        &self,
        cutoff: DateTime<Utc>,
        now: DateTime<Utc>,
        max: u32,
        new_hand_off: bool,
    ) -> Result<Vec<ClaimedMessage>, StoreError>;
    /// Applies dispatcher results; a change whose hand-off is no longer current
    /// is skipped. A carrier's opt-out (`carrier_opt_out`) opts the contact out
    /// and cancels its queued messages in the same transaction.
    async fn apply_changes(&self, changes: &[MessageChange]) -> Result<AppliedResults, StoreError>;
    /// A carrier's delivery receipt, in any order relative to the send result:
    /// it reconciles a message held with an unknown outcome (by the message id
    /// it names), moves a `sent` message on, or is kept until the result
    /// naming its carrier id lands. Idempotent.
    async fn apply_receipt(&self, receipt: &Receipt) -> Result<ReceiptOutcome, StoreError>;
    /// Applies kept receipts whose send result has landed since, and forgets
    /// those received before `forget_before` when given (a write: the periodic
    /// sweep does it, not every batch of results). Returns the messages that changed.
    async fn apply_early_receipts(
        &self,
        forget_before: Option<DateTime<Utc>>,
    ) -> Result<Vec<MessageRecord>, StoreError>;
    /// Fails (reason `unknown_outcome`) up to `max` messages held with an
    /// unknown outcome since before `cutoff`.
    async fn expire_unknown_outcomes(
        &self,
        cutoff: DateTime<Utc>,
        at: DateTime<Utc>,
        max: u32,
    ) -> Result<Vec<MessageRecord>, StoreError>;
}

/// Running the store, counting for operators, and the events outbox.
#[async_trait]
pub trait OpsStore: Send + Sync + 'static {
    /// Which backend this is, for logs and `/readyz`.
    fn backend(&self) -> &'static str;
    async fn migrate(&self) -> Result<(), StoreError>;
    async fn ping(&self) -> Result<(), StoreError>;
    async fn close(&self);
    async fn message_counts(&self, campaign_id: CampaignId) -> Result<MessageCounts, StoreError>;
    /// Messages of every campaign by status, for `/metrics`.
    async fn messages_by_status(&self) -> Result<Vec<(MessageStatus, u64)>, StoreError>;
    /// Recounts every campaign's messages and compares them with the kept
    /// counters; with `repair`, replaces the counters that drifted by the
    /// recount. Returns the drift found (empty: the counters are right).
    async fn verify_counters(&self, repair: bool) -> Result<Vec<CounterDrift>, StoreError>;
    /// Appends events to the outbox, in order, all or none.
    async fn enqueue_events(&self, events: &[Event]) -> Result<(), StoreError>;
    /// Up to `max` of the oldest events in the outbox, with their position.
    async fn outbox_events(&self, max: u32) -> Result<Vec<(i64, Event)>, StoreError>;
    /// Removes outbox events the bus has confirmed.
    async fn forget_events(&self, positions: &[i64]) -> Result<(), StoreError>;
}

/// Makes this process the only one using the database at `url`, for as long
/// as the returned lock lives: SQLite only (see [`sqlite::lock`]); PostgreSQL
/// serves several api hosts.
pub fn lock_exclusive(url: &str) -> Result<Option<sqlite::DatabaseLock>, StoreError> {
    match url.starts_with("sqlite:") {
        true => sqlite::lock(url),
        false => Ok(None),
    }
}

/// Opens the store named by the configuration URL. The embedded SQLite store
/// gets a read cache (one process owns the file); PostgreSQL, which several API
/// hosts may share, does not.
pub async fn connect(url: &str, config: &DatabaseConfig) -> Result<Arc<dyn Store>, StoreError> {
    let store: Arc<dyn Store> = if url.starts_with("sqlite:") {
        Arc::new(
            sqlite::connect(
                url,
                config.max_connections,
                config.sqlite_cache_mib,
                ReadCache::enabled(),
            )
            .await?,
        )
    } else {
        Arc::new(postgres::connect(url, config.max_connections).await?)
    };
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two writes from one read, in the same clock tick: the second is refused,
    /// where a compare on `updated_at` would have let it overwrite the first;
    /// only the write that landed leaves its event in the outbox.
    #[tokio::test]
    async fn a_write_from_a_stale_read_is_refused_within_one_clock_tick() {
        let (store, _, read) = sqlite::with_a_campaign().await;
        let (user, now) = (read.user_id, Utc::now());

        let renamed = Campaign {
            name: "Renamed".into(),
            ..read.clone()
        };
        let limited = Campaign {
            daily_limit: 7,
            ..read.clone()
        };
        let event = |c: &Campaign| crate::bus::event::build::campaign("updated", c, None, now);
        let landed = event(&renamed);
        assert!(
            store
                .replace_campaign(&renamed, read.version, std::slice::from_ref(&landed))
                .await
                .unwrap()
        );
        assert!(
            !store
                .replace_campaign(&limited, read.version, &[event(&limited)])
                .await
                .unwrap(),
            "a write based on the version before the first must not land"
        );
        assert!(!store.delete_campaign(user, read.id, read.version, &[]).await.unwrap());
        let stored = store.campaign(user, read.id).await.unwrap().unwrap();
        assert_eq!(stored.updated_at, read.updated_at, "the clock did not move");
        assert_eq!(
            (stored.name.as_str(), stored.daily_limit, stored.version),
            ("Renamed", read.daily_limit, read.version + 1)
        );
        let outbox: Vec<Event> = store
            .outbox_events(10)
            .await
            .unwrap()
            .into_iter()
            .map(|(_, e)| e)
            .collect();
        assert_eq!(outbox, vec![landed]);
    }

    #[tokio::test]
    async fn the_outbox_gives_events_back_in_order_until_forgotten() {
        let store = sqlite::connect("sqlite::memory:", 1, 16, ReadCache::disabled())
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let (user, now) = (
            Some(UserId::new()),
            crate::clock::Clock::now(&crate::clock::SystemClock),
        );
        let events: Vec<Event> = (0..3)
            .map(|i| Event::new(user, "campaign", "created", i, now, serde_json::json!({ "n": i })))
            .collect();
        store.enqueue_events(&events).await.unwrap();
        let waiting = store.outbox_events(10).await.unwrap();
        let back: Vec<Event> = waiting.iter().map(|(_, e)| e.clone()).collect();
        assert_eq!(back, events, "the same events, in order");

        store.forget_events(&[waiting[0].0, waiting[1].0]).await.unwrap();
        let left = store.outbox_events(10).await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].1.id, events[2].id);
    }
}
