//! Contacts, their links to campaigns, and consent.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use const_format::concatcp;
use sqlx::types::Json;
use sqlx::{ColumnIndex, Executor};
use uuid::Uuid;

use super::{Bind, CONTACT_COLUMNS, COUNT_CAMPAIGN_CONTACTS, Column, Dialect, RECORD_CONSENT, RowsAffected, SqlStore};
use crate::bus::event::Event;
use crate::domain::contact::{Attributes, ConsentSource, Contact};
use crate::domain::ids::{CampaignId, ContactId, UserId};
use crate::domain::message::MessageRecord;
use crate::domain::page::{Page, PageRequest};
use crate::store::columns::Nullable;
use crate::store::{ConsentTarget, ContactBatches, ContactStore, LinkOutcome, StoreError};

#[async_trait]
impl<DB> ContactStore for SqlStore<DB>
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
    async fn link_contacts(
        &self,
        user_id: UserId,
        campaign_id: CampaignId,
        batches: ContactBatches,
        now: DateTime<Utc>,
    ) -> Result<LinkOutcome, StoreError> {
        // Bulk writes are where the databases differ most (COPY on PostgreSQL).
        DB::bulk_link(&self.pool, user_id, campaign_id, batches, now).await
    }

    async fn campaign_contacts(&self, campaign_id: CampaignId, page: PageRequest) -> Result<Page<Contact>, StoreError> {
        // Positions are 1, 2, 3… without gaps: page N is a range of the
        // (campaign_id, position) index, as cheap at the last page as at the
        // first (EXPLAIN: campaign_contacts_by_position range + contacts key).
        let first = page.offset();
        let items: Vec<Contact> = sqlx::query_as(concatcp!(
            "SELECT ",
            CONTACT_COLUMNS,
            " FROM campaign_contacts l JOIN contacts c ON c.id = l.contact_id \
             WHERE l.campaign_id = $1 AND l.position > $2 AND l.position <= $3 ORDER BY l.position"
        ))
        .bind(campaign_id)
        .bind(first)
        .bind(first.saturating_add(i64::from(page.per_page)))
        .fetch_all(&self.pool)
        .await?;
        let total = self.count_campaign_contacts(campaign_id).await?;
        Ok(Page { items, total })
    }

    async fn count_campaign_contacts(&self, campaign_id: CampaignId) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(COUNT_CAMPAIGN_CONTACTS)
            .bind(campaign_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }

    async fn contact(&self, user_id: UserId, id: ContactId) -> Result<Option<Contact>, StoreError> {
        Ok(sqlx::query_as(concatcp!(
            "SELECT ",
            CONTACT_COLUMNS,
            " FROM contacts c WHERE c.id = $1 AND c.user_id = $2"
        ))
        .bind(id)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn replace_contact(
        &self,
        contact: &Contact,
        seen_version: i64,
        consent: Option<ConsentSource>,
        events: &[Event],
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE contacts SET name = $3, attributes = $4, opted_out = $5, updated_at = $6, \
             version = version + 1 WHERE id = $1 AND user_id = $2 AND version = $7",
        )
        .bind(contact.id)
        .bind(contact.user_id)
        .bind(contact.name.as_str())
        .bind(Json(&contact.attributes))
        .bind(contact.opted_out)
        .bind(contact.updated_at)
        .bind(seen_version)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        if let Some(source) = consent {
            sqlx::query(RECORD_CONSENT)
                .bind(Uuid::now_v7())
                .bind(contact.id)
                .bind(contact.opted_out)
                .bind(source)
                .bind(Nullable(None::<&str>))
                .bind(contact.updated_at)
                .execute(&mut *tx)
                .await?;
        }
        Self::append_events(&mut *tx, events).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn set_consent(
        &self,
        target: ConsentTarget<'_>,
        opted_out: bool,
        source: ConsentSource,
        detail: &str,
        at: DateTime<Utc>,
    ) -> Result<(Vec<Contact>, Vec<MessageRecord>), StoreError> {
        let mut tx = self.pool.begin().await?;
        let changed = Self::set_consent_in(&mut tx, target, opted_out, source, detail, at).await?;
        tx.commit().await?;
        Ok(changed)
    }

    async fn owners_messaged(&self, carrier: &str, phone_number: &str) -> Result<Vec<UserId>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT c.user_id FROM messages m JOIN campaigns c ON c.id = m.campaign_id \
             WHERE m.carrier = $1 AND m.phone_number = $2",
        )
        .bind(carrier)
        .bind(phone_number)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn cancel_queued_for(
        &self,
        contact_id: ContactId,
        at: DateTime<Utc>,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Self::cancel_queued(&mut conn, contact_id, at).await
    }
}
