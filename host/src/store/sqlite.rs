//! SQLite: the embedded default. One file, WAL, foreign keys on, busy timeout.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::types::Json;
use sqlx::{Pool, QueryBuilder, Sqlite, SqliteConnection};
use uuid::Uuid;

use super::cache::ReadCache;
use super::sql::{ADD_TO_CAMPAIGN_SIZE, COUNT_CAMPAIGN_CONTACTS, Dialect, NewMessages, SqlStore};
use super::{ContactBatches, LinkOutcome, StoreError, next_rows};
use crate::domain::ids::{CampaignId, UserId};

pub type SqliteStore = SqlStore<Sqlite>;

/// An exclusive lock on `<database file>.lock`, held for the life of the
/// process: the read cache and the scheduler assume one process owns the file.
/// The OS releases it when the process ends, even on kill -9.
#[derive(Debug)]
pub struct DatabaseLock {
    _file: std::fs::File,
}

/// Takes the lock of the SQLite database at `url`, or fails at once naming the
/// lock file when another process holds it. `None` for an in-memory database.
pub fn lock(url: &str) -> Result<Option<DatabaseLock>, StoreError> {
    if url.contains(":memory:") || url.contains("mode=memory") {
        return Ok(None);
    }
    let options = SqliteConnectOptions::from_str(url)?;
    let database = options.get_filename();
    let mut name = database.as_os_str().to_owned();
    name.push(".lock");
    let path = std::path::PathBuf::from(name);
    let io = |e| StoreError::Database(sqlx::Error::Io(e));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(DatabaseLock { _file: file })),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::InUse {
            database: database.display().to_string(),
            lock: path.display().to_string(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
    }
}

/// Opens (creating it if missing) the SQLite database at `url`.
/// `cache_mib` is the page cache of all connections together
/// (`database.sqlite_cache_mib`): SQLite's soft heap limit, which is
/// process-wide, holds their caches near it.
pub async fn connect(
    url: &str,
    max_connections: u32,
    cache_mib: u32,
    cache: ReadCache,
) -> Result<SqliteStore, StoreError> {
    limit_malloc_arenas();
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // NORMAL is durable across application crashes in WAL mode.
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10))
        // Reads go through indexes and need few hot pages. Any connection
        // may cache up to the whole budget (a bulk import or a claim uses
        // most); once SQLite's heap nears the soft limit, each recycles its
        // own pages instead of growing, so sixteen connections cannot hold
        // sixteen budgets (they held 200+ MiB at 1,000,000 contacts).
        .page_size(16384)
        .pragma("cache_size", format!("-{}", u64::from(cache_mib) * 1024))
        .pragma("soft_heap_limit", (u64::from(cache_mib) << 20).to_string())
        .pragma("temp_store", "memory");
    if let Some(dir) = options.get_filename().parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
    }
    let pool = SqlitePoolOptions::new()
        .max_connections(max_connections)
        .connect_with(options)
        .await?;
    Ok(SqlStore::new(pool, cache))
}

/// SQLite allocates with the C library's malloc (Herald's own allocations go
/// to mimalloc), and sqlx runs each connection on a thread of its own. glibc
/// gives every such thread an arena of its own (up to eight per core) and keeps
/// what is freed in each: `serve` peaked at 226 MiB through a
/// 1,000,000-message campaign with the default, 170 MiB with two arenas
/// (docs/benchmarks.md, "Closing the scale gaps"). `MALLOC_ARENA_MAX`, when
/// set, still decides.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            // SAFETY: mallopt only sets a parameter of glibc's allocator, and
            // M_ARENA_MAX may change at any time (it bounds arenas made later).
            ONCE.call_once(|| unsafe {
                libc::mallopt(libc::M_ARENA_MAX, 2);
            });
        }
    }
}

#[async_trait]
impl Dialect for Sqlite {
    // SQLite has one writer: any write statement takes its lock.
    const LOCK_COUNTERS: &'static str = "UPDATE message_counts SET n = n WHERE FALSE";
    // The write lock already excludes a delete; foreign keys check the rest.
    const LOCK_LIVE_CAMPAIGN: &'static str =
        "SELECT 1 FROM campaigns WHERE id = $1 AND status <> 'completed' AND deleted_at IS NULL";
    // The claim's transaction already holds the single write lock.
    const LOCK_USER_HAND_OUTS: &'static str = "SELECT $1 IS NOT NULL";
    const CONTACT_TIMEZONE: &'static str = "json_extract(k.attributes, '$.timezone')";
    const BACKEND: &'static str = "sqlite";

    async fn run_migrations(pool: &Pool<Self>) -> Result<(), StoreError> {
        sqlx::migrate!("../migrations/sqlite").run(pool).await?;
        Ok(())
    }

    async fn insert_queued(conn: &mut SqliteConnection, messages: &NewMessages<'_>) -> Result<u64, StoreError> {
        insert_queued_rows(conn, messages).await
    }

    /// Multi-row statements in one transaction: insert the contacts that are new,
    /// then link every contact of the chunk, in file order.
    async fn bulk_link(
        pool: &Pool<Self>,
        user_id: UserId,
        campaign_id: CampaignId,
        mut batches: ContactBatches,
        now: DateTime<Utc>,
    ) -> Result<LinkOutcome, StoreError> {
        let mut tx = pool.begin().await?;
        let outcome = link_rows(&mut tx, user_id, campaign_id, &mut batches, now).await?;
        tx.commit().await?;
        Ok(outcome)
    }
}

/// Multi-row statements (SQLite has no arrays to bind): values shared by all
/// rows are bound once, each row binds four.
async fn insert_queued_rows(conn: &mut SqliteConnection, messages: &NewMessages<'_>) -> Result<u64, StoreError> {
    let mut queued = 0;
    for chunk in messages.rows.chunks(QUEUED_CHUNK) {
        let mut insert = QueryBuilder::<Sqlite>::new(
            "INSERT INTO messages (id, campaign_id, contact_id, task_id, variant, status, carrier, \
             phone_number, not_before, created_at, updated_at) SELECT v.column1, ",
        );
        insert.push_bind(messages.campaign_id).push(", v.column2, ");
        insert.push_bind(messages.task_id).push(", v.column3, 'queued', ");
        insert.push_bind(messages.carrier).push(", v.column4, ");
        insert.push_bind(messages.not_before).push(", ");
        insert.push_bind(messages.now).push(", ");
        insert.push_bind(messages.now).push(" FROM (");
        insert.push_values(chunk, |mut row, (id, contact_id, variant, phone)| {
            row.push_bind(*id)
                .push_bind(*contact_id)
                .push_bind(variant.as_str())
                .push_bind(*phone);
        });
        // The unique (campaign, contact) index skips contacts that have a
        // message already (a second send): no anti-join over the messages.
        insert.push(") AS v WHERE true ON CONFLICT (campaign_id, contact_id) DO NOTHING");
        queued += insert
            .build()
            .persistent(false)
            .execute(&mut *conn)
            .await?
            .rows_affected();
    }
    Ok(queued)
}

/// Rows per queueing insert: 4 parameters a row.
const QUEUED_CHUNK: usize = 5_000;

/// The rows of a bulk link, in the caller's transaction.
async fn link_rows(
    tx: &mut sqlx::Transaction<'static, Sqlite>,
    user_id: UserId,
    campaign_id: CampaignId,
    batches: &mut ContactBatches,
    now: DateTime<Utc>,
) -> Result<LinkOutcome, StoreError> {
    {
        let mut outcome = LinkOutcome::default();
        let mut position: i64 = 0;
        while let Some(batch) = next_rows(batches).await? {
            for chunk in batch.chunks(CONTACT_CHUNK) {
                // Values shared by every row are bound once; each row binds 4.
                let mut insert = QueryBuilder::<Sqlite>::new(
                    "INSERT INTO contacts (id, user_id, phone_number, name, attributes, created_at, updated_at) \
                     SELECT v.column1, ",
                );
                insert.push_bind(user_id).push(", v.column2, v.column3, v.column4, ");
                insert.push_bind(now).push(", ").push_bind(now).push(" FROM (");
                insert.push_values(chunk, |mut row, contact| {
                    row.push_bind(Uuid::now_v7())
                        .push_bind(contact.phone_number.as_str())
                        .push_bind(contact.name.as_str())
                        .push_bind(Json(&contact.attributes));
                });
                insert.push(") AS v WHERE true ON CONFLICT (user_id, phone_number) DO NOTHING");
                insert.build().persistent(false).execute(&mut **tx).await?;

                // Positions continue the campaign's, without gaps: contacts
                // already linked, and repeats within the chunk, are left out
                // before numbering (see the migration's `position`).
                let mut link = QueryBuilder::<Sqlite>::new("WITH v (phone, ord) AS (");
                link.push_values(chunk, |mut row, contact| {
                    position += 1;
                    row.push_bind(contact.phone_number.as_str()).push_bind(position);
                });
                link.push(") INSERT INTO campaign_contacts (campaign_id, contact_id, added_at, position) SELECT ");
                link.push_bind(campaign_id).push(", fresh.id, ").push_bind(now);
                link.push(", (SELECT COALESCE((SELECT contacts FROM campaign_sizes WHERE campaign_id = ");
                link.push_bind(campaign_id);
                link.push(
                    "), 0)) + row_number() OVER (ORDER BY fresh.ord) FROM (SELECT c.id, MIN(v.ord) AS ord FROM v ",
                );
                link.push("JOIN contacts c ON c.user_id = ").push_bind(user_id);
                link.push(" AND c.phone_number = v.phone WHERE NOT EXISTS (SELECT 1 FROM campaign_contacts l ");
                link.push("WHERE l.campaign_id = ").push_bind(campaign_id);
                link.push(" AND l.contact_id = c.id) GROUP BY c.id) AS fresh ORDER BY fresh.ord");
                let linked = link.build().persistent(false).execute(&mut **tx).await?.rows_affected();
                sqlx::query(ADD_TO_CAMPAIGN_SIZE)
                    .bind(campaign_id)
                    .bind(linked as i64)
                    .execute(&mut **tx)
                    .await?;
                outcome.linked += linked;
                outcome.already_linked += chunk.len() as u64 - linked;
            }
        }
        let total: i64 = sqlx::query_scalar(COUNT_CAMPAIGN_CONTACTS)
            .bind(campaign_id)
            .fetch_one(&mut **tx)
            .await?;
        outcome.total_contacts = total as u64;
        Ok(outcome)
    }
}

/// Rows per multi-row statement: 4 parameters a row stays under SQLite's 32,766.
const CONTACT_CHUNK: usize = 8_000;

/// For unit tests: a migrated in-memory store holding one user's draft
/// campaign "Spring": as created, and as read back.
#[cfg(test)]
pub(crate) async fn with_a_campaign() -> (
    SqliteStore,
    crate::domain::campaign::Campaign,
    crate::domain::campaign::Campaign,
) {
    use crate::domain::campaign::{CampaignChanges, CampaignRules, create};
    use crate::domain::ids::{CampaignId, UserId};
    use crate::store::{CampaignStore, OpsStore};
    let store = connect("sqlite::memory:", 1, 16, ReadCache::disabled()).await.unwrap();
    store.migrate().await.unwrap();
    let (user, now) = (UserId::new(), chrono::Utc::now());
    store.ensure_user(user, now).await.unwrap();
    let changes = CampaignChanges {
        name: Some("Spring".into()),
        message_template: Some("Hi".into()),
        ..Default::default()
    };
    let created = create(
        CampaignId::new(),
        user,
        changes,
        &CampaignRules {
            carriers: &[],
            max_daily_limit: 1000,
        },
        now,
    )
    .unwrap();
    store.insert_campaign(&created, &[]).await.unwrap();
    let stored = store.campaign(user, created.id).await.unwrap().expect("stored");
    (store, created, stored)
}
