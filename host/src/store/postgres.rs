//! PostgreSQL: for production and for several API hosts sharing one database.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, Pool, Postgres};
use uuid::Uuid;

use super::cache::ReadCache;
use super::sql::{ADD_TO_CAMPAIGN_SIZE, COUNT_CAMPAIGN_CONTACTS, Dialect, NewMessages, SqlStore};
use super::{ContactBatches, LinkOutcome, StoreError, next_rows};
use crate::domain::ids::{CampaignId, UserId};

pub type PostgresStore = SqlStore<Postgres>;

/// Connects to PostgreSQL. No read cache: several API hosts may write.
pub async fn connect(url: &str, max_connections: u32) -> Result<PostgresStore, StoreError> {
    let options = PgConnectOptions::from_str(url)?.application_name("herald");
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await?;
    Ok(SqlStore::new(pool, ReadCache::disabled()))
}

#[async_trait]
impl Dialect for Postgres {
    // Conflicts with the ROW EXCLUSIVE lock every counter upsert takes.
    const LOCK_COUNTERS: &'static str = "LOCK TABLE message_counts IN SHARE ROW EXCLUSIVE MODE";
    // FOR SHARE conflicts with the UPDATE that marks it deleted and the DELETE
    // that ends its purge.
    const LOCK_LIVE_CAMPAIGN: &'static str =
        "SELECT 1 FROM campaigns WHERE id = $1 AND status <> 'completed' AND deleted_at IS NULL FOR SHARE";
    // Keyed by a hash of the user id: a collision only makes two users take turns.
    const LOCK_USER_HAND_OUTS: &'static str = "SELECT pg_advisory_xact_lock(hashtextextended($1::text, 0))";
    const CONTACT_TIMEZONE: &'static str = "k.attributes ->> 'timezone'";
    const BACKEND: &'static str = "postgres";

    async fn run_migrations(pool: &Pool<Self>) -> Result<(), StoreError> {
        sqlx::migrate!("../migrations/postgres").run(pool).await?;
        Ok(())
    }

    /// One statement of four arrays, the same text every time (prepared once)
    /// where multi-row VALUES bound eleven parameters a row.
    async fn insert_queued(conn: &mut PgConnection, messages: &NewMessages<'_>) -> Result<u64, StoreError> {
        let (mut ids, mut contacts, mut variants, mut phones) = (vec![], vec![], vec![], vec![]);
        for (id, contact_id, variant, phone) in &messages.rows {
            ids.push(id.as_uuid());
            contacts.push(contact_id.as_uuid());
            variants.push(variant.as_str());
            phones.push(*phone);
        }
        // The unique (campaign, contact) index skips contacts that have a
        // message already (a second send): no anti-join over the messages.
        let done = sqlx::query(
            "INSERT INTO messages (id, campaign_id, contact_id, task_id, variant, status, carrier, \
             phone_number, not_before, created_at, updated_at) \
             SELECT v.id, $1, v.contact_id, $2, v.variant, 'queued', $3, v.phone, $4, $5, $5 \
             FROM UNNEST($6::uuid[], $7::uuid[], $8::text[], $9::text[]) AS v (id, contact_id, variant, phone) \
             ON CONFLICT (campaign_id, contact_id) DO NOTHING",
        )
        .bind(messages.campaign_id)
        .bind(messages.task_id)
        .bind(messages.carrier)
        .bind(messages.not_before)
        .bind(messages.now)
        .bind(ids)
        .bind(contacts)
        .bind(variants)
        .bind(phones)
        .execute(&mut *conn)
        .await?;
        Ok(done.rows_affected())
    }

    /// COPY every row into a transaction-scoped table, then two set-based
    /// statements: insert the contacts that are new, link them all in file order.
    async fn bulk_link(
        pool: &Pool<Self>,
        user_id: UserId,
        campaign_id: CampaignId,
        mut batches: ContactBatches,
        now: DateTime<Utc>,
    ) -> Result<LinkOutcome, StoreError> {
        let mut tx = pool.begin().await?;
        // One bulk write per user at a time: two imports sharing phone numbers would
        // otherwise take row locks in different orders and deadlock.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(user_id.to_string())
            .execute(&mut *tx)
            .await?;
        // The campaign stays until this commits (links have no foreign key here).
        let live: Option<i32> = sqlx::query_scalar(Self::LOCK_LIVE_CAMPAIGN)
            .bind(campaign_id)
            .fetch_optional(&mut *tx)
            .await?;
        if live.is_none() {
            return Err(StoreError::MissingReference(sqlx::Error::RowNotFound));
        }
        // Joins and sorts over a million rows stay in memory instead of spilling to disk.
        sqlx::query("SET LOCAL work_mem = '256MB'").execute(&mut *tx).await?;
        sqlx::query(
            "CREATE TEMP TABLE import_rows (id uuid NOT NULL, phone_number text NOT NULL, name text NOT NULL, \
             attributes jsonb NOT NULL, ord bigint NOT NULL) ON COMMIT DROP",
        )
        .execute(&mut *tx)
        .await?;
        let mut rows: u64 = 0;
        let mut copy = tx
            .copy_in_raw("COPY import_rows (id, phone_number, name, attributes, ord) FROM STDIN (FORMAT csv)")
            .await?;
        loop {
            let batch = match next_rows(&mut batches).await {
                Ok(Some(batch)) => batch,
                Ok(None) => break,
                Err(e) => {
                    let _ = copy.abort(e.to_string()).await;
                    return Err(e);
                }
            };
            let mut csv = csv::Writer::from_writer(Vec::with_capacity(batch.len() * 128));
            for contact in &batch {
                rows += 1;
                let attributes = serde_json::to_string(&contact.attributes)
                    .map_err(|e| StoreError::Corrupt(format!("attributes do not serialize: {e}")))?;
                let record = [
                    Uuid::now_v7().to_string(),
                    contact.phone_number.to_string(),
                    contact.name.clone(),
                    attributes,
                    rows.to_string(),
                ];
                csv.write_record(&record)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            }
            let bytes = csv.into_inner().map_err(|e| StoreError::Corrupt(e.to_string()))?;
            copy.send(bytes).await?;
        }
        copy.finish().await?;
        sqlx::query("ANALYZE import_rows").execute(&mut *tx).await?;
        // The new numbers, each at its first line. A plain INSERT after an
        // anti-join, not `ON CONFLICT DO NOTHING`: the speculative insertion
        // behind ON CONFLICT took 40 % longer at 1,000,000 rows (and more WAL).
        // Safe because every contact write is a bulk link under the user's
        // advisory lock above: no other writer adds this user's numbers.
        sqlx::query(
            "INSERT INTO contacts (id, user_id, phone_number, name, attributes, created_at, updated_at) \
             SELECT id, $1, phone_number, name, attributes, $2, $2 FROM \
             (SELECT DISTINCT ON (r.phone_number) r.* FROM import_rows r WHERE NOT EXISTS \
             (SELECT 1 FROM contacts c WHERE c.user_id = $1 AND c.phone_number = r.phone_number) \
             ORDER BY r.phone_number, r.ord) AS first ORDER BY ord",
        )
        .bind(user_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        // Positions continue the campaign's, without gaps: contacts already
        // linked, and repeats within the file, are left out before numbering
        // (see the migration's `position`). The user's advisory lock above
        // makes this the only writer of the campaign's links.
        let linked = sqlx::query(
            "INSERT INTO campaign_contacts (campaign_id, contact_id, added_at, position) \
             SELECT $1, fresh.id, $2, \
             COALESCE((SELECT contacts FROM campaign_sizes WHERE campaign_id = $1), 0) \
             + row_number() OVER (ORDER BY fresh.ord) \
             FROM (SELECT c.id, MIN(r.ord) AS ord FROM import_rows r \
             JOIN contacts c ON c.user_id = $3 AND c.phone_number = r.phone_number \
             WHERE NOT EXISTS (SELECT 1 FROM campaign_contacts l WHERE l.campaign_id = $1 AND l.contact_id = c.id) \
             GROUP BY c.id) AS fresh ORDER BY fresh.ord",
        )
        .bind(campaign_id)
        .bind(now)
        .bind(user_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query(ADD_TO_CAMPAIGN_SIZE)
            .bind(campaign_id)
            .bind(linked as i64)
            .execute(&mut *tx)
            .await?;
        let total: i64 = sqlx::query_scalar(COUNT_CAMPAIGN_CONTACTS)
            .bind(campaign_id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(LinkOutcome {
            linked,
            already_linked: rows - linked,
            total_contacts: total as u64,
        })
    }
}
