//! A read cache in front of a [`Store`] for the hottest reads: campaign lists
//! and single campaigns, per user.
//!
//! Every cache key carries the user's *generation*, read before the database is
//! queried. A campaign write gives the user a new generation before it starts
//! and again when it ends — landed, failed or cancelled (a guard's `Drop`) — so
//! a page read concurrently with a write is stored under a generation nothing
//! will look up again. Generations come from one process-wide counter, so a
//! user whose entry was evicted never gets back an old value. The cache is only
//! correct when every write goes through this process, which is why it wraps
//! the embedded SQLite store only.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use moka::sync::Cache;
use uuid::Uuid;

use super::{ConsentTarget, ContactBatches, LinkOutcome, MessageCounts, SendingStore, Store, StoreError};
use crate::bus::event::Event;
use crate::domain::campaign::{Campaign, CampaignStatus};
use crate::domain::contact::{ConsentSource, Contact};
use crate::domain::message::{
    ClaimedMessage, MessageChange, MessageRecord, MessageStatus, Receipt, ReceiptOutcome, SendRequest, TaskReport,
};
use crate::domain::page::{Page, PageRequest};
use crate::domain::variant::Variant;

const CAPACITY: u64 = 100_000;
/// A safety net: even a missed invalidation heals within this time.
const TIME_TO_LIVE: Duration = Duration::from_secs(60);

#[derive(Clone, Hash, PartialEq, Eq)]
enum Key {
    List {
        user: Uuid,
        generation: u64,
        status: Option<CampaignStatus>,
        page: PageRequest,
    },
    Campaign {
        user: Uuid,
        generation: u64,
        id: Uuid,
    },
}

#[derive(Clone)]
enum Cached {
    List(Arc<Page<Campaign>>),
    Campaign(Option<Arc<Campaign>>),
}

pub struct CachedStore {
    inner: Arc<dyn Store>,
    entries: Cache<Key, Cached>,
    generations: Cache<Uuid, u64>,
    counter: AtomicU64,
}

/// Renews a user's generation when dropped: after the write it guards, however
/// that write ended.
struct Invalidation<'a> {
    cache: &'a CachedStore,
    user: Uuid,
}

impl Drop for Invalidation<'_> {
    fn drop(&mut self) {
        self.cache.renew(self.user);
    }
}

impl CachedStore {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            entries: Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_live(TIME_TO_LIVE)
                .build(),
            generations: Cache::builder().max_capacity(CAPACITY).build(),
            counter: AtomicU64::new(0),
        }
    }

    fn fresh(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::AcqRel) + 1
    }

    fn current(&self, user: Uuid) -> u64 {
        self.generations.get_with(user, || self.fresh())
    }

    fn renew(&self, user: Uuid) {
        self.generations.insert(user, self.fresh());
    }

    /// Call before writing to `user`'s campaigns; keep the guard until the write ends.
    fn invalidate(&self, user: Uuid) -> Invalidation<'_> {
        self.renew(user);
        Invalidation { cache: self, user }
    }
}

#[async_trait]
impl Store for CachedStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn migrate(&self) -> Result<(), StoreError> {
        self.inner.migrate().await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    async fn close(&self) {
        self.inner.close().await
    }
    async fn ensure_user(&self, user_id: Uuid, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.inner.ensure_user(user_id, now).await
    }

    async fn insert_campaign(&self, campaign: &Campaign, events: &[Event]) -> Result<(), StoreError> {
        let _guard = self.invalidate(campaign.user_id);
        self.inner.insert_campaign(campaign, events).await
    }

    async fn campaign(&self, user_id: Uuid, id: Uuid) -> Result<Option<Campaign>, StoreError> {
        let key = Key::Campaign {
            user: user_id,
            generation: self.current(user_id),
            id,
        };
        if let Some(Cached::Campaign(found)) = self.entries.get(&key) {
            return Ok(found.map(|c| (*c).clone()));
        }
        let found = self.inner.campaign(user_id, id).await?;
        self.entries.insert(key, Cached::Campaign(found.clone().map(Arc::new)));
        Ok(found)
    }

    async fn list_campaigns(
        &self,
        user_id: Uuid,
        status: Option<CampaignStatus>,
        page: PageRequest,
    ) -> Result<Page<Campaign>, StoreError> {
        let key = Key::List {
            user: user_id,
            generation: self.current(user_id),
            status,
            page,
        };
        if let Some(Cached::List(found)) = self.entries.get(&key) {
            return Ok((*found).clone());
        }
        let found = self.inner.list_campaigns(user_id, status, page).await?;
        self.entries.insert(key, Cached::List(Arc::new(found.clone())));
        Ok(found)
    }

    async fn replace_campaign(
        &self,
        campaign: &Campaign,
        seen_version: i64,
        events: &[Event],
    ) -> Result<bool, StoreError> {
        let _guard = self.invalidate(campaign.user_id);
        self.inner.replace_campaign(campaign, seen_version, events).await
    }

    async fn delete_campaign(
        &self,
        user_id: Uuid,
        id: Uuid,
        seen_version: i64,
        events: &[Event],
    ) -> Result<bool, StoreError> {
        let _guard = self.invalidate(user_id);
        self.inner.delete_campaign(user_id, id, seen_version, events).await
    }

    async fn link_contacts(
        &self,
        user_id: Uuid,
        campaign_id: Uuid,
        batches: ContactBatches,
        now: DateTime<Utc>,
    ) -> Result<LinkOutcome, StoreError> {
        self.inner.link_contacts(user_id, campaign_id, batches, now).await
    }
    async fn campaign_contacts(&self, campaign_id: Uuid, page: PageRequest) -> Result<Page<Contact>, StoreError> {
        self.inner.campaign_contacts(campaign_id, page).await
    }
    async fn count_campaign_contacts(&self, campaign_id: Uuid) -> Result<u64, StoreError> {
        self.inner.count_campaign_contacts(campaign_id).await
    }
    async fn contact(&self, user_id: Uuid, id: Uuid) -> Result<Option<Contact>, StoreError> {
        self.inner.contact(user_id, id).await
    }
    async fn replace_contact(
        &self,
        contact: &Contact,
        seen_version: i64,
        consent: Option<ConsentSource>,
        events: &[Event],
    ) -> Result<bool, StoreError> {
        self.inner.replace_contact(contact, seen_version, consent, events).await
    }
    async fn message_counts(&self, campaign_id: Uuid) -> Result<MessageCounts, StoreError> {
        self.inner.message_counts(campaign_id).await
    }
    async fn messages_by_status(&self) -> Result<Vec<(MessageStatus, u64)>, StoreError> {
        self.inner.messages_by_status().await
    }
    async fn enqueue_events(&self, events: &[Event]) -> Result<(), StoreError> {
        self.inner.enqueue_events(events).await
    }
    async fn outbox_events(&self, max: u32) -> Result<Vec<(i64, Event)>, StoreError> {
        self.inner.outbox_events(max).await
    }
    async fn forget_events(&self, positions: &[i64]) -> Result<(), StoreError> {
        self.inner.forget_events(positions).await
    }
}

#[async_trait]
impl SendingStore for CachedStore {
    async fn queue_send(
        &self,
        request: &SendRequest,
        total_limit: Option<i32>,
        assign: &(dyn Fn(Uuid) -> Variant + Sync),
    ) -> Result<Option<u64>, StoreError> {
        self.inner.queue_send(request, total_limit, assign).await
    }
    async fn task(&self, user_id: Uuid, task_id: Uuid) -> Result<Option<TaskReport>, StoreError> {
        self.inner.task(user_id, task_id).await
    }
    async fn campaign_by_id(&self, id: Uuid) -> Result<Option<Campaign>, StoreError> {
        self.inner.campaign_by_id(id).await
    }
    async fn due_campaigns(&self, now: DateTime<Utc>) -> Result<Vec<Campaign>, StoreError> {
        self.inner.due_campaigns(now).await
    }
    async fn postpone_due(
        &self,
        campaign_id: Uuid,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        self.inner.postpone_due(campaign_id, now, until).await
    }
    async fn claim_due(
        &self,
        campaign_id: Uuid,
        daily_limit: i32,
        day: NaiveDate,
        max: u32,
        now: DateTime<Utc>,
    ) -> Result<Vec<ClaimedMessage>, StoreError> {
        self.inner.claim_due(campaign_id, daily_limit, day, max, now).await
    }
    async fn messages(&self, ids: &[Uuid]) -> Result<Vec<MessageRecord>, StoreError> {
        self.inner.messages(ids).await
    }
    async fn count_in_flight(&self) -> Result<u64, StoreError> {
        self.inner.count_in_flight().await
    }
    async fn overdue_hand_offs(
        &self,
        cutoff: DateTime<Utc>,
        now: DateTime<Utc>,
        max: u32,
        new_hand_off: bool,
    ) -> Result<Vec<ClaimedMessage>, StoreError> {
        self.inner.overdue_hand_offs(cutoff, now, max, new_hand_off).await
    }
    async fn apply_changes(&self, changes: &[MessageChange]) -> Result<Vec<MessageRecord>, StoreError> {
        self.inner.apply_changes(changes).await
    }
    async fn apply_receipt(&self, receipt: &Receipt) -> Result<ReceiptOutcome, StoreError> {
        self.inner.apply_receipt(receipt).await
    }
    async fn apply_early_receipts(
        &self,
        forget_before: Option<DateTime<Utc>>,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        self.inner.apply_early_receipts(forget_before).await
    }
    async fn expire_unknown_outcomes(
        &self,
        cutoff: DateTime<Utc>,
        at: DateTime<Utc>,
        max: u32,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        self.inner.expire_unknown_outcomes(cutoff, at, max).await
    }
    async fn set_consent(
        &self,
        target: ConsentTarget<'_>,
        opted_out: bool,
        source: ConsentSource,
        detail: &str,
        at: DateTime<Utc>,
    ) -> Result<(Vec<Contact>, Vec<MessageRecord>), StoreError> {
        self.inner.set_consent(target, opted_out, source, detail, at).await
    }
    async fn owners_messaged(&self, carrier: &str, phone_number: &str) -> Result<Vec<Uuid>, StoreError> {
        self.inner.owners_messaged(carrier, phone_number).await
    }
    async fn cancel_queued_for(&self, contact_id: Uuid, at: DateTime<Utc>) -> Result<Vec<MessageRecord>, StoreError> {
        self.inner.cancel_queued_for(contact_id, at).await
    }
    async fn complete_if_exhausted(
        &self,
        campaign: &Campaign,
        at: DateTime<Utc>,
    ) -> Result<Option<Campaign>, StoreError> {
        let _guard = self.invalidate(campaign.user_id);
        self.inner.complete_if_exhausted(campaign, at).await
    }
    async fn pause_campaign(
        &self,
        campaign: &Campaign,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<Campaign>, StoreError> {
        let _guard = self.invalidate(campaign.user_id);
        self.inner.pause_campaign(campaign, reason, at).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn generations_never_repeat_even_after_eviction() {
        let inner = crate::store::sqlite::SqliteStore::connect("sqlite::memory:", 1)
            .await
            .unwrap();
        let cache = CachedStore::new(Arc::new(inner));
        let user = Uuid::now_v7();
        let first = cache.current(user);
        assert_eq!(cache.current(user), first, "stable while nothing is written");
        drop(cache.invalidate(user));
        let after_write = cache.current(user);
        assert!(after_write > first);
        cache.generations.invalidate(&user);
        assert!(
            cache.current(user) > after_write,
            "a forgotten user gets a value never used before"
        );
    }
}
