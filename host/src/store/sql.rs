//! The SQL both backends run, and the one `Store` implementation over it.
//!
//! SQLite and PostgreSQL accept the same statements here (`$N` placeholders in
//! order, `ON CONFLICT`, scalar subqueries, CTEs), so the trait is implemented
//! once by a macro instantiated for each backend's pool type. The backend files
//! hold connection set-up, migrations and the bulk contact writer, where the two
//! databases are best driven differently (multi-row statements vs. COPY).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::campaign::{Campaign, format_time_of_day};

/// Columns of `campaigns` in `CampaignRow` order; macros so statements stay `&'static str`.
macro_rules! campaign_columns {
    () => {
        "id, user_id, name, message_template, message_template_b, ab_test_percentage, daily_limit, \
         total_limit, status, timezone, send_window_start, send_window_end, send_days, carrier, \
         created_at, updated_at, version"
    };
}

macro_rules! contact_columns {
    () => {
        "c.id, c.user_id, c.phone_number, c.name, c.opted_out, c.attributes, c.created_at, c.updated_at, c.version"
    };
}

macro_rules! list_campaigns_sql {
    ($filter:literal) => {
        concat!(
            "SELECT ",
            campaign_columns!(),
            ", (SELECT COUNT(*) FROM campaigns WHERE user_id = $1 ",
            $filter,
            ") AS total_count FROM campaigns WHERE user_id = $1 ",
            $filter,
            " ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3"
        )
    };
}

/// The column values of a campaign in `CAMPAIGN_COLUMNS` order, as owned binds.
pub(super) struct CampaignBinds {
    pub id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    pub message_template: String,
    pub message_template_b: Option<String>,
    pub ab_test_percentage: Option<i32>,
    pub daily_limit: i32,
    pub total_limit: Option<i32>,
    pub status: &'static str,
    pub timezone: String,
    pub send_window_start: String,
    pub send_window_end: String,
    pub send_days: i32,
    pub carrier: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

impl From<&Campaign> for CampaignBinds {
    fn from(c: &Campaign) -> Self {
        Self {
            id: c.id,
            user_id: c.user_id,
            name: c.name.clone(),
            message_template: c.message_template.clone(),
            message_template_b: c.message_template_b.clone(),
            ab_test_percentage: c.ab_test_percentage,
            daily_limit: c.daily_limit,
            total_limit: c.total_limit,
            status: c.status.as_str(),
            timezone: c.timezone.name().to_string(),
            send_window_start: format_time_of_day(c.send_window_start),
            send_window_end: format_time_of_day(c.send_window_end),
            send_days: c.send_days.bits(),
            carrier: c.carrier.clone(),
            created_at: c.created_at,
            updated_at: c.updated_at,
            version: c.version,
        }
    }
}

/// Counts rows linked to a campaign; shared by both bulk writers.
pub(super) const COUNT_CAMPAIGN_CONTACTS: &str = "SELECT COUNT(*) FROM campaign_contacts WHERE campaign_id = $1";

/// Implements [`super::Store`] for a store type with a `pool` field of the
/// backend's pool type and `BACKEND`, `run_migrations` and `bulk_link` items of its own.
macro_rules! impl_store {
    ($store:ty, $db:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::Store for $store {
            fn backend(&self) -> &'static str {
                Self::BACKEND
            }

            async fn migrate(&self) -> Result<(), $crate::store::StoreError> {
                self.run_migrations().await
            }

            async fn ping(&self) -> Result<(), $crate::store::StoreError> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn close(&self) {
                self.pool.close().await;
            }

            async fn ensure_user(&self, user_id: uuid::Uuid, now: chrono::DateTime<chrono::Utc>) -> Result<(), $crate::store::StoreError> {
                sqlx::query("INSERT INTO users (id, created_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING")
                    .bind(user_id)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn insert_campaign(
                &self,
                campaign: &$crate::domain::campaign::Campaign,
                events: &[$crate::bus::event::Event],
            ) -> Result<(), $crate::store::StoreError> {
                let b = $crate::store::sql::CampaignBinds::from(campaign);
                let mut tx = self.pool.begin().await?;
                sqlx::query(concat!(
                    "INSERT INTO campaigns (", campaign_columns!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
                ))
                    .bind(b.id).bind(b.user_id).bind(b.name).bind(b.message_template)
                    .bind(b.message_template_b).bind(b.ab_test_percentage).bind(b.daily_limit)
                    .bind(b.total_limit).bind(b.status).bind(b.timezone).bind(b.send_window_start)
                    .bind(b.send_window_end).bind(b.send_days).bind(b.carrier).bind(b.created_at)
                    .bind(b.updated_at).bind(b.version)
                    .execute(&mut *tx)
                    .await?;
                Self::append_events(&mut *tx, events).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn campaign(&self, user_id: uuid::Uuid, id: uuid::Uuid) -> Result<Option<$crate::domain::campaign::Campaign>, $crate::store::StoreError> {
                let row: Option<$crate::store::rows::CampaignRow> =
                    sqlx::query_as(concat!("SELECT ", campaign_columns!(), " FROM campaigns WHERE id = $1 AND user_id = $2")).bind(id).bind(user_id).fetch_optional(&self.pool).await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn list_campaigns(
                &self,
                user_id: uuid::Uuid,
                status: Option<$crate::domain::campaign::CampaignStatus>,
                page: $crate::domain::page::PageRequest,
            ) -> Result<$crate::domain::page::Page<$crate::domain::campaign::Campaign>, $crate::store::StoreError> {
                let sql = if status.is_some() { list_campaigns_sql!("AND status = $4") } else { list_campaigns_sql!("") };
                let mut query = sqlx::query_as::<_, $crate::store::rows::Counted<$crate::store::rows::CampaignRow>>(sql)
                    .bind(user_id)
                    .bind(i64::from(page.per_page))
                    .bind(page.offset());
                if let Some(status) = status {
                    query = query.bind(status.as_str());
                }
                let rows = query.fetch_all(&self.pool).await?;
                let total = match rows.first() {
                    Some(first) => first.total_count as u64,
                    None => {
                        let sql = if status.is_some() {
                            "SELECT COUNT(*) FROM campaigns WHERE user_id = $1 AND status = $2"
                        } else {
                            "SELECT COUNT(*) FROM campaigns WHERE user_id = $1"
                        };
                        let mut count = sqlx::query_scalar::<_, i64>(sql).bind(user_id);
                        if let Some(status) = status {
                            count = count.bind(status.as_str());
                        }
                        count.fetch_one(&self.pool).await? as u64
                    }
                };
                let items = rows.into_iter().map(|r| r.row.try_into()).collect::<Result<_, _>>()?;
                Ok($crate::domain::page::Page { items, total })
            }

            async fn replace_campaign(
                &self,
                campaign: &$crate::domain::campaign::Campaign,
                seen_version: i64,
                events: &[$crate::bus::event::Event],
            ) -> Result<bool, $crate::store::StoreError> {
                let b = $crate::store::sql::CampaignBinds::from(campaign);
                let mut tx = self.pool.begin().await?;
                let done = sqlx::query(
                    "UPDATE campaigns SET name = $3, message_template = $4, message_template_b = $5, \
                     ab_test_percentage = $6, daily_limit = $7, total_limit = $8, status = $9, timezone = $10, \
                     send_window_start = $11, send_window_end = $12, send_days = $13, carrier = $14, updated_at = $15, \
                     version = version + 1 WHERE id = $1 AND user_id = $2 AND version = $16",
                )
                .bind(b.id).bind(b.user_id).bind(b.name).bind(b.message_template)
                .bind(b.message_template_b).bind(b.ab_test_percentage).bind(b.daily_limit)
                .bind(b.total_limit).bind(b.status).bind(b.timezone).bind(b.send_window_start)
                .bind(b.send_window_end).bind(b.send_days).bind(b.carrier).bind(b.updated_at)
                .bind(seen_version)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() != 1 {
                    return Ok(false);
                }
                Self::append_events(&mut *tx, events).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn delete_campaign(
                &self,
                user_id: uuid::Uuid,
                id: uuid::Uuid,
                seen_version: i64,
                events: &[$crate::bus::event::Event],
            ) -> Result<bool, $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                // Messages and contact links go with it (ON DELETE CASCADE).
                let done = sqlx::query("DELETE FROM campaigns WHERE id = $1 AND user_id = $2 AND version = $3")
                    .bind(id)
                    .bind(user_id)
                    .bind(seen_version)
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() != 1 {
                    return Ok(false);
                }
                Self::append_events(&mut *tx, events).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn link_contacts(
                &self,
                user_id: uuid::Uuid,
                campaign_id: uuid::Uuid,
                batches: $crate::store::ContactBatches,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<$crate::store::LinkOutcome, $crate::store::StoreError> {
                // Bulk writes are where the databases differ most (COPY on PostgreSQL).
                self.bulk_link(user_id, campaign_id, batches, now).await
            }

            async fn campaign_contacts(
                &self,
                campaign_id: uuid::Uuid,
                page: $crate::domain::page::PageRequest,
            ) -> Result<$crate::domain::page::Page<$crate::domain::contact::Contact>, $crate::store::StoreError> {
                let rows: Vec<$crate::store::rows::Counted<$crate::store::rows::ContactRow>> = sqlx::query_as(concat!(
                    "SELECT ", contact_columns!(), ", \
                     (SELECT COUNT(*) FROM campaign_contacts WHERE campaign_id = $1) AS total_count \
                     FROM campaign_contacts l JOIN contacts c ON c.id = l.contact_id WHERE l.campaign_id = $1 \
                     ORDER BY l.seq LIMIT $2 OFFSET $3"
                ))
                    .bind(campaign_id)
                    .bind(i64::from(page.per_page))
                    .bind(page.offset())
                    .fetch_all(&self.pool)
                    .await?;
                let total = match rows.first() {
                    Some(first) => first.total_count as u64,
                    None => self.count_campaign_contacts(campaign_id).await?,
                };
                let items = rows.into_iter().map(|r| r.row.into()).collect();
                Ok($crate::domain::page::Page { items, total })
            }

            async fn count_campaign_contacts(&self, campaign_id: uuid::Uuid) -> Result<u64, $crate::store::StoreError> {
                let n: i64 = sqlx::query_scalar($crate::store::sql::COUNT_CAMPAIGN_CONTACTS)
                    .bind(campaign_id)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(n as u64)
            }

            async fn contact(&self, user_id: uuid::Uuid, id: uuid::Uuid) -> Result<Option<$crate::domain::contact::Contact>, $crate::store::StoreError> {
                let row: Option<$crate::store::rows::ContactRow> =
                    sqlx::query_as(concat!("SELECT ", contact_columns!(), " FROM contacts c WHERE c.id = $1 AND c.user_id = $2")).bind(id).bind(user_id).fetch_optional(&self.pool).await?;
                Ok(row.map(Into::into))
            }

            async fn replace_contact(
                &self,
                contact: &$crate::domain::contact::Contact,
                seen_version: i64,
                consent: Option<$crate::domain::contact::ConsentSource>,
                events: &[$crate::bus::event::Event],
            ) -> Result<bool, $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                let done = sqlx::query(
                    "UPDATE contacts SET name = $3, attributes = $4, opted_out = $5, updated_at = $6, \
                     version = version + 1 WHERE id = $1 AND user_id = $2 AND version = $7",
                )
                .bind(contact.id)
                .bind(contact.user_id)
                .bind(contact.name.as_str())
                .bind(sqlx::types::Json(&contact.attributes))
                .bind(contact.opted_out)
                .bind(contact.updated_at)
                .bind(seen_version)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() != 1 {
                    return Ok(false);
                }
                if let Some(source) = consent {
                    sqlx::query(
                        "INSERT INTO consent_events (id, contact_id, opted_out, source, created_at) \
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(uuid::Uuid::now_v7())
                    .bind(contact.id)
                    .bind(contact.opted_out)
                    .bind(source.as_str())
                    .bind(contact.updated_at)
                    .execute(&mut *tx)
                    .await?;
                }
                Self::append_events(&mut *tx, events).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn message_counts(&self, campaign_id: uuid::Uuid) -> Result<$crate::store::MessageCounts, $crate::store::StoreError> {
                let rows: Vec<(String, String, i64)> = sqlx::query_as(
                    "SELECT variant, status, COUNT(*) FROM messages WHERE campaign_id = $1 GROUP BY variant, status",
                )
                .bind(campaign_id)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(|(v, s, n)| Ok((v, $crate::store::rows::message_status(&s)?, n as u64)))
                    .collect()
            }

            async fn messages_by_status(
                &self,
            ) -> Result<Vec<($crate::domain::message::MessageStatus, u64)>, $crate::store::StoreError> {
                let rows: Vec<(String, i64)> = sqlx::query_as("SELECT status, COUNT(*) FROM messages GROUP BY status")
                    .fetch_all(&self.pool)
                    .await?;
                rows.into_iter()
                    .map(|(s, n)| Ok(($crate::store::rows::message_status(&s)?, n as u64)))
                    .collect()
            }

            async fn enqueue_events(&self, events: &[$crate::bus::event::Event]) -> Result<(), $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                Self::append_events(&mut *tx, events).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn outbox_events(&self, max: u32) -> Result<Vec<(i64, $crate::bus::event::Event)>, $crate::store::StoreError> {
                let rows: Vec<$crate::store::rows::OutboxRow> = sqlx::query_as(
                    "SELECT seq, id, owner, entity, action, subject, time, data FROM event_outbox ORDER BY seq LIMIT $1",
                )
                .bind(i64::from(max))
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn forget_events(&self, positions: &[i64]) -> Result<(), $crate::store::StoreError> {
                for chunk in positions.chunks($crate::store::sending::ROWS_PER_STATEMENT) {
                    let mut delete = sqlx::QueryBuilder::<$db>::new("DELETE FROM event_outbox WHERE seq IN ");
                    push_id_list!(delete, chunk);
                    delete.build().execute(&self.pool).await?;
                }
                Ok(())
            }
        }

        impl $store {
            /// Appends events to the outbox inside the caller's transaction.
            async fn append_events(
                conn: &mut <$db as sqlx::Database>::Connection,
                events: &[$crate::bus::event::Event],
            ) -> Result<(), $crate::store::StoreError> {
                for chunk in events.chunks($crate::store::sending::ROWS_PER_STATEMENT) {
                    let mut insert = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO event_outbox (id, owner, entity, action, subject, time, data) ",
                    );
                    insert.push_values(chunk, |mut row, e| {
                        row.push_bind(e.id)
                            .push_bind(e.owner)
                            .push_bind(e.entity.to_string())
                            .push_bind(e.action.to_string())
                            .push_bind(e.subject.as_str())
                            .push_bind(e.time)
                            .push_bind(e.data.to_string());
                    });
                    insert.build().execute(&mut *conn).await?;
                }
                Ok(())
            }
        }

        impl_sending_store!($store, $db);
        sending_helpers!($store, $db);
    };
}

pub(super) use {campaign_columns, contact_columns, impl_store, list_campaigns_sql};
