//! A read cache for the hottest reads, campaign lists and single campaigns,
//! per user; consulted by the store's campaign methods.
//!
//! Every cache key carries the user's *generation*, read before the database is
//! queried. A campaign write gives the user a new generation before it starts
//! and again when it ends — landed, failed or cancelled (a guard's `Drop`) — so
//! a page read concurrently with a write is stored under a generation nothing
//! will look up again. Generations come from one process-wide counter, so a
//! user whose entry was evicted never gets back an old value. The cache is only
//! correct when every write goes through this process, which is why only the
//! embedded SQLite store enables it.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moka::sync::Cache;

use super::StoreError;
use crate::domain::campaign::{Campaign, CampaignStatus};
use crate::domain::ids::{CampaignId, UserId};
use crate::domain::page::{Page, PageRequest};

const CAPACITY: u64 = 100_000;
/// A safety net: even a missed invalidation heals within this time.
const TIME_TO_LIVE: Duration = Duration::from_secs(60);

#[derive(Clone, Hash, PartialEq, Eq)]
enum Key {
    List {
        user: UserId,
        generation: u64,
        status: Option<CampaignStatus>,
        page: PageRequest,
    },
    Campaign {
        user: UserId,
        generation: u64,
        id: CampaignId,
    },
}

#[derive(Clone)]
enum Cached {
    List(Arc<Page<Campaign>>),
    Campaign(Option<Arc<Campaign>>),
}

/// The cache, or nothing: reads then go straight to the database.
pub struct ReadCache(Option<Entries>);

struct Entries {
    entries: Cache<Key, Cached>,
    generations: Cache<UserId, u64>,
    counter: AtomicU64,
}

/// Renews a user's generation when dropped: after the write it guards, however
/// that write ended.
pub struct Invalidation<'a> {
    cache: Option<&'a Entries>,
    user: UserId,
}

impl Drop for Invalidation<'_> {
    fn drop(&mut self) {
        if let Some(cache) = self.cache {
            cache.renew(self.user);
        }
    }
}

impl Entries {
    fn fresh(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::AcqRel) + 1
    }

    fn current(&self, user: UserId) -> u64 {
        self.generations.get_with(user, || self.fresh())
    }

    fn renew(&self, user: UserId) {
        self.generations.insert(user, self.fresh());
    }
}

impl ReadCache {
    pub fn enabled() -> Self {
        Self(Some(Entries {
            entries: Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_live(TIME_TO_LIVE)
                .build(),
            generations: Cache::builder().max_capacity(CAPACITY).build(),
            counter: AtomicU64::new(0),
        }))
    }

    pub fn disabled() -> Self {
        Self(None)
    }

    /// Call before writing to `user`'s campaigns; keep the guard until the write ends.
    pub fn invalidate(&self, user: UserId) -> Invalidation<'_> {
        if let Some(cache) = &self.0 {
            cache.renew(user);
        }
        Invalidation {
            cache: self.0.as_ref(),
            user,
        }
    }

    pub async fn campaign<F>(&self, user: UserId, id: CampaignId, load: F) -> Result<Option<Campaign>, StoreError>
    where
        F: Future<Output = Result<Option<Campaign>, StoreError>>,
    {
        let Some(cache) = &self.0 else { return load.await };
        let key = Key::Campaign {
            user,
            generation: cache.current(user),
            id,
        };
        if let Some(Cached::Campaign(found)) = cache.entries.get(&key) {
            return Ok(found.map(|c| (*c).clone()));
        }
        let found = load.await?;
        cache.entries.insert(key, Cached::Campaign(found.clone().map(Arc::new)));
        Ok(found)
    }

    pub async fn campaigns<F>(
        &self,
        user: UserId,
        status: Option<CampaignStatus>,
        page: PageRequest,
        load: F,
    ) -> Result<Page<Campaign>, StoreError>
    where
        F: Future<Output = Result<Page<Campaign>, StoreError>>,
    {
        let Some(cache) = &self.0 else { return load.await };
        let key = Key::List {
            user,
            generation: cache.current(user),
            status,
            page,
        };
        if let Some(Cached::List(found)) = cache.entries.get(&key) {
            return Ok((*found).clone());
        }
        let found = load.await?;
        cache.entries.insert(key, Cached::List(Arc::new(found.clone())));
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_never_repeat_even_after_eviction() {
        let cache = ReadCache::enabled();
        let entries = cache.0.as_ref().unwrap();
        let user = UserId::new();
        let first = entries.current(user);
        assert_eq!(entries.current(user), first, "stable while nothing is written");
        drop(cache.invalidate(user));
        let after_write = entries.current(user);
        assert!(after_write > first);
        entries.generations.invalidate(&user);
        assert!(
            entries.current(user) > after_write,
            "a forgotten user gets a value never used before"
        );
    }
}
