//! The one [`Store`](super::Store) implementation: [`SqlStore`] over either
//! database, running the same statements on both.
//!
//! SQLite and PostgreSQL accept the same SQL here (`$N` placeholders in order,
//! `ON CONFLICT`, `RETURNING`, scalar subqueries, CTEs, row-value `SET`), so the
//! capability traits are implemented once, generically over a [`Dialect`]. A
//! dialect supplies what really differs: connecting, migrations and the bulk
//! contact writer (multi-row statements on SQLite, COPY on PostgreSQL).
//!
//! Each capability lives in its own file (`campaigns.rs`, `contacts.rs`,
//! `sending.rs`, `ops.rs`). sqlx states what a database can bind and decode
//! per Rust type, and Rust does not carry a trait's where-clauses to its users,
//! so every generic impl block names the same bounds; they are listed once,
//! in [`Dialect`]'s docs, and kept in the same order everywhere.

mod audit;
mod campaigns;
mod contacts;
mod ops;
mod sending;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use const_format::concatcp;
use sqlx::types::Json;
use sqlx::{ColumnIndex, Database, Executor, Pool, QueryBuilder};
use uuid::Uuid;

use super::cache::ReadCache;
use super::columns::Nullable;
use super::{ConsentTarget, ContactBatches, LinkOutcome, StoreError};
use crate::bus::event::Event;
use crate::domain::contact::{Attributes, ConsentSource, Contact};
use crate::domain::ids::{CampaignId, ContactId, MessageId, TaskId, UserId};
use crate::domain::message::{MessageRecord, MessageStatus, Receipt};
use crate::domain::variant::Variant;

/// What a database must do beyond the shared SQL. The shared code also needs,
/// written on every generic impl (Rust cannot imply them):
///
/// ```text
/// for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,  // run statements
/// for<'a> &'a str: Bind<'a, DB>, for<'a> Json<&'a Attributes>: Bind<'a, DB>,
/// Uuid, String, i32, i64, bool, DateTime<Utc>, NaiveDate, Json<Attributes>: Column<DB>,
/// usize, &str: ColumnIndex<DB::Row>                                  // decode rows
/// ```
#[async_trait]
pub trait Dialect:
    Database<Arguments: sqlx::IntoArguments<Self> + Default, QueryResult: RowsAffected> + sqlx::database::HasStatementCache
{
    /// `sqlite` or `postgres`, for logs and `/readyz`.
    const BACKEND: &'static str;
    /// Takes, in a transaction, a lock that holds off every write of
    /// `message_counts` (the triggers' included) until it ends.
    const LOCK_COUNTERS: &'static str;
    /// Returns a row when campaign `$1` exists, is neither deleted nor
    /// completed (it takes links and messages); holds it against a delete until the transaction
    /// ends, so rows written under it (links, messages) are never left
    /// behind by a purge that finished first.
    const LOCK_LIVE_CAMPAIGN: &'static str;
    /// Takes, in a transaction, a lock on user `$1`'s hand-out history until it
    /// ends, so claims of the user's campaigns read and extend it in turn.
    const LOCK_USER_HAND_OUTS: &'static str;
    /// The `timezone` attribute of contact `k` (text, or NULL).
    const CONTACT_TIMEZONE: &'static str;

    async fn run_migrations(pool: &Pool<Self>) -> Result<(), StoreError>;

    /// Creates the user's contacts that are new and links every one to the
    /// campaign in file order, in one transaction that commits only at the end.
    async fn bulk_link(
        pool: &Pool<Self>,
        user_id: UserId,
        campaign_id: CampaignId,
        batches: ContactBatches,
        now: DateTime<Utc>,
    ) -> Result<LinkOutcome, StoreError>;

    /// Inserts one queueing batch's messages, in the caller's transaction,
    /// skipping contacts that have a message in the campaign already; returns
    /// how many were created.
    async fn insert_queued(conn: &mut Self::Connection, messages: &NewMessages<'_>) -> Result<u64, StoreError>;
}

/// The messages of one queueing batch: `queued`, of one task, carrier and
/// instant; rows differ in id, contact, variant and phone number.
pub struct NewMessages<'a> {
    pub campaign_id: CampaignId,
    pub task_id: TaskId,
    pub carrier: &'a str,
    pub not_before: DateTime<Utc>,
    pub now: DateTime<Utc>,
    pub rows: Vec<(MessageId, ContactId, Variant, &'a str)>,
}

/// A type the database stores in one column: binds as a parameter, decodes from a row.
pub trait Column<DB: Database>: for<'q> sqlx::Encode<'q, DB> + for<'r> sqlx::Decode<'r, DB> + sqlx::Type<DB> {}

impl<DB: Database, T> Column<DB> for T where
    T: for<'q> sqlx::Encode<'q, DB> + for<'r> sqlx::Decode<'r, DB> + sqlx::Type<DB>
{
}

/// A borrowed value the database binds as a parameter.
pub trait Bind<'a, DB: Database>: sqlx::Encode<'a, DB> + sqlx::Type<DB> {}

impl<'a, DB: Database, T> Bind<'a, DB> for T where T: sqlx::Encode<'a, DB> + sqlx::Type<DB> {}

/// `rows_affected`, which sqlx has per database rather than on a trait.
pub trait RowsAffected {
    fn rows_affected(&self) -> u64;
}

impl RowsAffected for sqlx::sqlite::SqliteQueryResult {
    fn rows_affected(&self) -> u64 {
        self.rows_affected()
    }
}

impl RowsAffected for sqlx::postgres::PgQueryResult {
    fn rows_affected(&self) -> u64 {
        self.rows_affected()
    }
}

/// Storage over one database pool. `cache` holds campaign reads when this
/// process is the only writer (the embedded SQLite store).
pub struct SqlStore<DB: Database> {
    pool: Pool<DB>,
    cache: ReadCache,
}

impl<DB: Database> SqlStore<DB> {
    pub(super) fn new(pool: Pool<DB>, cache: ReadCache) -> Self {
        Self { pool, cache }
    }
}

/// Rows per multi-row statement: well under either database's parameter limit.
///
/// Multi-row statements (`QueryBuilder`) run with `persistent(false)`: their
/// text changes with the number of rows, and each variant kept in a
/// connection's statement cache held a prepared plan of thousands of
/// parameters, per connection: resident memory grew with every batch size
/// seen, to hundreds of MiB through a million-message campaign.
pub(super) const ROWS_PER_STATEMENT: usize = 500;

/// Counts the contacts linked to a campaign: the count the bulk writers keep
/// in `campaign_sizes`, one key lookup. Shared by both bulk writers.
pub(super) const COUNT_CAMPAIGN_CONTACTS: &str =
    "SELECT CAST(COALESCE((SELECT contacts FROM campaign_sizes WHERE campaign_id = $1), 0) AS BIGINT)";

/// Adds `$2` newly linked contacts to campaign `$1`'s count, in the link's transaction.
pub(super) const ADD_TO_CAMPAIGN_SIZE: &str = "INSERT INTO campaign_sizes (campaign_id, contacts) VALUES ($1, $2) \
     ON CONFLICT (campaign_id) DO UPDATE SET contacts = campaign_sizes.contacts + excluded.contacts";

/// Appends `(id, id, ...)`.
fn push_list<'a, DB, T>(builder: &mut QueryBuilder<DB>, values: &'a [T])
where
    DB: Database,
    T: Bind<'a, DB> + Copy,
{
    builder.push("(");
    let mut list = builder.separated(", ");
    for value in values {
        list.push_bind(*value);
    }
    list.push_unseparated(")");
}

/// Columns of [`MessageRecord`], for `RETURNING` and `SELECT` on `messages`.
const MESSAGE_COLUMNS: &str = "messages.id, \
     (SELECT user_id FROM campaigns WHERE campaigns.id = messages.campaign_id) AS user_id, \
     messages.campaign_id, messages.contact_id, messages.variant, messages.status, messages.carrier, \
     messages.carrier_message_id, messages.segments, messages.attempts, messages.last_error AS error, \
     messages.not_before, messages.hand_offs AS hand_off";

/// Records one change of a contact's consent.
pub(super) const RECORD_CONSENT: &str = "INSERT INTO consent_events (id, contact_id, opted_out, source, detail, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6)";

/// Columns of [`Contact`] on `contacts c`.
const CONTACT_COLUMNS: &str =
    "c.id, c.user_id, c.phone_number, c.name, c.opted_out, c.attributes, c.created_at, c.updated_at, c.version";

/// Statements that run inside a caller's transaction, shared by capabilities.
impl<DB> SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> &'a str: Bind<'a, DB> + ColumnIndex<DB::Row>,
    for<'a> Json<&'a Attributes>: Bind<'a, DB>,
    Uuid: Column<DB>,
    String: Column<DB>,
    i32: Column<DB>,
    i64: Column<DB>,
    bool: Column<DB>,
    DateTime<Utc>: Column<DB>,
    NaiveDate: Column<DB>,
    Json<Attributes>: Column<DB>,
    usize: ColumnIndex<DB::Row>,
{
    /// Ends an optimistic write: when it touched its row (`landed`), commits it
    /// with its events; otherwise rolls it back. Returns `landed`.
    async fn land(mut tx: sqlx::Transaction<'static, DB>, landed: bool, events: &[Event]) -> Result<bool, StoreError> {
        if !landed {
            return Ok(false);
        }
        Self::append_events(&mut tx, events).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Appends events to the outbox.
    async fn append_events(conn: &mut DB::Connection, events: &[Event]) -> Result<(), StoreError> {
        for chunk in events.chunks(ROWS_PER_STATEMENT) {
            let mut insert =
                QueryBuilder::<DB>::new("INSERT INTO event_outbox (id, owner, entity, action, subject, time, data) ");
            insert.push_values(chunk, |mut row, e| {
                row.push_bind(e.id)
                    .push_bind(Nullable(e.owner))
                    .push_bind(e.entity.to_string())
                    .push_bind(e.action.to_string())
                    .push_bind(e.subject.as_str())
                    .push_bind(e.time)
                    .push_bind(e.data.to_string());
            });
            insert.build().persistent(false).execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// Opts the target's contacts out (or in) inside the caller's transaction,
    /// recording a consent event each; opting out cancels their queued messages.
    async fn set_consent_in(
        conn: &mut DB::Connection,
        target: ConsentTarget<'_>,
        opted_out: bool,
        source: ConsentSource,
        detail: &str,
        at: DateTime<Utc>,
    ) -> Result<(Vec<Contact>, Vec<MessageRecord>), StoreError> {
        let ids: Vec<ContactId> = match target {
            ConsentTarget::Phone { carrier, phone_number } => {
                sqlx::query_scalar(
                    "UPDATE contacts SET opted_out = $3, updated_at = $4, version = version + 1 \
                     WHERE opted_out <> $3 AND id IN \
                     (SELECT contact_id FROM messages WHERE carrier = $1 AND phone_number = $2) RETURNING id",
                )
                .bind(carrier)
                .bind(phone_number)
                .bind(opted_out)
                .bind(at)
                .fetch_all(&mut *conn)
                .await?
            }
            ConsentTarget::Contact(id) => {
                sqlx::query_scalar(
                    "UPDATE contacts SET opted_out = $2, updated_at = $3, version = version + 1 \
                     WHERE opted_out <> $2 AND id = $1 RETURNING id",
                )
                .bind(id)
                .bind(opted_out)
                .bind(at)
                .fetch_all(&mut *conn)
                .await?
            }
        };
        let mut contacts = Vec::with_capacity(ids.len());
        let mut cancelled = Vec::new();
        for &id in &ids {
            sqlx::query(RECORD_CONSENT)
                .bind(Uuid::now_v7())
                .bind(id)
                .bind(opted_out)
                .bind(source)
                .bind(Nullable(Some(detail)))
                .bind(at)
                .execute(&mut *conn)
                .await?;
            let contact: Contact = sqlx::query_as(concatcp!(
                "SELECT ",
                CONTACT_COLUMNS,
                " FROM contacts c WHERE c.id = $1"
            ))
            .bind(id)
            .fetch_one(&mut *conn)
            .await?;
            contacts.push(contact);
            if opted_out {
                cancelled.extend(Self::cancel_queued(&mut *conn, id, at).await?);
            }
        }
        Ok((contacts, cancelled))
    }

    /// Fails the contact's queued messages: it opted out.
    async fn cancel_queued(
        conn: &mut DB::Connection,
        contact_id: ContactId,
        at: DateTime<Utc>,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        Ok(sqlx::query_as(concatcp!(
            "UPDATE messages SET status = 'failed', last_error = 'opted_out', updated_at = $2 \
             WHERE contact_id = $1 AND status = 'queued' RETURNING ",
            MESSAGE_COLUMNS
        ))
        .bind(contact_id)
        .bind(at)
        .fetch_all(&mut *conn)
        .await?)
    }

    /// Reconciles a send whose outcome was unknown with a receipt naming
    /// its message: the carrier has it, under this id.
    async fn reconcile_unknown(
        conn: &mut DB::Connection,
        receipt: &Receipt,
    ) -> Result<Option<MessageRecord>, StoreError> {
        let Some(message_id) = receipt.message_id else {
            return Ok(None);
        };
        Ok(sqlx::query_as(concatcp!(
            "UPDATE messages SET status = $3, carrier_message_id = $4, outcome_unknown_at = NULL, \
             last_error = $5, sent_at = CASE WHEN $3 IN ('sent', 'delivered') THEN $6 ELSE sent_at END, \
             delivered_at = CASE WHEN $3 = 'delivered' THEN $6 ELSE delivered_at END, updated_at = $6 \
             WHERE id = $1 AND carrier = $2 AND status = 'sending' AND outcome_unknown_at IS NOT NULL \
             RETURNING ",
            MESSAGE_COLUMNS
        ))
        .bind(message_id)
        .bind(receipt.carrier.as_str())
        .bind(receipt.status)
        .bind(receipt.carrier_message_id.as_str())
        .bind(Nullable(receipt.error.as_deref()))
        .bind(receipt.at)
        .fetch_optional(&mut *conn)
        .await?)
    }

    /// Moves a `sent` message on by a delivery or failure receipt.
    async fn apply_receipt_to_sent(
        conn: &mut DB::Connection,
        receipt: &Receipt,
    ) -> Result<Option<MessageRecord>, StoreError> {
        if receipt.status == MessageStatus::Sent {
            return Ok(None);
        }
        let delivered_at = (receipt.status == MessageStatus::Delivered).then_some(receipt.at);
        Ok(sqlx::query_as(concatcp!(
            "UPDATE messages SET status = $3, last_error = COALESCE($4, last_error), \
             delivered_at = COALESCE($5, delivered_at), updated_at = $6 \
             WHERE carrier = $1 AND carrier_message_id = $2 AND status = 'sent' RETURNING ",
            MESSAGE_COLUMNS
        ))
        .bind(receipt.carrier.as_str())
        .bind(receipt.carrier_message_id.as_str())
        .bind(receipt.status)
        .bind(Nullable(receipt.error.as_deref()))
        .bind(Nullable(delivered_at))
        .bind(receipt.at)
        .fetch_optional(&mut *conn)
        .await?)
    }
}
