//! Keys this listener committed itself, remembered for a while, so that a copy of one is
//! recognised without a store round trip.
//!
//! A key goes in when its commit is written (CONSUMED, or found CONSUMED), with an expiry of
//! the commit's send time plus the record TTL: never later than the store's own record
//! expires, because the record's TTL started when the store ran the commit, after it was sent.
//! A CONSUMED record never goes back to absent before its TTL, so a hit is what the store would
//! answer — except after an operator deleted the record (`rocketmq-dedup forget`), which this
//! process does not hear of until the entry expires. With `ack_before_commit` a key goes in
//! earlier, when its handler succeeded and the message is acked: from then on a copy in this
//! process is a duplicate of a message whose effect happened, whether or not the commit has
//! landed yet (the store still answers other consumers "in flight" meanwhile). Bounded: when
//! full, expired entries go, then the oldest half.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::time::Instant;

use crate::record_key::RecordKey;

/// The remembered keys and when each stops counting.
#[derive(Debug)]
pub(crate) struct NearCache {
    capacity: usize,
    /// Keys by their 128-bit fingerprint (32 bytes an entry, whatever the key's length; two
    /// keys share one with probability 2^-128). A std mutex: held for map operations only,
    /// never across an `.await`.
    entries: Mutex<HashMap<u128, Instant>>,
}

impl NearCache {
    /// A cache of at most `capacity` keys (0: remembers nothing).
    pub(crate) fn new(capacity: usize) -> Self {
        NearCache {
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Whether it remembers anything (capacity above 0).
    pub(crate) fn enabled(&self) -> bool {
        self.capacity > 0
    }

    /// Whether `key` was committed by this listener and its record still lives.
    #[cfg(test)]
    pub(crate) fn contains(&self, key: &RecordKey) -> bool {
        self.hits([Some(key)])[0]
    }

    /// For each of `keys`, whether it was committed by this listener and its record still
    /// lives (`None`, a message with no key: never). One lock and one clock read for all.
    pub(crate) fn hits<'k>(
        &self,
        keys: impl IntoIterator<Item = Option<&'k RecordKey>>,
    ) -> Vec<bool> {
        let keys = keys.into_iter();
        if self.capacity == 0 {
            return keys.map(|_| false).collect();
        }
        let now = Instant::now();
        let entries = self.lock();
        keys.map(|key| {
            key.and_then(|key| entries.get(&key.fingerprint()))
                .is_some_and(|expires| *expires > now)
        })
        .collect()
    }

    /// Remembers `keys` as CONSUMED until `expires`.
    pub(crate) fn insert<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k RecordKey>,
        expires: Instant,
    ) {
        if self.capacity == 0 {
            return;
        }
        let mut entries = self.lock();
        for key in keys {
            if entries.len() >= self.capacity {
                evict(&mut entries, self.capacity);
            }
            entries.insert(key.fingerprint(), expires);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u128, Instant>> {
        // Every critical section is one map operation: a poisoned map is still consistent.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Makes room: the expired entries, and if that is not enough, the half that expires first.
fn evict(entries: &mut HashMap<u128, Instant>, capacity: usize) {
    let now = Instant::now();
    entries.retain(|_, expires| *expires > now);
    if entries.len() < capacity {
        return;
    }
    let mut expiries: Vec<Instant> = entries.values().copied().collect();
    expiries.sort_unstable();
    let cut = expiries[expiries.len() / 2];
    entries.retain(|_, expires| *expires > cut);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::testing::record_key as key;

    #[tokio::test(start_paused = true)]
    async fn a_key_counts_until_its_expiry_and_the_cache_stays_bounded() {
        let cache = NearCache::new(4);
        let until = Instant::now() + Duration::from_secs(10);
        cache.insert([&key("a")], until);
        assert!(cache.contains(&key("a")));
        assert!(!cache.contains(&key("b")));
        assert_eq!(
            cache.hits([Some(&key("b")), None, Some(&key("a"))]),
            [false, false, true],
            "one answer per message, in order"
        );
        assert_eq!(
            NearCache::new(0).hits([Some(&key("a")), None]),
            [false, false]
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(!cache.contains(&key("a")), "not past the record's TTL");
        let later = Instant::now() + Duration::from_secs(60);
        for i in 0..100 {
            cache.insert([&key(&format!("k{i}"))], later + Duration::from_secs(i));
        }
        assert!(cache.lock().len() <= 4);
        assert!(cache.contains(&key("k99")), "the newest stays");
        assert!(!NearCache::new(0).contains(&key("a")));
    }
}
