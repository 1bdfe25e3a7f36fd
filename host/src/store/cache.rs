//! A read cache in front of a [`Store`] for the hottest reads: campaign lists
//! and single campaigns, per user.
//!
//! Every cache key carries the user's *generation*, read before the database is
//! queried; every campaign write bumps the generation after it lands. A page
//! read concurrently with a write is therefore stored under the old generation,
//! where nothing will look it up again, so the cache never serves a page older
//! than the last completed write. It is only correct when every write goes
//! through this process, which is why it wraps the embedded SQLite store only.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use moka::sync::Cache;
use uuid::Uuid;

use super::{ContactBatches, LinkOutcome, MessageCounts, Store, StoreError};
use crate::domain::campaign::{Campaign, CampaignStatus};
use crate::domain::contact::{ConsentSource, Contact};
use crate::domain::page::{Page, PageRequest};

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
    generations: Cache<Uuid, Arc<AtomicU64>>,
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
        }
    }

    fn generation(&self, user: Uuid) -> Arc<AtomicU64> {
        self.generations.get_with(user, || Arc::new(AtomicU64::new(0)))
    }

    fn current(&self, user: Uuid) -> u64 {
        self.generation(user).load(Ordering::Acquire)
    }

    /// Called after a write to `user`'s campaigns has landed.
    fn invalidate(&self, user: Uuid) {
        self.generation(user).fetch_add(1, Ordering::AcqRel);
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

    async fn insert_campaign(&self, campaign: &Campaign) -> Result<(), StoreError> {
        let result = self.inner.insert_campaign(campaign).await;
        self.invalidate(campaign.user_id);
        result
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

    async fn replace_campaign(&self, campaign: &Campaign, seen_updated_at: DateTime<Utc>) -> Result<bool, StoreError> {
        let result = self.inner.replace_campaign(campaign, seen_updated_at).await;
        self.invalidate(campaign.user_id);
        result
    }

    async fn delete_campaign(
        &self,
        user_id: Uuid,
        id: Uuid,
        seen_updated_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let result = self.inner.delete_campaign(user_id, id, seen_updated_at).await;
        self.invalidate(user_id);
        result
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
        seen_updated_at: DateTime<Utc>,
        consent: Option<ConsentSource>,
    ) -> Result<bool, StoreError> {
        self.inner.replace_contact(contact, seen_updated_at, consent).await
    }
    async fn message_counts(&self, campaign_id: Uuid) -> Result<MessageCounts, StoreError> {
        self.inner.message_counts(campaign_id).await
    }
    async fn messages_by_status(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.inner.messages_by_status().await
    }
}
