//! The sending half: queueing, claiming hand-offs, applying results and receipts.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use const_format::concatcp;
use sqlx::types::Json;
use sqlx::{ColumnIndex, Executor, QueryBuilder};
use uuid::Uuid;

use super::{Bind, Column, Dialect, MESSAGE_COLUMNS, NewMessages, ROWS_PER_STATEMENT, SqlStore, push_list};
use crate::bus::event::{Event, build};
use crate::domain::contact::Attributes;
use crate::domain::contact::ConsentSource;
use crate::domain::ids::{CampaignId, ContactId, MessageId, TaskId, UserId};
use crate::domain::message::{
    ClaimedMessage, MessageChange, MessageRecord, MessageStatus, Receipt, ReceiptOutcome, SendRequest, TaskReport,
    UNKNOWN_OUTCOME, Verdict,
};
use crate::domain::variant::variant_for;
use crate::store::columns::Nullable;
use crate::store::{AppliedResults, Claim, Claimed, ConsentTarget, QueueStep, SendingStore, StoreError};

/// `RETURNING` columns of [`ClaimedMessage`]: a message with its contact's name
/// and attributes (scalar subqueries: SQLite's `RETURNING` cannot join).
const CLAIMED_COLUMNS: &str = "messages.id, messages.campaign_id, messages.contact_id, messages.variant, \
     messages.hand_offs AS hand_off, messages.attempts, messages.carrier, messages.phone_number, \
     (SELECT name FROM contacts WHERE contacts.id = messages.contact_id) AS name, \
     (SELECT attributes FROM contacts WHERE contacts.id = messages.contact_id) AS attributes";

/// `RETURNING` columns of [`QueuingTask`] on `send_tasks`.
const QUEUING_TASK_COLUMNS: &str = "campaign_id, queued_through, carrier, not_before, b_percentage, \
     (SELECT total_limit FROM campaigns WHERE campaigns.id = send_tasks.campaign_id) AS total_limit, \
     (SELECT 1 FROM campaigns WHERE campaigns.id = send_tasks.campaign_id \
      AND campaigns.status IN ('active', 'paused') AND campaigns.deleted_at IS NULL) AS sendable";

/// Ids per `… WHERE id IN (…)` of a claim: one bound parameter each, so a
/// whole claim (`MAX_CLAIM`, 2,000) is one statement, well under either
/// database's parameter limit (SQLite 32,766; PostgreSQL 65,535).
const IDS_PER_STATEMENT: usize = 2_000;
/// Hand-out records per insert: four parameters each, a whole claim at once.
const HAND_OUT_RECORDS_PER_STATEMENT: usize = 2_000;

/// Held messages by (rule, until), each with the recipient's zones: one
/// update per group.
type Holds = HashMap<(String, DateTime<Utc>), Vec<(MessageId, String)>>;

/// A `queuing` task as its next batch needs it.
#[derive(sqlx::FromRow)]
struct QueuingTask {
    campaign_id: CampaignId,
    queued_through: i64,
    carrier: String,
    not_before: DateTime<Utc>,
    b_percentage: Option<i32>,
    total_limit: Option<i32>,
    /// Set while the campaign is active or paused (not completed, not deleted).
    sendable: Option<i32>,
}

#[async_trait]
impl<DB> SendingStore for SqlStore<DB>
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
    async fn start_send(&self, request: &SendRequest, first: u32) -> Result<Option<QueueStep>, StoreError> {
        // The task and its first batch commit together: the background loop
        // never sees a task whose first batch the caller is still writing.
        let mut tx = self.pool.begin().await?;
        let task: Option<QueuingTask> = sqlx::query_as(concatcp!(
            "INSERT INTO send_tasks (id, campaign_id, queued, scheduled_for, created_at, queuing, queued_through, \
             carrier, not_before, b_percentage) \
             SELECT $1, id, 0, $3, $4, TRUE, 0, $5, $6, $7 FROM campaigns \
             WHERE id = $2 AND user_id = $8 AND status = 'active' AND deleted_at IS NULL RETURNING ",
            QUEUING_TASK_COLUMNS
        ))
        .bind(request.task_id)
        .bind(request.campaign_id)
        .bind(Nullable(request.scheduled_for))
        .bind(request.now)
        .bind(request.carrier.as_str())
        .bind(request.not_before)
        .bind(Nullable(request.b_percentage))
        .bind(request.user_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(task) = task else { return Ok(None) };
        let step = Self::queue_step(&mut tx, request.task_id, &task, first, request.now).await?;
        tx.commit().await?;
        Ok(Some(step))
    }

    async fn queue_batch(
        &self,
        task_id: TaskId,
        max: u32,
        now: DateTime<Utc>,
    ) -> Result<Option<QueueStep>, StoreError> {
        let mut tx = self.pool.begin().await?;
        // A no-op write first: takes the task's row lock (PostgreSQL) or the
        // write lock (SQLite), so two hosts resuming one task take turns and
        // each reads the cursor the other left.
        let task: Option<QueuingTask> = sqlx::query_as(concatcp!(
            "UPDATE send_tasks SET queued_through = queued_through WHERE id = $1 AND queuing RETURNING ",
            QUEUING_TASK_COLUMNS
        ))
        .bind(task_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(task) = task else { return Ok(None) };
        let step = Self::queue_step(&mut tx, task_id, &task, max, now).await?;
        tx.commit().await?;
        Ok(Some(step))
    }

    async fn queuing_tasks(&self, max: u32) -> Result<Vec<TaskId>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT id FROM send_tasks WHERE queuing ORDER BY created_at LIMIT $1")
                .bind(i64::from(max))
                .fetch_all(&self.pool)
                .await?,
        )
    }

    async fn task(&self, user_id: UserId, task_id: TaskId) -> Result<Option<TaskReport>, StoreError> {
        let row: Option<(TaskId, CampaignId, i64, DateTime<Utc>, Option<DateTime<Utc>>, bool)> = sqlx::query_as(
            "SELECT t.id, t.campaign_id, CAST(t.queued AS BIGINT), t.created_at, t.scheduled_for, t.queuing \
             FROM send_tasks t JOIN campaigns c ON c.id = t.campaign_id \
             WHERE t.id = $1 AND c.user_id = $2 AND c.deleted_at IS NULL",
        )
        .bind(task_id)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some((id, campaign_id, queued, created_at, scheduled_for, queuing)) = row else {
            return Ok(None);
        };
        let counts: Vec<(MessageStatus, String, i64)> = sqlx::query_as(
            "SELECT status, hold, CAST(SUM(n) AS BIGINT) FROM message_counts WHERE campaign_id = $1 AND task_id = $2 \
             GROUP BY status, hold",
        )
        .bind(campaign_id)
        .bind(task_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(Some(TaskReport {
            id,
            campaign_id,
            queued: queued as u64,
            queuing,
            created_at,
            scheduled_for,
            counts: counts.into_iter().map(|(s, h, n)| (s, h, n.max(0) as u64)).collect(),
        }))
    }

    async fn wait_until(&self, campaign_id: CampaignId, until: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO campaign_waits (campaign_id, until) VALUES ($1, $2) \
             ON CONFLICT (campaign_id) DO UPDATE SET until = excluded.until",
        )
        .bind(campaign_id)
        .bind(until)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn claim_due(&self, claim: &Claim<'_>) -> Result<Claimed, StoreError> {
        let (campaign_id, now, day) = (claim.campaign_id, claim.now, claim.day);
        let mut tx = self.pool.begin().await?;
        // Locks the day's counter first, so concurrent schedulers cannot both spend it.
        let handed_today: i32 = sqlx::query_scalar(
            "INSERT INTO campaign_days (campaign_id, day, handed) VALUES ($1, $2, 0) \
             ON CONFLICT (campaign_id, day) DO UPDATE SET handed = campaign_days.handed RETURNING handed",
        )
        .bind(campaign_id)
        .bind(day)
        .fetch_one(&mut *tx)
        .await?;
        let room = i64::from(claim.daily_limit - handed_today).min(i64::from(claim.max));
        if room <= 0 {
            tx.commit().await?;
            return Ok(Claimed {
                day_used_up: true,
                ..Claimed::default()
            });
        }
        // The oldest due messages with what their jobs and the judge need.
        // EXPLAIN (1,000,000 queued in one campaign, both databases): the
        // partial index messages_due (campaign_id, not_before, id) WHERE
        // status = 'queued' gives them in order, each contact by primary key:
        // cost follows `room`, not the campaign. Materialized: right after a
        // big send PostgreSQL's statistics say no message is queued, and a
        // plan free to scan "the queued messages" ran for minutes.
        let candidates: Vec<ClaimedMessage> = sqlx::query_as(concatcp!(
            "WITH picked AS MATERIALIZED (SELECT m.id FROM messages m JOIN contacts k ON k.id = m.contact_id \
             WHERE m.campaign_id = $1 AND m.status = 'queued' AND m.not_before <= $2 AND NOT k.opted_out \
             ORDER BY m.not_before, m.id LIMIT $3) \
             SELECT ",
            CLAIMED_COLUMNS,
            " FROM messages JOIN picked ON picked.id = messages.id ORDER BY messages.not_before, messages.id"
        ))
        .bind(campaign_id)
        .bind(now)
        .bind(room)
        .fetch_all(&mut *tx)
        .await?;
        let histories = Self::recipient_histories(&mut tx, claim, &candidates).await?;
        let mut hand_out = Vec::new();
        let mut holds = Holds::new();
        let mut skips: HashMap<String, Vec<MessageId>> = HashMap::new();
        for message in candidates {
            // A retry is the same message: its own earlier hand-out does not count against it.
            let history: Vec<DateTime<Utc>> = histories
                .get(message.phone_number.as_str())
                .into_iter()
                .flatten()
                .filter(|(id, _)| *id != message.id)
                .map(|(_, at)| *at)
                .collect();
            match claim.judge.judge(&message, &history) {
                Verdict::HandOut { zones } => hand_out.push((message, zones)),
                Verdict::Hold { rule, until, zones } => {
                    holds.entry((rule, until)).or_default().push((message.id, zones));
                }
                Verdict::Skip { reason } => skips.entry(reason).or_default().push(message.id),
            }
        }
        let handed = Self::hand_out(&mut tx, claim, hand_out).await?;
        let held = Self::hold(&mut tx, holds, now).await?;
        let (skipped, skipped_events) = Self::skip(&mut tx, skips, now, claim.events_in_outbox).await?;
        sqlx::query("UPDATE campaign_days SET handed = handed + $3 WHERE campaign_id = $1 AND day = $2")
            .bind(campaign_id)
            .bind(day)
            .bind(handed.len() as i32)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        // Not used up yet even when this claim took the last of it: a
        // postponed hand-off gives its slot back the same day.
        Ok(Claimed {
            handed,
            held,
            skipped,
            skipped_events,
            day_used_up: false,
        })
    }

    async fn messages(&self, ids: &[MessageId]) -> Result<Vec<MessageRecord>, StoreError> {
        let mut records = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            let mut select =
                QueryBuilder::<DB>::new(concatcp!("SELECT ", MESSAGE_COLUMNS, " FROM messages WHERE id IN "));
            push_list(&mut select, chunk);
            records.extend(
                select
                    .build_query_as::<MessageRecord>()
                    .persistent(false)
                    .fetch_all(&self.pool)
                    .await?,
            );
        }
        Ok(records)
    }

    async fn count_in_flight(&self) -> Result<u64, StoreError> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE status = 'sending' AND outcome_unknown_at IS NULL")
                .fetch_one(&self.pool)
                .await?;
        Ok(n as u64)
    }

    async fn overdue_hand_offs(
        &self,
        cutoff: DateTime<Utc>,
        now: DateTime<Utc>,
        max: u32,
        new_hand_off: bool,
    ) -> Result<Vec<ClaimedMessage>, StoreError> {
        Ok(sqlx::query_as(concatcp!(
            "UPDATE messages SET updated_at = $2, hand_offs = hand_offs + $4 WHERE id IN \
             (SELECT id FROM messages WHERE status = 'sending' AND outcome_unknown_at IS NULL AND updated_at < $1 \
             ORDER BY updated_at LIMIT $3) AND status = 'sending' RETURNING ",
            CLAIMED_COLUMNS
        ))
        .bind(cutoff)
        .bind(now)
        .bind(i64::from(max))
        .bind(i32::from(new_hand_off))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn apply_changes(&self, changes: &[MessageChange]) -> Result<AppliedResults, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut applied = Vec::with_capacity(changes.len());
        for chunk in changes.chunks(ROWS_PER_STATEMENT) {
            // Slots first: the guard below reads the hand-off the change is for.
            let releasing: Vec<_> = chunk.iter().filter(|c| c.release_slot).collect();
            if !releasing.is_empty() {
                let mut release = QueryBuilder::<DB>::new("WITH v (id, hand_off) AS (");
                release.push_values(&releasing, |mut row, c| {
                    row.push_bind(c.id).push_bind(c.hand_off);
                });
                release.push(
                    ") UPDATE campaign_days SET handed = campaign_days.handed - d.n FROM \
                     (SELECT m.campaign_id, m.handed_day, COUNT(*) AS n FROM messages m \
                     JOIN v ON m.id = v.id AND m.hand_offs = v.hand_off \
                     WHERE m.status = 'sending' AND m.handed_day IS NOT NULL \
                     GROUP BY m.campaign_id, m.handed_day) AS d \
                     WHERE campaign_days.campaign_id = d.campaign_id AND campaign_days.day = d.handed_day",
                );
                release.build().persistent(false).execute(&mut *tx).await?;
            }
            let mut update = QueryBuilder::<DB>::new(
                "WITH v (id, hand_off, status, attempts, carrier_message_id, segments, not_before, error, at, \
                 release_slot, unknown) AS (",
            );
            update.push_values(chunk, |mut row, c| {
                row.push_bind(c.id)
                    .push_bind(c.hand_off)
                    .push_bind(c.status)
                    .push_bind(c.attempts)
                    .push_bind(Nullable(c.carrier_message_id.as_deref()))
                    .push_bind(Nullable(c.segments))
                    .push_bind(Nullable(c.not_before))
                    .push_bind(Nullable(c.error.as_deref()))
                    .push_bind(c.at)
                    .push_bind(c.release_slot)
                    .push_bind(c.outcome_unknown);
            });
            update.push(concatcp!(
                ") UPDATE messages SET status = v.status, attempts = v.attempts, \
                 carrier_message_id = COALESCE(v.carrier_message_id, messages.carrier_message_id), \
                 segments = COALESCE(v.segments, messages.segments), \
                 not_before = COALESCE(v.not_before, messages.not_before), last_error = v.error, updated_at = v.at, \
                 sent_at = CASE WHEN v.status IN ('sent', 'delivered') THEN v.at ELSE messages.sent_at END, \
                 delivered_at = CASE WHEN v.status = 'delivered' THEN v.at ELSE messages.delivered_at END, \
                 outcome_unknown_at = CASE WHEN v.unknown THEN v.at ELSE NULL END, \
                 handed_day = CASE WHEN v.release_slot THEN NULL ELSE messages.handed_day END \
                 FROM v WHERE messages.id = v.id AND messages.status = 'sending' AND messages.hand_offs = v.hand_off \
                 AND messages.outcome_unknown_at IS NULL \
                 RETURNING ",
                MESSAGE_COLUMNS
            ));
            applied.extend(
                update
                    .build_query_as::<MessageRecord>()
                    .persistent(false)
                    .fetch_all(&mut *tx)
                    .await?,
            );
        }
        let mut results = AppliedResults::default();
        // Carriers' opt-outs, by message: the contact is opted out with the failure.
        let refused: HashMap<MessageId, (&str, DateTime<Utc>)> = changes
            .iter()
            .filter_map(|c| Some((c.id, (c.carrier_opt_out.as_deref()?, c.at))))
            .collect();
        for message in &applied {
            let Some(&(refusal, at)) = refused.get(&message.id) else {
                continue;
            };
            let detail = format!("{refusal} (via {})", message.carrier);
            let target = ConsentTarget::Contact(message.contact_id);
            let (contacts, cancelled) =
                Self::set_consent_in(&mut tx, target, true, ConsentSource::Carrier, &detail, at).await?;
            results.opted_out.extend(contacts);
            results.cancelled.extend(cancelled);
        }
        tx.commit().await?;
        results.messages = applied;
        Ok(results)
    }

    async fn apply_receipt(&self, receipt: &Receipt) -> Result<ReceiptOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        if let Some(record) = Self::reconcile_unknown(&mut tx, receipt).await? {
            tx.commit().await?;
            return Ok(ReceiptOutcome::Applied(record));
        }
        if let Some(record) = Self::apply_receipt_to_sent(&mut tx, receipt).await? {
            tx.commit().await?;
            return Ok(ReceiptOutcome::Applied(record));
        }
        let known: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM messages WHERE carrier = $1 AND carrier_message_id = $2 LIMIT 1")
                .bind(receipt.carrier.as_str())
                .bind(receipt.carrier_message_id.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        // Acceptance alone is what a send result records: keep it only to
        // reconcile a message it names.
        if known.is_some() || (receipt.status == MessageStatus::Sent && receipt.message_id.is_none()) {
            return Ok(ReceiptOutcome::Ignored);
        }
        sqlx::query(
            "INSERT INTO early_receipts (carrier, carrier_message_id, status, error, message_id, received_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(receipt.carrier.as_str())
        .bind(receipt.carrier_message_id.as_str())
        .bind(receipt.status)
        .bind(Nullable(receipt.error.as_deref()))
        .bind(Nullable(receipt.message_id))
        .bind(receipt.at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ReceiptOutcome::Kept)
    }

    async fn apply_early_receipts(
        &self,
        forget_before: Option<DateTime<Utc>>,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        // Receipts whose message now carries their carrier id (its send
        // result landed), or is held with an unknown outcome they name. Read
        // outside a transaction: after most batches there are none, and the
        // writes below are guarded, so a receipt applied twice changes nothing.
        let landed: Vec<Receipt> = sqlx::query_as(
            "SELECT r.carrier, r.carrier_message_id, r.status, r.error, r.message_id, r.received_at AS at \
             FROM early_receipts r WHERE EXISTS (SELECT 1 FROM messages m WHERE m.carrier = r.carrier \
             AND m.carrier_message_id = r.carrier_message_id AND m.status IN ('sent', 'delivered', 'failed')) \
             OR EXISTS (SELECT 1 FROM messages m WHERE m.id = r.message_id AND m.carrier = r.carrier \
             AND m.outcome_unknown_at IS NOT NULL) \
             ORDER BY r.received_at LIMIT 500",
        )
        .fetch_all(&self.pool)
        .await?;
        if landed.is_empty() && forget_before.is_none() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await?;
        let mut applied = Vec::new();
        for receipt in landed {
            match Self::reconcile_unknown(&mut tx, &receipt).await? {
                Some(record) => applied.push(record),
                None => applied.extend(Self::apply_receipt_to_sent(&mut tx, &receipt).await?),
            }
            sqlx::query("DELETE FROM early_receipts WHERE carrier = $1 AND carrier_message_id = $2 AND status = $3")
                .bind(receipt.carrier.as_str())
                .bind(receipt.carrier_message_id.as_str())
                .bind(receipt.status)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(forget_before) = forget_before {
            sqlx::query("DELETE FROM early_receipts WHERE received_at < $1")
                .bind(forget_before)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(applied)
    }

    async fn expire_unknown_outcomes(
        &self,
        cutoff: DateTime<Utc>,
        at: DateTime<Utc>,
        max: u32,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        Ok(sqlx::query_as(concatcp!(
            "UPDATE messages SET status = 'failed', last_error = $3, outcome_unknown_at = NULL, updated_at = $2 \
             WHERE id IN (SELECT id FROM messages WHERE outcome_unknown_at < $1 ORDER BY outcome_unknown_at LIMIT $4) \
             AND status = 'sending' RETURNING ",
            MESSAGE_COLUMNS
        ))
        .bind(cutoff)
        .bind(at)
        .bind(UNKNOWN_OUTCOME)
        .bind(i64::from(max))
        .fetch_all(&self.pool)
        .await?)
    }
}

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
    /// Each capped candidate's recipient's recent hand-outs (any campaign of
    /// the user), by phone, with the message each was.
    async fn recipient_histories(
        conn: &mut DB::Connection,
        claim: &Claim<'_>,
        candidates: &[ClaimedMessage],
    ) -> Result<HashMap<String, Vec<(MessageId, DateTime<Utc>)>>, StoreError> {
        let mut phones = Vec::new();
        let mut reach = chrono::Duration::zero();
        for message in candidates {
            if let Some(needed) = claim.judge.history_needed(message) {
                phones.push(message.phone_number.as_str());
                reach = reach.max(needed);
            }
        }
        phones.sort_unstable();
        phones.dedup();
        if phones.is_empty() {
            return Ok(HashMap::new());
        }
        // Claims of the user's other campaigns (other rows of campaign_days)
        // could read the same recipient's history at once and both hand out
        // the last message a cap allows: they take turns per user.
        sqlx::query(DB::LOCK_USER_HAND_OUTS)
            .bind(claim.user_id)
            .execute(&mut *conn)
            .await?;
        let mut histories: HashMap<String, Vec<(MessageId, DateTime<Utc>)>> = HashMap::new();
        for chunk in phones.chunks(ROWS_PER_STATEMENT) {
            // EXPLAIN: recipient_sends_by_phone (user_id, phone_number, handed_at), one range per phone.
            let mut select = QueryBuilder::<DB>::new(
                "SELECT phone_number, message_id, handed_at FROM recipient_sends WHERE user_id = ",
            );
            select.push_bind(claim.user_id);
            select.push(" AND handed_at > ");
            select.push_bind(claim.now - reach);
            select.push(" AND phone_number IN ");
            push_list(&mut select, chunk);
            let rows: Vec<(String, MessageId, DateTime<Utc>)> =
                select.build_query_as().persistent(false).fetch_all(&mut *conn).await?;
            for (phone, message_id, at) in rows {
                histories.entry(phone).or_default().push((message_id, at));
            }
        }
        Ok(histories)
    }

    /// Takes the messages the judge let go for a hand-off, each with the zones
    /// it was judged in; returns those still queued (a cancel may have moved
    /// one on), with their new hand-off number.
    async fn hand_out(
        conn: &mut DB::Connection,
        claim: &Claim<'_>,
        messages: Vec<(ClaimedMessage, String)>,
    ) -> Result<Vec<ClaimedMessage>, StoreError> {
        let mut taken: HashMap<MessageId, i32> = HashMap::with_capacity(messages.len());
        let mut by_zones: HashMap<&str, Vec<MessageId>> = HashMap::new();
        for (message, zones) in &messages {
            by_zones.entry(zones.as_str()).or_default().push(message.id);
        }
        for (zones, ids) in by_zones {
            for chunk in ids.chunks(IDS_PER_STATEMENT) {
                let mut update = QueryBuilder::<DB>::new(
                    "UPDATE messages SET status = 'sending', hand_offs = hand_offs + 1, updated_at = ",
                );
                update.push_bind(claim.now);
                update.push(", handed_day = ");
                update.push_bind(claim.day);
                update.push(", hold_rule = '', handed_at = COALESCE(handed_at, ");
                update.push_bind(claim.now);
                update.push("), rule_set = ");
                update.push_bind(claim.judge.rule_set());
                update.push(", zones = ");
                update.push_bind(zones);
                update.push(" WHERE status = 'queued' AND id IN ");
                push_list(&mut update, chunk);
                update.push(" RETURNING id, hand_offs");
                let rows: Vec<(MessageId, i32)> =
                    update.build_query_as().persistent(false).fetch_all(&mut *conn).await?;
                taken.extend(rows);
            }
        }
        let handed: Vec<ClaimedMessage> = messages
            .into_iter()
            .filter_map(|(mut m, _)| {
                m.hand_off = *taken.get(&m.id)?;
                Some(m)
            })
            .collect();
        // Every hand-out, for the caps' rolling windows: a state cap counts
        // messages of campaigns on the campaign's clock too, and a frequency
        // cap switched on later finds the past. A message handed out again
        // (a retry, a postponed one) counts once, at its latest hand-out.
        for chunk in handed.chunks(HAND_OUT_RECORDS_PER_STATEMENT) {
            let mut insert =
                QueryBuilder::<DB>::new("INSERT INTO recipient_sends (message_id, user_id, phone_number, handed_at) ");
            insert.push_values(chunk, |mut row, m| {
                row.push_bind(m.id)
                    .push_bind(claim.user_id)
                    .push_bind(m.phone_number.as_str())
                    .push_bind(claim.now);
            });
            insert.push(" ON CONFLICT (message_id) DO UPDATE SET handed_at = excluded.handed_at");
            insert.build().persistent(false).execute(&mut *conn).await?;
        }
        Ok(handed)
    }

    /// Puts held messages back to wait for their instant, with the rule that
    /// held them, and records each hold for the audit; returns how many.
    async fn hold(conn: &mut DB::Connection, holds: Holds, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let mut held = 0;
        for ((rule, until), messages) in &holds {
            for chunk in messages.chunks(ROWS_PER_STATEMENT) {
                let mut update = QueryBuilder::<DB>::new("UPDATE messages SET not_before = ");
                update.push_bind(*until);
                update.push(", hold_rule = ");
                update.push_bind(rule.as_str());
                update.push(", updated_at = ");
                update.push_bind(now);
                update.push(" WHERE status = 'queued' AND id IN ");
                let ids: Vec<MessageId> = chunk.iter().map(|(id, _)| *id).collect();
                push_list(&mut update, &ids);
                update.push(" RETURNING id");
                let updated: Vec<MessageId> = update
                    .build_query_scalar()
                    .persistent(false)
                    .fetch_all(&mut *conn)
                    .await?;
                held += updated.len();
                // Only those still queued (a cancel may have moved one on) get a hold on record.
                let recorded: Vec<&(MessageId, String)> = chunk.iter().filter(|(id, _)| updated.contains(id)).collect();
                if recorded.is_empty() {
                    continue;
                }
                let mut insert =
                    QueryBuilder::<DB>::new("INSERT INTO message_holds (message_id, rule, zones, held_at, until) ");
                insert.push_values(recorded, |mut row, (id, zones)| {
                    row.push_bind(*id)
                        .push_bind(rule.as_str())
                        .push_bind(zones.as_str())
                        .push_bind(now)
                        .push_bind(*until);
                });
                insert.build().persistent(false).execute(&mut *conn).await?;
            }
        }
        Ok(held)
    }

    /// Fails the messages the judge skipped, with their reason; returns how
    /// many and their `message.failed` events (appended to the outbox too
    /// when asked to).
    async fn skip(
        conn: &mut DB::Connection,
        skips: HashMap<String, Vec<MessageId>>,
        now: DateTime<Utc>,
        events_in_outbox: bool,
    ) -> Result<(usize, Vec<Event>), StoreError> {
        let (mut skipped, mut events) = (0, Vec::new());
        for (reason, ids) in &skips {
            for chunk in ids.chunks(ROWS_PER_STATEMENT) {
                let mut update =
                    QueryBuilder::<DB>::new("UPDATE messages SET status = 'failed', hold_rule = '', last_error = ");
                update.push_bind(reason.as_str());
                update.push(", updated_at = ");
                update.push_bind(now);
                update.push(" WHERE status = 'queued' AND id IN ");
                push_list(&mut update, chunk);
                update.push(concatcp!(" RETURNING ", MESSAGE_COLUMNS));
                let failed: Vec<MessageRecord> =
                    update.build_query_as().persistent(false).fetch_all(&mut *conn).await?;
                let failed_events: Vec<Event> = failed.iter().filter_map(|m| build::message(m, now)).collect();
                if events_in_outbox {
                    Self::append_events(&mut *conn, &failed_events).await?;
                }
                skipped += failed.len();
                events.extend(failed_events);
            }
        }
        Ok((skipped, events))
    }

    /// One batch of a task's queueing and its cursor, in the caller's
    /// transaction. A campaign completed or deleted meanwhile gets no more
    /// messages: its task is done.
    async fn queue_step(
        conn: &mut DB::Connection,
        task_id: TaskId,
        task: &QueuingTask,
        max: u32,
        now: DateTime<Utc>,
    ) -> Result<QueueStep, StoreError> {
        let live: Option<i32> = match task.sendable {
            Some(_) => {
                sqlx::query_scalar(DB::LOCK_LIVE_CAMPAIGN)
                    .bind(task.campaign_id)
                    .fetch_optional(&mut *conn)
                    .await?
            }
            None => None,
        };
        let (through, queued, done) = match live {
            Some(_) => Self::queue_next(&mut *conn, task_id, task, max, now).await?,
            None => (task.queued_through, 0, true),
        };
        sqlx::query("UPDATE send_tasks SET queued_through = $2, queued = queued + $3, queuing = $4 WHERE id = $1")
            .bind(task_id)
            .bind(through)
            .bind(queued as i64)
            .bind(!done)
            .execute(&mut *conn)
            .await?;
        Ok(QueueStep {
            campaign_id: task.campaign_id,
            queued,
            done,
        })
    }

    /// One batch of a task's queueing, in the caller's transaction: returns
    /// the position reached, the messages created, and whether it is done.
    async fn queue_next(
        conn: &mut DB::Connection,
        task_id: TaskId,
        task: &QueuingTask,
        max: u32,
        now: DateTime<Utc>,
    ) -> Result<(i64, u64, bool), StoreError> {
        let campaign_id = task.campaign_id;
        let room = match task.total_limit {
            // The counters, not a count of the messages (see `message_counts`).
            Some(limit) => {
                let existing: i64 = sqlx::query_scalar(
                    "SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM message_counts WHERE campaign_id = $1",
                )
                .bind(campaign_id)
                .fetch_one(&mut *conn)
                .await?;
                (i64::from(limit) - existing).max(0)
            }
            None => i64::MAX,
        };
        // The next contacts by position: a closed range of the unique
        // (campaign_id, position) index (positions have no gaps, so it holds
        // `max` links at most), then each contact by primary key; opted-out
        // ones are read too, to move past them. The closed range keeps the
        // planner's estimate exact at any depth.
        let next: Vec<(i64, ContactId, String, bool)> = sqlx::query_as(
            "SELECT l.position, l.contact_id, k.phone_number, k.opted_out FROM campaign_contacts l \
             JOIN contacts k ON k.id = l.contact_id \
             WHERE l.campaign_id = $1 AND l.position > $2 AND l.position <= $3 ORDER BY l.position",
        )
        .bind(campaign_id)
        .bind(task.queued_through)
        .bind(task.queued_through + i64::from(max))
        .fetch_all(&mut *conn)
        .await?;
        let mut through = task.queued_through;
        let mut eligible = Vec::with_capacity(next.len());
        for (position, contact_id, phone, opted_out) in &next {
            if eligible.len() as i64 == room {
                break;
            }
            through = *position;
            if !opted_out {
                eligible.push((*contact_id, phone.as_str()));
            }
        }
        let room_cut_short = through != next.last().map_or(through, |n| n.0);
        let messages = NewMessages {
            campaign_id,
            task_id,
            carrier: &task.carrier,
            not_before: task.not_before,
            now,
            rows: eligible
                .into_iter()
                .map(|(contact_id, phone)| {
                    let variant = variant_for(campaign_id, contact_id, task.b_percentage);
                    (MessageId::new(), contact_id, variant, phone)
                })
                .collect(),
        };
        let queued = if messages.rows.is_empty() {
            0
        } else {
            DB::insert_queued(&mut *conn, &messages).await?
        };
        let limit_reached = room - queued as i64 <= 0;
        let all_read = !room_cut_short && (next.len() as u64) < u64::from(max);
        Ok((through, queued, limit_reached || all_read))
    }
}
