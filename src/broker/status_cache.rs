//! Online status by (instance, client id), each entry kept for a time to
//! live: what `BatchQuerySessionByClientIds` answers from. The staleness a
//! caller may see is the TTL (`http.batch_status_ttl_ms`), except after a
//! kick made through an API, which forgets the client at once
//! ([`crate::broker::InstanceBroker::kick`]).

use super::registry::SessionRegistry;
use moka::sync::Cache;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub struct StatusCache {
    cache: Option<Cache<(String, String), bool>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for StatusCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusCache")
            .field("enabled", &self.cache.is_some())
            .field("hit_counts", &self.hit_counts())
            .finish()
    }
}

impl StatusCache {
    /// A TTL of zero turns the cache off (every answer is live).
    pub fn new(ttl: Duration, capacity: u64) -> StatusCache {
        let cache = (!ttl.is_zero()).then(|| {
            Cache::builder()
                .time_to_live(ttl)
                .max_capacity(capacity)
                .build()
        });
        StatusCache {
            cache,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The cached status, or the live one from `sessions` (then cached).
    pub fn online(&self, instance_id: &str, sessions: &SessionRegistry, client_id: &str) -> bool {
        let Some(cache) = &self.cache else {
            return sessions.is_online(client_id);
        };
        let key = (instance_id.to_string(), client_id.to_string());
        if let Some(status) = cache.get(&key) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return status;
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let status = sessions.is_online(client_id);
        cache.insert(key, status);
        status
    }

    pub fn forget(&self, instance_id: &str, client_id: &str) {
        if let Some(cache) = &self.cache {
            cache.invalidate(&(instance_id.to_string(), client_id.to_string()));
        }
    }

    /// (hits, misses) since start.
    pub fn hit_counts(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }
}
