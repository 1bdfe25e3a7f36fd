//! Running the store, counting for operators, and the events outbox.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::types::Json;
use sqlx::{ColumnIndex, Executor, QueryBuilder};
use uuid::Uuid;

use super::{Bind, Column, Dialect, ROWS_PER_STATEMENT, SqlStore, push_list};
use crate::bus::event::Event;
use crate::domain::contact::Attributes;
use crate::domain::ids::{CampaignId, TaskId, UserId};
use crate::domain::message::MessageStatus;
use crate::domain::variant::Variant;
use crate::store::{CounterDrift, MessageCounts, OpsStore, StoreError};

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
        // A few counter rows per task (primary key prefix), not the messages.
        let rows: Vec<(Variant, MessageStatus, String, i64)> = sqlx::query_as(
            "SELECT variant, status, hold, CAST(SUM(n) AS BIGINT) FROM message_counts WHERE campaign_id = $1 \
             GROUP BY variant, status, hold",
        )
        .bind(campaign_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(v, s, h, n)| (v, s, h, n.max(0) as u64))
            .collect())
    }

    async fn messages_by_status(&self) -> Result<Vec<(MessageStatus, u64)>, StoreError> {
        // One row per campaign, task, variant and status: a full read of the
        // counters, whose size follows the number of tasks, not of messages.
        let rows: Vec<(MessageStatus, i64)> =
            sqlx::query_as("SELECT status, CAST(SUM(n) AS BIGINT) FROM message_counts GROUP BY status")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|(s, n)| (s, n.max(0) as u64)).collect())
    }

    async fn verify_counters(&self, repair: bool) -> Result<Vec<CounterDrift>, StoreError> {
        let mut drift = Vec::new();
        let mut after = CampaignId::from(Uuid::nil());
        loop {
            // Campaigns one at a time, each in one transaction: the counters
            // and the recount are read together (a message change and its
            // counter change commit together, so they agree in one snapshot).
            let next: Option<CampaignId> =
                sqlx::query_scalar("SELECT id FROM campaigns WHERE id > $1 ORDER BY id LIMIT 1")
                    .bind(after)
                    .fetch_optional(&self.pool)
                    .await?;
            let Some(campaign_id) = next else { break };
            after = campaign_id;
            let mut tx = self.pool.begin().await?;
            if repair {
                // Repairing: hold off every counter write until the repair commits.
                sqlx::query(DB::LOCK_COUNTERS).execute(&mut *tx).await?;
            }
            let found = Self::counter_drift(&mut tx, campaign_id).await?;
            if repair && !found.is_empty() {
                for d in &found {
                    sqlx::query(
                        "INSERT INTO message_counts (campaign_id, task_id, variant, status, hold, n) \
                         VALUES ($1, $2, $3, $4, $5, $6) \
                         ON CONFLICT (campaign_id, task_id, variant, status, hold) DO UPDATE SET n = excluded.n",
                    )
                    .bind(d.campaign_id)
                    .bind(d.task_id.map_or(Uuid::nil(), |t| t.as_uuid()))
                    .bind(d.variant.as_str())
                    .bind(d.status.as_str())
                    .bind(d.hold.as_str())
                    .bind(d.actual)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            tx.commit().await?;
            drift.extend(found);
        }
        Ok(drift)
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
            delete.build().persistent(false).execute(&self.pool).await?;
        }
        Ok(())
    }
}

impl<DB> SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> &'a str: Bind<'a, DB> + ColumnIndex<DB::Row>,
    Uuid: Column<DB>,
    String: Column<DB>,
    i64: Column<DB>,
    usize: ColumnIndex<DB::Row>,
{
    /// The counters of one campaign that differ from a recount of its messages.
    async fn counter_drift(
        conn: &mut DB::Connection,
        campaign_id: CampaignId,
    ) -> Result<Vec<CounterDrift>, StoreError> {
        let rows: Vec<(Uuid, String, String, String, i64, i64)> = sqlx::query_as(
            "WITH actual AS (SELECT COALESCE(task_id, $2) AS task_id, variant, status, hold_rule AS hold, COUNT(*) AS n \
             FROM messages WHERE campaign_id = $1 GROUP BY COALESCE(task_id, $2), variant, status, hold_rule), \
             counted AS (SELECT task_id, variant, status, hold, n FROM message_counts WHERE campaign_id = $1) \
             SELECT COALESCE(a.task_id, c.task_id), COALESCE(a.variant, c.variant), COALESCE(a.status, c.status), \
             COALESCE(a.hold, c.hold), CAST(COALESCE(c.n, 0) AS BIGINT), CAST(COALESCE(a.n, 0) AS BIGINT) \
             FROM actual a FULL OUTER JOIN counted c \
             ON a.task_id = c.task_id AND a.variant = c.variant AND a.status = c.status AND a.hold = c.hold \
             WHERE COALESCE(a.n, 0) <> COALESCE(c.n, 0)",
        )
        .bind(campaign_id)
        .bind(Uuid::nil())
        .fetch_all(&mut *conn)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(task_id, variant, status, hold, counted, actual)| CounterDrift {
                campaign_id,
                task_id: (!task_id.is_nil()).then(|| TaskId::from(task_id)),
                variant,
                status,
                hold,
                counted,
                actual,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use crate::domain::ids::{ContactId, MessageId};
    use crate::domain::message::MessageStatus;
    use crate::domain::variant::Variant;
    use crate::store::{OpsStore, sqlite};

    /// The triggers count a message's insert, status change and delete; a
    /// counter changed behind their back is reported as drift and repaired.
    #[tokio::test]
    async fn counters_follow_the_messages_and_verify_finds_drift() {
        let (store, _, campaign) = sqlite::with_a_campaign().await;
        let (contact, message) = (ContactId::new(), MessageId::new());
        for sql in [
            "INSERT INTO contacts (id, user_id, phone_number, name, attributes, created_at, updated_at) \
             VALUES ($1, $2, '+15550000001', 'Ada', '{}', '2026-01-01', '2026-01-01')",
            "INSERT INTO messages (id, campaign_id, contact_id, variant, status, carrier, not_before, created_at, \
             updated_at) VALUES ($3, $4, $1, 'a', 'queued', 'log', '2026-01-01', '2026-01-01', '2026-01-01')",
            "UPDATE messages SET status = 'sent' WHERE id = $3",
        ] {
            sqlx::query(sql)
                .bind(contact)
                .bind(campaign.user_id)
                .bind(message)
                .bind(campaign.id)
                .execute(&store.pool)
                .await
                .unwrap();
        }
        let nonzero = |rows: crate::store::MessageCounts| rows.into_iter().filter(|r| r.3 > 0).collect::<Vec<_>>();
        assert_eq!(
            nonzero(store.message_counts(campaign.id).await.unwrap()),
            vec![(Variant::A, MessageStatus::Sent, String::new(), 1)]
        );
        assert_eq!(store.verify_counters(false).await.unwrap(), vec![]);

        sqlx::query("UPDATE message_counts SET n = 7 WHERE status = 'sent'")
            .execute(&store.pool)
            .await
            .unwrap();
        let drift = store.verify_counters(false).await.unwrap();
        assert_eq!(
            drift
                .iter()
                .map(|d| (d.status.as_str(), d.counted, d.actual))
                .collect::<Vec<_>>(),
            vec![("sent", 7, 1)]
        );
        assert_eq!(
            store.verify_counters(true).await.unwrap(),
            drift,
            "repair reports what it replaced"
        );
        assert_eq!(store.verify_counters(false).await.unwrap(), vec![]);

        sqlx::query("DELETE FROM messages").execute(&store.pool).await.unwrap();
        assert_eq!(nonzero(store.message_counts(campaign.id).await.unwrap()), vec![]);
        assert_eq!(store.verify_counters(false).await.unwrap(), vec![]);
    }
}
