//! Storage: one [`Store`] interface, implemented for SQLite (embedded default) and
//! PostgreSQL. Both run the same SQL (see `sql.rs`); only connecting and a few
//! dialect details differ. Knows nothing of HTTP.

mod cache;
mod rows;
mod sql;

pub mod postgres;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::config::DatabaseConfig;
use crate::domain::campaign::{Campaign, CampaignStatus};
use crate::domain::contact::{ConsentSource, Contact, NewContact};
use crate::domain::page::{Page, PageRequest};

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

/// Message counts of a campaign: `(variant, status, count)`.
pub type MessageCounts = Vec<(String, String, u64)>;

/// Storage operations. Every write to a campaign must go through a method that
/// names the campaign's user, so the read cache (`cache.rs`) can invalidate it.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which backend this is, for logs and `/readyz`.
    fn backend(&self) -> &'static str;
    async fn migrate(&self) -> Result<(), StoreError>;
    async fn ping(&self) -> Result<(), StoreError>;
    async fn close(&self);

    /// Creates the user row on first sight of a token's `sub`.
    async fn ensure_user(&self, user_id: Uuid, now: DateTime<Utc>) -> Result<(), StoreError>;

    async fn insert_campaign(&self, campaign: &Campaign) -> Result<(), StoreError>;
    async fn campaign(&self, user_id: Uuid, id: Uuid) -> Result<Option<Campaign>, StoreError>;
    async fn list_campaigns(
        &self,
        user_id: Uuid,
        status: Option<CampaignStatus>,
        page: PageRequest,
    ) -> Result<Page<Campaign>, StoreError>;
    /// Writes `campaign` if it is still as it was at `seen_updated_at`
    /// (optimistic concurrency); false when someone else changed it first.
    async fn replace_campaign(&self, campaign: &Campaign, seen_updated_at: DateTime<Utc>) -> Result<bool, StoreError>;
    /// Deletes the campaign, its messages and contact links, if unchanged since
    /// `seen_updated_at`.
    async fn delete_campaign(
        &self,
        user_id: Uuid,
        id: Uuid,
        seen_updated_at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Creates the user's contacts that do not exist yet and links every one of
    /// them to the campaign, in one transaction: all of it or none of it.
    async fn link_contacts(
        &self,
        user_id: Uuid,
        campaign_id: Uuid,
        batches: ContactBatches,
        now: DateTime<Utc>,
    ) -> Result<LinkOutcome, StoreError>;
    async fn campaign_contacts(&self, campaign_id: Uuid, page: PageRequest) -> Result<Page<Contact>, StoreError>;
    async fn count_campaign_contacts(&self, campaign_id: Uuid) -> Result<u64, StoreError>;
    async fn contact(&self, user_id: Uuid, id: Uuid) -> Result<Option<Contact>, StoreError>;
    /// Writes `contact` if unchanged since `seen_updated_at`; records a consent
    /// event from `consent` in the same transaction.
    async fn replace_contact(
        &self,
        contact: &Contact,
        seen_updated_at: DateTime<Utc>,
        consent: Option<ConsentSource>,
    ) -> Result<bool, StoreError>;

    async fn message_counts(&self, campaign_id: Uuid) -> Result<MessageCounts, StoreError>;
    /// Messages of every campaign by status, for `/metrics`.
    async fn messages_by_status(&self) -> Result<Vec<(String, u64)>, StoreError>;
}

/// Opens the store named by the configuration URL. The embedded SQLite store
/// gets a read cache (one process owns the file); PostgreSQL, which several API
/// hosts may share, does not.
pub async fn connect(url: &str, config: &DatabaseConfig) -> Result<Arc<dyn Store>, StoreError> {
    let store: Arc<dyn Store> = if url.starts_with("sqlite:") {
        let sqlite = Arc::new(sqlite::SqliteStore::connect(url, config.max_connections).await?);
        Arc::new(cache::CachedStore::new(sqlite))
    } else {
        Arc::new(postgres::PostgresStore::connect(url, config.max_connections).await?)
    };
    Ok(store)
}
