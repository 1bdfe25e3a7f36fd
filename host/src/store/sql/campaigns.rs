//! Campaigns: one column list, one bind order, read straight into [`Campaign`].

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use const_format::concatcp;
use sqlx::query::Query;
use sqlx::{ColumnIndex, Executor};
use uuid::Uuid;

use super::{Bind, Column, Dialect, RowsAffected, SqlStore};
use crate::bus::event::Event;
use crate::domain::campaign::{Campaign, CampaignStatus};
use crate::domain::contact::Attributes;
use crate::domain::ids::{CampaignId, ContactId, UserId};
use crate::domain::page::{Page, PageRequest};
use crate::domain::settings::{CapOverflow, FrequencyCap};
use crate::store::columns::Nullable;
use crate::store::{CampaignStore, PurgeMark, StoreError, UserSettings};

/// Every column of `campaigns` that [`Campaign`] holds, in [`bind_campaign`]'s
/// order. Adding a campaign field: the domain type, its DTO, a migration,
/// and this list with `bind_campaign`.
pub(super) const CAMPAIGN_COLUMNS: &str = "id, user_id, name, message_template, message_template_b, \
     ab_test_percentage, daily_limit, total_limit, status, timezone, send_window_start, send_window_end, \
     send_days, carrier, quiet_hours, created_at, updated_at, version";
/// `$1…$18`, one per column of [`CAMPAIGN_COLUMNS`].
const CAMPAIGN_VALUES: &str = "$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18";

/// Binds `campaign` as [`CAMPAIGN_COLUMNS`], with `version` as its version.
fn bind_campaign<'q, DB>(
    query: Query<'q, DB, DB::Arguments>,
    campaign: &'q Campaign,
    version: i64,
) -> Query<'q, DB, DB::Arguments>
where
    DB: Dialect,
    for<'a> &'a str: Bind<'a, DB>,
    Uuid: Column<DB>,
    String: Column<DB>,
    i32: Column<DB>,
    i64: Column<DB>,
    DateTime<Utc>: Column<DB>,
{
    query
        .bind(campaign.id)
        .bind(campaign.user_id)
        .bind(campaign.name.as_str())
        .bind(campaign.message_template.as_str())
        .bind(Nullable(campaign.message_template_b.as_deref()))
        .bind(Nullable(campaign.ab_test_percentage))
        .bind(campaign.daily_limit)
        .bind(Nullable(campaign.total_limit))
        .bind(campaign.status)
        .bind(campaign.timezone)
        .bind(campaign.send_window_start)
        .bind(campaign.send_window_end)
        .bind(campaign.send_days.bits())
        .bind(Nullable(campaign.carrier.as_deref()))
        .bind(campaign.quiet_hours)
        .bind(campaign.created_at)
        .bind(campaign.updated_at)
        .bind(version)
}

const LIST: &str = concatcp!(
    "SELECT ",
    CAMPAIGN_COLUMNS,
    ", (SELECT COUNT(*) FROM campaigns WHERE user_id = $1 AND ($4 IS NULL OR status = $4) AND deleted_at IS NULL) \
     AS total_count FROM campaigns WHERE user_id = $1 AND ($4 IS NULL OR status = $4) AND deleted_at IS NULL \
     ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3"
);

#[async_trait]
impl<DB> CampaignStore for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> &'a str: Bind<'a, DB> + ColumnIndex<DB::Row>,
    for<'a> sqlx::types::Json<&'a Attributes>: Bind<'a, DB>,
    Uuid: Column<DB>,
    String: Column<DB>,
    i32: Column<DB>,
    i64: Column<DB>,
    bool: Column<DB>,
    DateTime<Utc>: Column<DB>,
    NaiveDate: Column<DB>,
    sqlx::types::Json<Attributes>: Column<DB>,
    usize: ColumnIndex<DB::Row>,
{
    async fn ensure_user(&self, user_id: UserId, now: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO users (id, created_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING")
            .bind(user_id)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn user_settings(&self, user_id: UserId) -> Result<UserSettings, StoreError> {
        let row: Option<(Option<i32>, Option<i32>, String)> = sqlx::query_as(
            "SELECT frequency_cap_max, frequency_cap_hours, frequency_cap_over FROM users WHERE id = $1",
        )
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        let frequency_cap = match row {
            Some((Some(max), Some(hours), over)) => Some(FrequencyCap {
                max: max as u32,
                hours: hours as u32,
                over: over
                    .parse()
                    .map_err(|_| StoreError::Corrupt(format!("frequency_cap_over {over:?}")))?,
            }),
            _ => None,
        };
        Ok(UserSettings { frequency_cap })
    }

    async fn set_user_settings(&self, user_id: UserId, settings: &UserSettings) -> Result<(), StoreError> {
        let cap = settings.frequency_cap;
        sqlx::query(
            "UPDATE users SET frequency_cap_max = $2, frequency_cap_hours = $3, frequency_cap_over = $4 WHERE id = $1",
        )
        .bind(user_id)
        .bind(Nullable(cap.map(|c| c.max as i32)))
        .bind(Nullable(cap.map(|c| c.hours as i32)))
        .bind(cap.map_or(CapOverflow::Hold, |c| c.over).to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn insert_campaign(&self, campaign: &Campaign, events: &[Event]) -> Result<(), StoreError> {
        let _guard = self.cache.invalidate(campaign.user_id);
        let mut tx = self.pool.begin().await?;
        let insert = sqlx::query(concatcp!(
            "INSERT INTO campaigns (",
            CAMPAIGN_COLUMNS,
            ") VALUES (",
            CAMPAIGN_VALUES,
            ")"
        ));
        bind_campaign(insert, campaign, campaign.version)
            .execute(&mut *tx)
            .await?;
        Self::append_events(&mut *tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn campaign(&self, user_id: UserId, id: CampaignId) -> Result<Option<Campaign>, StoreError> {
        let load = sqlx::query_as(concatcp!(
            "SELECT ",
            CAMPAIGN_COLUMNS,
            " FROM campaigns WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL"
        ))
        .bind(id)
        .bind(user_id)
        .fetch_optional(&self.pool);
        self.cache.campaign(user_id, id, async { Ok(load.await?) }).await
    }

    async fn list_campaigns(
        &self,
        user_id: UserId,
        status: Option<CampaignStatus>,
        page: PageRequest,
    ) -> Result<Page<Campaign>, StoreError> {
        let load = async {
            let rows: Vec<Counted<Campaign>> = sqlx::query_as(LIST)
                .bind(user_id)
                .bind(i64::from(page.per_page))
                .bind(page.offset())
                .bind(Nullable(status))
                .fetch_all(&self.pool)
                .await?;
            let total = match rows.first() {
                Some(first) => first.total_count as u64,
                None => {
                    sqlx::query_scalar::<_, i64>(
                        "SELECT COUNT(*) FROM campaigns WHERE user_id = $1 AND ($2 IS NULL OR status = $2) AND deleted_at IS NULL",
                    )
                    .bind(user_id)
                    .bind(Nullable(status))
                    .fetch_one(&self.pool)
                    .await? as u64
                }
            };
            let items = rows.into_iter().map(|r| r.row).collect();
            Ok(Page { items, total })
        };
        self.cache.campaigns(user_id, status, page, load).await
    }

    async fn replace_campaign(
        &self,
        campaign: &Campaign,
        seen_version: i64,
        events: &[Event],
    ) -> Result<bool, StoreError> {
        let _guard = self.cache.invalidate(campaign.user_id);
        let mut tx = self.pool.begin().await?;
        // Row-value SET: every column from the same list and bind order as INSERT.
        let update = sqlx::query(concatcp!(
            "UPDATE campaigns SET (",
            CAMPAIGN_COLUMNS,
            ") = (",
            CAMPAIGN_VALUES,
            ") WHERE id = $1 AND user_id = $2 AND version = $19 AND deleted_at IS NULL"
        ));
        let done = bind_campaign(update, campaign, seen_version + 1)
            .bind(seen_version)
            .execute(&mut *tx)
            .await?;
        // A new window or limit, or a resume: the scheduler looks again now.
        sqlx::query("DELETE FROM campaign_waits WHERE campaign_id = $1")
            .bind(campaign.id)
            .execute(&mut *tx)
            .await?;
        Self::land(tx, done.rows_affected() == 1, events).await
    }

    async fn delete_campaign(
        &self,
        user_id: UserId,
        id: CampaignId,
        seen_version: i64,
        events: &[Event],
    ) -> Result<bool, StoreError> {
        let _guard = self.cache.invalidate(user_id);
        let mut tx = self.pool.begin().await?;
        // Gone for every read now; `purge_deleted` removes the rows.
        let done = sqlx::query(
            "UPDATE campaigns SET deleted_at = $4, version = version + 1 \
             WHERE id = $1 AND user_id = $2 AND version = $3 AND deleted_at IS NULL",
        )
        .bind(id)
        .bind(user_id)
        .bind(seen_version)
        .bind(Utc::now())
        .execute(&mut *tx)
        .await?;
        Self::land(tx, done.rows_affected() == 1, events).await
    }

    async fn campaign_by_id(&self, id: CampaignId) -> Result<Option<Campaign>, StoreError> {
        Ok(sqlx::query_as(concatcp!(
            "SELECT ",
            CAMPAIGN_COLUMNS,
            " FROM campaigns WHERE id = $1 AND deleted_at IS NULL"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn due_campaigns(&self, now: DateTime<Utc>) -> Result<Vec<Campaign>, StoreError> {
        // EXPLAIN: active campaigns (partial index campaigns_active), each
        // tested by one probe of campaign_waits' key and one of messages_due:
        // its first entry, the campaign's earliest queued message. Not an
        // EXISTS: PostgreSQL may flatten that into a semi-join, and once
        // statistics say most messages are queued it hashed a sequential
        // scan of all of them instead, 417 ms every tick (docs/benchmarks.md,
        // "Closing the scale gaps"); a scalar subquery with a LIMIT stays a
        // probe per campaign (9 ms there).
        Ok(sqlx::query_as(concatcp!(
            "SELECT ",
            CAMPAIGN_COLUMNS,
            " FROM campaigns WHERE status = 'active' AND deleted_at IS NULL \
             AND NOT EXISTS (SELECT 1 FROM campaign_waits w WHERE w.campaign_id = campaigns.id AND w.until > $1) \
             AND (SELECT m.not_before FROM messages m WHERE m.campaign_id = campaigns.id AND m.status = 'queued' \
             ORDER BY m.not_before LIMIT 1) <= $1"
        ))
        .bind(now)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn complete_if_exhausted(
        &self,
        campaign: &Campaign,
        at: DateTime<Utc>,
    ) -> Result<Option<Campaign>, StoreError> {
        let _guard = self.cache.invalidate(campaign.user_id);
        Ok(sqlx::query_as(concatcp!(
            "UPDATE campaigns SET status = 'completed', status_reason = 'total_limit reached', updated_at = $2, \
             version = version + 1 \
             WHERE id = $1 AND status IN ('active', 'paused') AND total_limit IS NOT NULL \
             AND (SELECT COALESCE(SUM(n), 0) FROM message_counts WHERE campaign_id = $1 \
             AND status IN ('sent', 'delivered', 'failed')) >= total_limit RETURNING ",
            CAMPAIGN_COLUMNS
        ))
        .bind(campaign.id)
        .bind(at)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn purge_deleted(&self, max_rows: u32, mark: &mut PurgeMark) -> Result<u64, StoreError> {
        let deleted: Option<CampaignId> =
            sqlx::query_scalar("SELECT id FROM campaigns WHERE deleted_at IS NOT NULL ORDER BY deleted_at LIMIT 1")
                .fetch_optional(&self.pool)
                .await?;
        let Some(id) = deleted else { return Ok(0) };
        if mark.campaign != Some(id) {
            *mark = PurgeMark {
                campaign: Some(id),
                ..PurgeMark::default()
            };
        }
        // Each step a short transaction of at most `max_rows` rows: other
        // writers (SQLite's single writer included) wait for one batch at
        // most. The ORDER BY follows a unique index of the campaign's rows, so
        // the planner walks that index from the mark; with a bare LIMIT,
        // PostgreSQL expected matching rows early in a sequential scan and
        // read a million other campaigns' messages to find 2,000 (EXPLAIN
        // ANALYZE: 180 ms → 1 ms).
        let through = mark.messages_through.unwrap_or(ContactId::from_uuid(Uuid::nil()));
        let gone: Vec<ContactId> = sqlx::query_scalar(
            "DELETE FROM messages WHERE id IN (SELECT id FROM messages WHERE campaign_id = $1 AND contact_id > $2 \
             ORDER BY contact_id LIMIT $3) RETURNING contact_id",
        )
        .bind(id)
        .bind(through)
        .bind(i64::from(max_rows))
        .fetch_all(&self.pool)
        .await?;
        if let Some(last) = gone.iter().max() {
            mark.messages_through = Some(*last);
            return Ok(gone.len() as u64);
        }
        let gone: Vec<i64> = sqlx::query_scalar(
            "DELETE FROM campaign_contacts WHERE campaign_id = $1 AND position > $2 AND position <= \
             (SELECT MAX(position) FROM (SELECT position FROM campaign_contacts WHERE campaign_id = $1 \
             AND position > $2 ORDER BY position LIMIT $3) AS batch) RETURNING position",
        )
        .bind(id)
        .bind(mark.links_through)
        .bind(i64::from(max_rows))
        .fetch_all(&self.pool)
        .await?;
        if let Some(last) = gone.iter().max() {
            mark.links_through = *last;
            return Ok(gone.len() as u64);
        }
        // What is left is small: tasks, days and waits go by cascade, the
        // counters with it. Only once no message or link is left: another
        // purger (a second api host, or a test's tick beside the loop) may
        // have found its batch already deleted while this campaign's rows
        // remained, and PostgreSQL has no foreign key to cascade to them.
        let mut tx = self.pool.begin().await?;
        let removed = sqlx::query(
            "DELETE FROM campaigns WHERE id = $1 AND deleted_at IS NOT NULL \
             AND NOT EXISTS (SELECT 1 FROM messages WHERE campaign_id = $1) \
             AND NOT EXISTS (SELECT 1 FROM campaign_contacts WHERE campaign_id = $1)",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if removed == 1 {
            sqlx::query("DELETE FROM message_counts WHERE campaign_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        } else {
            // Rows behind the mark (another purger's batch, still in flight
            // when ours passed it): the next pass starts from the beginning.
            *mark = PurgeMark::default();
        }
        tx.commit().await?;
        // Done with it, or its rows need another pass: either way, look again.
        Ok(1)
    }

    async fn pause_campaign(
        &self,
        campaign: &Campaign,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<Campaign>, StoreError> {
        let _guard = self.cache.invalidate(campaign.user_id);
        Ok(sqlx::query_as(concatcp!(
            "UPDATE campaigns SET status = 'paused', status_reason = $2, updated_at = $3, version = version + 1 \
             WHERE id = $1 AND status = 'active' RETURNING ",
            CAMPAIGN_COLUMNS
        ))
        .bind(campaign.id)
        .bind(reason)
        .bind(at)
        .fetch_optional(&self.pool)
        .await?)
    }
}

/// A row plus the total count of its query (an uncorrelated scalar subquery,
/// evaluated once), to page in one round trip.
#[derive(sqlx::FromRow)]
pub(super) struct Counted<T> {
    #[sqlx(flatten)]
    pub row: T,
    pub total_count: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite;

    /// A value the domain cannot read back (here a zone no IANA database has)
    /// fails the read, naming the value; it never becomes a default.
    #[tokio::test]
    async fn a_stored_value_the_domain_cannot_read_fails_the_read() {
        let (store, campaign, stored) = sqlite::with_a_campaign().await;
        let user = campaign.user_id;
        assert_eq!(
            (stored.timezone, stored.send_window_start),
            (campaign.timezone, campaign.send_window_start)
        );

        sqlx::query("UPDATE campaigns SET timezone = 'Mars/Olympus_Mons'")
            .execute(&store.pool)
            .await
            .unwrap();
        let read = store.campaign(user, campaign.id).await;
        let error = read.expect_err("a corrupt row is not a campaign").to_string();
        assert!(error.contains("Mars/Olympus_Mons"), "{error}");
    }

    /// A purger whose mark is past rows still there (another purger's batch
    /// was in flight when it passed) goes round again from the beginning:
    /// the campaign and all its links go, however the mark was set.
    #[tokio::test]
    async fn a_purge_finishes_whatever_its_mark_says() {
        use crate::domain::contact::NewContact;
        use crate::domain::phone::PhonePolicy;
        use crate::store::{ContactBatch, ContactStore};
        let (store, campaign, stored) = sqlite::with_a_campaign().await;
        let (user, now) = (campaign.user_id, Utc::now());
        let rows = (0..1_200)
            .map(|i| NewContact {
                phone_number: PhonePolicy::default().normalize(&format!("+1212555{i:04}")).unwrap(),
                name: format!("Ada {i}"),
                attributes: Attributes::default(),
            })
            .collect();
        let (batches, received) = tokio::sync::mpsc::channel(2);
        batches.send(ContactBatch::Rows(rows)).await.unwrap();
        batches.send(ContactBatch::End).await.unwrap();
        store.link_contacts(user, campaign.id, received, now).await.unwrap();
        assert!(
            store
                .delete_campaign(user, campaign.id, stored.version, &[])
                .await
                .unwrap()
        );

        let mut mark = PurgeMark {
            campaign: Some(campaign.id),
            messages_through: None,
            links_through: 1_000,
        };
        let mut passes = 0;
        while store.purge_deleted(500, &mut mark).await.unwrap() > 0 {
            passes += 1;
            assert!(passes < 10, "the purge ends");
        }
        let left: (i64, i64) =
            sqlx::query_as("SELECT (SELECT COUNT(*) FROM campaign_contacts), (SELECT COUNT(*) FROM campaigns)")
                .fetch_one(&store.pool)
                .await
                .unwrap();
        assert_eq!(left, (0, 0));
        // 200 links past the mark, a pass that finds 1,000 behind it, two
        // batches of 500 from the start, the campaign itself.
        assert_eq!(passes, 5);
    }
}
