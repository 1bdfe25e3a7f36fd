//! Running the store, counting for operators, and the events outbox.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::types::Json;
use sqlx::{ColumnIndex, Executor, QueryBuilder};
use uuid::Uuid;

use super::{Bind, Column, Dialect, ROWS_PER_STATEMENT, SqlStore, push_list};
use crate::bus::event::Event;
use crate::domain::contact::Attributes;
use crate::domain::ids::{CampaignId, UserId};
use crate::domain::message::MessageStatus;
use crate::domain::variant::Variant;
use crate::store::{MessageCounts, OpsStore, StoreError};

/// An event waiting in `event_outbox`.
#[derive(sqlx::FromRow)]
struct OutboxRow {
    seq: i64,
    id: Uuid,
    owner: Option<UserId>,
    entity: String,
    action: String,
    subject: String,
    time: DateTime<Utc>,
    data: String,
}

impl TryFrom<OutboxRow> for (i64, Event) {
    type Error = StoreError;

    fn try_from(r: OutboxRow) -> Result<Self, StoreError> {
        let data = serde_json::from_str(&r.data)
            .map_err(|e| StoreError::Corrupt(format!("outbox event {}: bad data: {e}", r.id)))?;
        let event = Event {
            id: r.id,
            owner: r.owner,
            entity: r.entity.into(),
            action: r.action.into(),
            subject: r.subject,
            time: r.time,
            data,
        };
        Ok((r.seq, event))
    }
}

#[async_trait]
impl<DB> OpsStore for SqlStore<DB>
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
    fn backend(&self) -> &'static str {
        DB::BACKEND
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        DB::run_migrations(&self.pool).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    async fn message_counts(&self, campaign_id: CampaignId) -> Result<MessageCounts, StoreError> {
        let rows: Vec<(Variant, MessageStatus, i64)> = sqlx::query_as(
            "SELECT variant, status, COUNT(*) FROM messages WHERE campaign_id = $1 GROUP BY variant, status",
        )
        .bind(campaign_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(v, s, n)| (v, s, n as u64)).collect())
    }

    async fn messages_by_status(&self) -> Result<Vec<(MessageStatus, u64)>, StoreError> {
        let rows: Vec<(MessageStatus, i64)> = sqlx::query_as("SELECT status, COUNT(*) FROM messages GROUP BY status")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|(s, n)| (s, n as u64)).collect())
    }

    async fn enqueue_events(&self, events: &[Event]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        Self::append_events(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn outbox_events(&self, max: u32) -> Result<Vec<(i64, Event)>, StoreError> {
        let rows: Vec<OutboxRow> = sqlx::query_as(
            "SELECT seq, id, owner, entity, action, subject, time, data FROM event_outbox ORDER BY seq LIMIT $1",
        )
        .bind(i64::from(max))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    async fn forget_events(&self, positions: &[i64]) -> Result<(), StoreError> {
        for chunk in positions.chunks(ROWS_PER_STATEMENT) {
            let mut delete = QueryBuilder::<DB>::new("DELETE FROM event_outbox WHERE seq IN ");
            push_list(&mut delete, chunk);
            delete.build().execute(&self.pool).await?;
        }
        Ok(())
    }
}
