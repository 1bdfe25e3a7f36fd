//! The sending half of the shared SQL: queueing, claiming hand-offs, applying
//! results and receipts, consent by phone. Expanded inside `impl_store!`, so
//! both backends run the same statements.

/// Columns of `MessageRow`, for `RETURNING` and `SELECT` on `messages`.
macro_rules! message_columns {
    () => {
        "messages.id, (SELECT user_id FROM campaigns WHERE campaigns.id = messages.campaign_id) AS user_id, \
         messages.campaign_id, messages.contact_id, messages.variant, messages.status, messages.carrier, \
         messages.carrier_message_id, messages.segments, messages.attempts, messages.last_error, messages.not_before, \
         messages.hand_offs"
    };
}

/// `RETURNING` columns of `ClaimedRow`: a message with its contact's name and
/// attributes (scalar subqueries: SQLite's `RETURNING` cannot join).
macro_rules! claimed_returning {
    () => {
        "messages.id, messages.campaign_id, messages.contact_id, messages.variant, messages.hand_offs, \
         messages.attempts, messages.carrier, messages.phone_number, \
         (SELECT name FROM contacts WHERE contacts.id = messages.contact_id) AS name, \
         (SELECT attributes FROM contacts WHERE contacts.id = messages.contact_id) AS attributes"
    };
}

/// Rows per multi-row statement.
pub(super) const ROWS_PER_STATEMENT: usize = 500;

/// Appends `(id, id, ...)`.
macro_rules! push_id_list {
    ($builder:expr, $ids:expr) => {{
        $builder.push("(");
        let mut list = $builder.separated(", ");
        for id in $ids {
            list.push_bind(*id);
        }
        list.push_unseparated(")");
    }};
}

macro_rules! impl_sending_store {
    ($store:ty, $db:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::SendingStore for $store {
        async fn queue_send(
            &self,
            request: &$crate::domain::message::SendRequest,
            total_limit: Option<i32>,
            assign: &(dyn Fn(uuid::Uuid) -> $crate::domain::variant::Variant + Sync),
        ) -> Result<Option<u64>, $crate::store::StoreError> {
            let mut tx = self.pool.begin().await?;
            // A no-op write: takes the campaign's row lock (PostgreSQL) or the
            // write lock (SQLite), so concurrent sends queue one after the other.
            let active = sqlx::query("UPDATE campaigns SET status = status WHERE id = $1 AND user_id = $2 AND status = 'active'")
                .bind(request.campaign_id)
                .bind(request.user_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if active == 0 {
                return Ok(None);
            }
            let mut room = match total_limit {
                Some(limit) => {
                    let existing: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE campaign_id = $1")
                        .bind(request.campaign_id)
                        .fetch_one(&mut *tx)
                        .await?;
                    (i64::from(limit) - existing).max(0)
                }
                None => i64::MAX,
            };
            sqlx::query("INSERT INTO send_tasks (id, campaign_id, queued, scheduled_for, created_at) VALUES ($1, $2, 0, $3, $4)")
                .bind(request.task_id)
                .bind(request.campaign_id)
                .bind(request.scheduled_for)
                .bind(request.now)
                .execute(&mut *tx)
                .await?;
            let mut queued: u64 = 0;
            let mut after: i64 = -1;
            while room > 0 {
                let eligible: Vec<(i64, uuid::Uuid, String)> = sqlx::query_as(
                    "SELECT l.seq, l.contact_id, k.phone_number FROM campaign_contacts l \
                     JOIN contacts k ON k.id = l.contact_id \
                     WHERE l.campaign_id = $1 AND l.seq > $2 AND NOT k.opted_out \
                     AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.campaign_id = $1 AND m.contact_id = l.contact_id) \
                     ORDER BY l.seq LIMIT $3",
                )
                .bind(request.campaign_id)
                .bind(after)
                .bind(room.min(5_000))
                .fetch_all(&mut *tx)
                .await?;
                let Some(last) = eligible.last() else { break };
                after = last.0;
                room -= eligible.len() as i64;
                for chunk in eligible.chunks($crate::store::sending::ROWS_PER_STATEMENT) {
                    let mut insert = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO messages (id, campaign_id, contact_id, task_id, variant, status, carrier, phone_number, \
                         not_before, created_at, updated_at) ",
                    );
                    insert.push_values(chunk, |mut row, (_, contact_id, phone)| {
                        row.push_bind(uuid::Uuid::now_v7())
                            .push_bind(request.campaign_id)
                            .push_bind(*contact_id)
                            .push_bind(request.task_id)
                            .push_bind(assign(*contact_id).as_str())
                            .push_bind("queued")
                            .push_bind(request.carrier.as_str())
                            .push_bind(phone.as_str())
                            .push_bind(request.not_before)
                            .push_bind(request.now)
                            .push_bind(request.now);
                    });
                    queued += insert.build().execute(&mut *tx).await?.rows_affected();
                }
            }
            sqlx::query("UPDATE send_tasks SET queued = $2 WHERE id = $1")
                .bind(request.task_id)
                .bind(queued as i64)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(Some(queued))
        }

        async fn task(
            &self,
            user_id: uuid::Uuid,
            task_id: uuid::Uuid,
        ) -> Result<Option<$crate::domain::message::TaskReport>, $crate::store::StoreError> {
            let row: Option<(uuid::Uuid, uuid::Uuid, i64, chrono::DateTime<chrono::Utc>, Option<chrono::DateTime<chrono::Utc>>)> =
                sqlx::query_as(
                    "SELECT t.id, t.campaign_id, CAST(t.queued AS BIGINT), t.created_at, t.scheduled_for FROM send_tasks t \
                     JOIN campaigns c ON c.id = t.campaign_id WHERE t.id = $1 AND c.user_id = $2",
                )
                .bind(task_id)
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?;
            let Some((id, campaign_id, queued, created_at, scheduled_for)) = row else {
                return Ok(None);
            };
            let counts: Vec<(String, i64)> =
                sqlx::query_as("SELECT status, COUNT(*) FROM messages WHERE task_id = $1 GROUP BY status")
                    .bind(task_id)
                    .fetch_all(&self.pool)
                    .await?;
            Ok(Some($crate::domain::message::TaskReport {
                id,
                campaign_id,
                queued: queued as u64,
                created_at,
                scheduled_for,
                counts: counts
                    .into_iter()
                    .map(|(s, n)| Ok(($crate::store::rows::message_status(&s)?, n as u64)))
                    .collect::<Result<_, $crate::store::StoreError>>()?,
            }))
        }

        async fn campaign_by_id(
            &self,
            id: uuid::Uuid,
        ) -> Result<Option<$crate::domain::campaign::Campaign>, $crate::store::StoreError> {
            let row: Option<$crate::store::rows::CampaignRow> =
                sqlx::query_as(concat!("SELECT ", campaign_columns!(), " FROM campaigns WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
            row.map(TryInto::try_into).transpose()
        }

        async fn due_campaigns(
            &self,
            now: chrono::DateTime<chrono::Utc>,
        ) -> Result<Vec<$crate::domain::campaign::Campaign>, $crate::store::StoreError> {
            let rows: Vec<$crate::store::rows::CampaignRow> = sqlx::query_as(concat!(
                "SELECT ", campaign_columns!(), " FROM campaigns WHERE status = 'active' AND EXISTS \
                 (SELECT 1 FROM messages m WHERE m.campaign_id = campaigns.id AND m.status = 'queued' AND m.not_before <= $1)"
            ))
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
            rows.into_iter().map(TryInto::try_into).collect()
        }

        async fn postpone_due(
            &self,
            campaign_id: uuid::Uuid,
            now: chrono::DateTime<chrono::Utc>,
            until: chrono::DateTime<chrono::Utc>,
        ) -> Result<u64, $crate::store::StoreError> {
            let done = sqlx::query(
                "UPDATE messages SET not_before = $3, updated_at = $2 \
                 WHERE campaign_id = $1 AND status = 'queued' AND not_before <= $2",
            )
            .bind(campaign_id)
            .bind(now)
            .bind(until)
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected())
        }

        async fn claim_due(
            &self,
            campaign_id: uuid::Uuid,
            daily_limit: i32,
            day: chrono::NaiveDate,
            max: u32,
            now: chrono::DateTime<chrono::Utc>,
        ) -> Result<Vec<$crate::domain::message::ClaimedMessage>, $crate::store::StoreError> {
            let mut tx = self.pool.begin().await?;
            // Locks the day's counter first, so concurrent schedulers cannot both spend it.
            let handed: i32 = sqlx::query_scalar(
                "INSERT INTO campaign_days (campaign_id, day, handed) VALUES ($1, $2, 0) \
                 ON CONFLICT (campaign_id, day) DO UPDATE SET handed = campaign_days.handed RETURNING handed",
            )
            .bind(campaign_id)
            .bind(day)
            .fetch_one(&mut *tx)
            .await?;
            let room = i64::from(daily_limit - handed).min(i64::from(max));
            if room <= 0 {
                tx.commit().await?;
                return Ok(Vec::new());
            }
            // One statement takes the oldest due messages and returns what their jobs need.
            let rows: Vec<$crate::store::rows::ClaimedRow> = sqlx::query_as(concat!(
                "UPDATE messages SET status = 'sending', hand_offs = hand_offs + 1, updated_at = $2, handed_day = $4 \
                 WHERE status = 'queued' AND id IN (SELECT m.id FROM messages m JOIN contacts k ON k.id = m.contact_id \
                 WHERE m.campaign_id = $1 AND m.status = 'queued' AND m.not_before <= $2 AND NOT k.opted_out \
                 ORDER BY m.not_before, m.id LIMIT $3) RETURNING ",
                claimed_returning!()
            ))
            .bind(campaign_id)
            .bind(now)
            .bind(room)
            .bind(day)
            .fetch_all(&mut *tx)
            .await?;
            sqlx::query("UPDATE campaign_days SET handed = handed + $3 WHERE campaign_id = $1 AND day = $2")
                .bind(campaign_id)
                .bind(day)
                .bind(rows.len() as i32)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(rows.into_iter().map(Into::into).collect())
        }

        async fn messages(
            &self,
            ids: &[uuid::Uuid],
        ) -> Result<Vec<$crate::domain::message::MessageRecord>, $crate::store::StoreError> {
            let mut records = Vec::with_capacity(ids.len());
            for chunk in ids.chunks($crate::store::sending::ROWS_PER_STATEMENT) {
                let mut select = sqlx::QueryBuilder::<$db>::new(concat!("SELECT ", message_columns!(), " FROM messages WHERE id IN "));
                push_id_list!(select, chunk);
                let rows: Vec<$crate::store::rows::MessageRow> = select.build_query_as().fetch_all(&self.pool).await?;
                for row in rows {
                    records.push(row.try_into()?);
                }
            }
            Ok(records)
        }

        async fn count_in_flight(&self) -> Result<u64, $crate::store::StoreError> {
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE status = 'sending' AND outcome_unknown_at IS NULL")
                .fetch_one(&self.pool)
                .await?;
            Ok(n as u64)
        }

        async fn overdue_hand_offs(
            &self,
            cutoff: chrono::DateTime<chrono::Utc>,
            now: chrono::DateTime<chrono::Utc>,
            max: u32,
            new_hand_off: bool,
        ) -> Result<Vec<$crate::domain::message::ClaimedMessage>, $crate::store::StoreError> {
            let rows: Vec<$crate::store::rows::ClaimedRow> = sqlx::query_as(concat!(
                "UPDATE messages SET updated_at = $2, hand_offs = hand_offs + $4 WHERE id IN \
                 (SELECT id FROM messages WHERE status = 'sending' AND outcome_unknown_at IS NULL AND updated_at < $1 \
                 ORDER BY updated_at LIMIT $3) AND status = 'sending' RETURNING ",
                claimed_returning!()
            ))
            .bind(cutoff)
            .bind(now)
            .bind(i64::from(max))
            .bind(i32::from(new_hand_off))
            .fetch_all(&self.pool)
            .await?;
            Ok(rows.into_iter().map(Into::into).collect())
        }

        async fn apply_changes(
            &self,
            changes: &[$crate::domain::message::MessageChange],
        ) -> Result<Vec<$crate::domain::message::MessageRecord>, $crate::store::StoreError> {
            let mut tx = self.pool.begin().await?;
            let mut applied = Vec::with_capacity(changes.len());
            for chunk in changes.chunks($crate::store::sending::ROWS_PER_STATEMENT) {
                // Slots first: the guard below reads the hand-off the change is for.
                let releasing: Vec<_> = chunk.iter().filter(|c| c.release_slot).collect();
                if !releasing.is_empty() {
                    let mut release = sqlx::QueryBuilder::<$db>::new("WITH v (id, hand_off) AS (");
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
                    release.build().execute(&mut *tx).await?;
                }
                let mut update = sqlx::QueryBuilder::<$db>::new(
                    "WITH v (id, hand_off, status, attempts, carrier_message_id, segments, not_before, error, at, \
                     release_slot, unknown) AS (",
                );
                update.push_values(chunk, |mut row, c| {
                    row.push_bind(c.id)
                        .push_bind(c.hand_off)
                        .push_bind(c.status.as_str())
                        .push_bind(c.attempts)
                        .push_bind(c.carrier_message_id.as_deref())
                        .push_bind(c.segments)
                        .push_bind(c.not_before)
                        .push_bind(c.error.as_deref())
                        .push_bind(c.at)
                        .push_bind(c.release_slot)
                        .push_bind(c.outcome_unknown);
                });
                update.push(concat!(
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
                     RETURNING ", message_columns!()
                ));
                let rows: Vec<$crate::store::rows::MessageRow> = update.build_query_as().fetch_all(&mut *tx).await?;
                for row in rows {
                    applied.push(row.try_into()?);
                }
            }
            tx.commit().await?;
            Ok(applied)
        }

        async fn apply_receipt(
            &self,
            receipt: &$crate::domain::message::Receipt,
        ) -> Result<$crate::domain::message::ReceiptOutcome, $crate::store::StoreError> {
            use $crate::domain::message::{MessageStatus, ReceiptOutcome};
            let mut tx = self.pool.begin().await?;
            if let Some(record) = Self::reconcile_unknown(&mut *tx, receipt).await? {
                tx.commit().await?;
                return Ok(ReceiptOutcome::Applied(record));
            }
            if let Some(record) = Self::apply_receipt_to_sent(&mut *tx, receipt).await? {
                tx.commit().await?;
                return Ok(ReceiptOutcome::Applied(record));
            }
            let known: Option<i32> = sqlx::query_scalar(
                "SELECT 1 FROM messages WHERE carrier = $1 AND carrier_message_id = $2 LIMIT 1",
            )
            .bind(&receipt.carrier)
            .bind(&receipt.carrier_message_id)
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
            .bind(&receipt.carrier)
            .bind(&receipt.carrier_message_id)
            .bind(receipt.status.as_str())
            .bind(receipt.error.as_deref())
            .bind(receipt.message_id)
            .bind(receipt.at)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(ReceiptOutcome::Kept)
        }

        async fn apply_early_receipts(
            &self,
            forget_before: Option<chrono::DateTime<chrono::Utc>>,
        ) -> Result<Vec<$crate::domain::message::MessageRecord>, $crate::store::StoreError> {
            use $crate::domain::message::{MessageStatus, Receipt};
            // Receipts whose message now carries their carrier id (its send
            // result landed), or is held with an unknown outcome they name. Read
            // outside a transaction: after most batches there are none, and the
            // writes below are guarded, so a receipt applied twice changes nothing.
            let landed: Vec<(String, String, String, Option<String>, Option<uuid::Uuid>, chrono::DateTime<chrono::Utc>)> =
                sqlx::query_as(
                    "SELECT r.carrier, r.carrier_message_id, r.status, r.error, r.message_id, r.received_at \
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
            for (carrier, carrier_message_id, status, error, message_id, at) in landed {
                let receipt = Receipt {
                    status: MessageStatus::parse(&status).unwrap_or(MessageStatus::Failed),
                    carrier,
                    carrier_message_id,
                    error,
                    message_id,
                    at,
                };
                match Self::reconcile_unknown(&mut *tx, &receipt).await? {
                    Some(record) => applied.push(record),
                    None => applied.extend(Self::apply_receipt_to_sent(&mut *tx, &receipt).await?),
                }
                sqlx::query("DELETE FROM early_receipts WHERE carrier = $1 AND carrier_message_id = $2 AND status = $3")
                    .bind(&receipt.carrier)
                    .bind(&receipt.carrier_message_id)
                    .bind(receipt.status.as_str())
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
            cutoff: chrono::DateTime<chrono::Utc>,
            at: chrono::DateTime<chrono::Utc>,
            max: u32,
        ) -> Result<Vec<$crate::domain::message::MessageRecord>, $crate::store::StoreError> {
            let rows: Vec<$crate::store::rows::MessageRow> = sqlx::query_as(concat!(
                "UPDATE messages SET status = 'failed', last_error = $3, outcome_unknown_at = NULL, updated_at = $2 \
                 WHERE id IN (SELECT id FROM messages WHERE outcome_unknown_at < $1 ORDER BY outcome_unknown_at LIMIT $4) \
                 AND status = 'sending' RETURNING ",
                message_columns!()
            ))
            .bind(cutoff)
            .bind(at)
            .bind($crate::domain::message::UNKNOWN_OUTCOME)
            .bind(i64::from(max))
            .fetch_all(&self.pool)
            .await?;
            rows.into_iter().map(TryInto::try_into).collect()
        }

        async fn set_consent(
            &self,
            target: $crate::store::ConsentTarget<'_>,
            opted_out: bool,
            source: $crate::domain::contact::ConsentSource,
            detail: &str,
            at: chrono::DateTime<chrono::Utc>,
        ) -> Result<
            (Vec<$crate::domain::contact::Contact>, Vec<$crate::domain::message::MessageRecord>),
            $crate::store::StoreError,
        > {
            let mut tx = self.pool.begin().await?;
            let ids: Vec<uuid::Uuid> = match target {
                $crate::store::ConsentTarget::Phone { carrier, phone_number } => sqlx::query_scalar(
                    "UPDATE contacts SET opted_out = $3, updated_at = $4, version = version + 1 WHERE opted_out <> $3 AND id IN \
                     (SELECT contact_id FROM messages WHERE carrier = $1 AND phone_number = $2) RETURNING id",
                )
                .bind(carrier)
                .bind(phone_number)
                .bind(opted_out)
                .bind(at)
                .fetch_all(&mut *tx)
                .await?,
                $crate::store::ConsentTarget::Contact(id) => sqlx::query_scalar(
                    "UPDATE contacts SET opted_out = $2, updated_at = $3, version = version + 1 WHERE opted_out <> $2 AND id = $1 RETURNING id",
                )
                .bind(id)
                .bind(opted_out)
                .bind(at)
                .fetch_all(&mut *tx)
                .await?,
            };
            let mut contacts = Vec::with_capacity(ids.len());
            let mut cancelled = Vec::new();
            for id in &ids {
                sqlx::query(
                    "INSERT INTO consent_events (id, contact_id, opted_out, source, detail, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(uuid::Uuid::now_v7())
                .bind(*id)
                .bind(opted_out)
                .bind(source.as_str())
                .bind(detail)
                .bind(at)
                .execute(&mut *tx)
                .await?;
                let row: $crate::store::rows::ContactRow =
                    sqlx::query_as(concat!("SELECT ", contact_columns!(), " FROM contacts c WHERE c.id = $1"))
                        .bind(*id)
                        .fetch_one(&mut *tx)
                        .await?;
                contacts.push(row.into());
                if opted_out {
                    cancelled.extend(Self::cancel_queued(&mut *tx, *id, at).await?);
                }
            }
            tx.commit().await?;
            Ok((contacts, cancelled))
        }

        async fn owners_messaged(&self, carrier: &str, phone_number: &str) -> Result<Vec<uuid::Uuid>, $crate::store::StoreError> {
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
            contact_id: uuid::Uuid,
            at: chrono::DateTime<chrono::Utc>,
        ) -> Result<Vec<$crate::domain::message::MessageRecord>, $crate::store::StoreError> {
            let mut conn = self.pool.acquire().await?;
            Self::cancel_queued(&mut *conn, contact_id, at).await
        }

        async fn complete_if_exhausted(
            &self,
            campaign: &$crate::domain::campaign::Campaign,
            at: chrono::DateTime<chrono::Utc>,
        ) -> Result<Option<$crate::domain::campaign::Campaign>, $crate::store::StoreError> {
            let row: Option<$crate::store::rows::CampaignRow> = sqlx::query_as(concat!(
                "UPDATE campaigns SET status = 'completed', status_reason = 'total_limit reached', updated_at = $2, \
                 version = version + 1 \
                 WHERE id = $1 AND status IN ('active', 'paused') AND total_limit IS NOT NULL \
                 AND (SELECT COUNT(*) FROM messages WHERE campaign_id = $1 AND status IN ('sent', 'delivered', 'failed')) \
                 >= total_limit RETURNING ",
                campaign_columns!()
            ))
            .bind(campaign.id)
            .bind(at)
            .fetch_optional(&self.pool)
            .await?;
            row.map(TryInto::try_into).transpose()
        }

        async fn pause_campaign(
            &self,
            campaign: &$crate::domain::campaign::Campaign,
            reason: &str,
            at: chrono::DateTime<chrono::Utc>,
        ) -> Result<Option<$crate::domain::campaign::Campaign>, $crate::store::StoreError> {
            let row: Option<$crate::store::rows::CampaignRow> = sqlx::query_as(concat!(
                "UPDATE campaigns SET status = 'paused', status_reason = $2, updated_at = $3, version = version + 1 \
                 WHERE id = $1 AND status = 'active' RETURNING ",
                campaign_columns!()
            ))
            .bind(campaign.id)
            .bind(reason)
            .bind(at)
            .fetch_optional(&self.pool)
            .await?;
            row.map(TryInto::try_into).transpose()
        }
        }
    };
}

/// Helpers of the sending methods that run inside a caller's transaction.
macro_rules! sending_helpers {
    ($store:ty, $db:ty) => {
        impl $store {
            async fn cancel_queued(
                conn: &mut <$db as sqlx::Database>::Connection,
                contact_id: uuid::Uuid,
                at: chrono::DateTime<chrono::Utc>,
            ) -> Result<Vec<$crate::domain::message::MessageRecord>, $crate::store::StoreError> {
                let rows: Vec<$crate::store::rows::MessageRow> = sqlx::query_as(concat!(
                    "UPDATE messages SET status = 'failed', last_error = 'opted_out', updated_at = $2 \
                     WHERE contact_id = $1 AND status = 'queued' RETURNING ",
                    message_columns!()
                ))
                .bind(contact_id)
                .bind(at)
                .fetch_all(&mut *conn)
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            /// Reconciles a send whose outcome was unknown with a receipt naming
            /// its message: the carrier has it, under this id.
            async fn reconcile_unknown(
                conn: &mut <$db as sqlx::Database>::Connection,
                receipt: &$crate::domain::message::Receipt,
            ) -> Result<Option<$crate::domain::message::MessageRecord>, $crate::store::StoreError> {
                let Some(message_id) = receipt.message_id else {
                    return Ok(None);
                };
                let row: Option<$crate::store::rows::MessageRow> = sqlx::query_as(concat!(
                    "UPDATE messages SET status = $3, carrier_message_id = $4, outcome_unknown_at = NULL, \
                     last_error = $5, sent_at = CASE WHEN $3 IN ('sent', 'delivered') THEN $6 ELSE sent_at END, \
                     delivered_at = CASE WHEN $3 = 'delivered' THEN $6 ELSE delivered_at END, updated_at = $6 \
                     WHERE id = $1 AND carrier = $2 AND status = 'sending' AND outcome_unknown_at IS NOT NULL \
                     RETURNING ",
                    message_columns!()
                ))
                .bind(message_id)
                .bind(&receipt.carrier)
                .bind(receipt.status.as_str())
                .bind(&receipt.carrier_message_id)
                .bind(receipt.error.as_deref())
                .bind(receipt.at)
                .fetch_optional(&mut *conn)
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            /// Moves a `sent` message on by a delivery or failure receipt.
            async fn apply_receipt_to_sent(
                conn: &mut <$db as sqlx::Database>::Connection,
                receipt: &$crate::domain::message::Receipt,
            ) -> Result<Option<$crate::domain::message::MessageRecord>, $crate::store::StoreError> {
                if receipt.status == $crate::domain::message::MessageStatus::Sent {
                    return Ok(None);
                }
                let delivered_at =
                    (receipt.status == $crate::domain::message::MessageStatus::Delivered).then_some(receipt.at);
                let row: Option<$crate::store::rows::MessageRow> = sqlx::query_as(concat!(
                    "UPDATE messages SET status = $3, last_error = COALESCE($4, last_error), \
                     delivered_at = COALESCE($5, delivered_at), updated_at = $6 \
                     WHERE carrier = $1 AND carrier_message_id = $2 AND status = 'sent' RETURNING ",
                    message_columns!()
                ))
                .bind(&receipt.carrier)
                .bind(&receipt.carrier_message_id)
                .bind(receipt.status.as_str())
                .bind(receipt.error.as_deref())
                .bind(delivered_at)
                .bind(receipt.at)
                .fetch_optional(&mut *conn)
                .await?;
                row.map(TryInto::try_into).transpose()
            }
        }
    };
}

pub(super) use {claimed_returning, impl_sending_store, message_columns, push_id_list, sending_helpers};
