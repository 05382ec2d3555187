//! The in-memory store.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use futures::future::{self, BoxFuture};
use tokio::time::Instant;

use super::{ClaimOutcome, CommitOutcome, DedupStore, DetachedCommit, OwnerToken};
use crate::error::StoreError;
use crate::record_key::RecordKey;

/// An in-process [`DedupStore`]: the embedded default, for demos, tests and consumers that
/// run as a single process.
///
/// Same semantics and TTLs as the Redis store, but the records die with the process and are
/// not shared between consumers. Expired records are answered as absent at once, and their
/// memory is taken back by a sweep that runs after as many key operations as half the records
/// held (amortized constant time), so memory stays bounded under a steady stream of new keys;
/// [`MemoryStore::with_capacity_limit`] also bounds the number of live records, and a claim
/// beyond it fails with [`StoreError::CapacityExceeded`] (fail-closed by default).
///
/// A CONSUMED record is the first 96 bits of its record key's fingerprint and its expiry, 16
/// bytes in a hash table (BENCHMARKS.md measures a record with the table's spare room);
/// a claim (CONSUMING, few: in flight only) keeps the whole fingerprint and its owner.
///
/// It uses [`tokio::time::Instant`], so tests can move its clock with `tokio::time::pause`.
#[derive(Debug)]
pub struct MemoryStore {
    /// A std mutex: it is never held across an `.await`, and each critical section is short.
    state: Mutex<State>,
    capacity: Option<usize>,
    /// Time zero for the millisecond expiry stamps.
    epoch: Instant,
}

#[derive(Debug, Default)]
struct State {
    /// CONSUMED records by the first 96 bits of their fingerprint: when they expire, in ms
    /// after `base`.
    consumed: HashMap<[u32; 3], u32>,
    /// CONSUMED records that expire more than `u32::MAX` ms (49 days) after `base`: ms since
    /// the epoch.
    consumed_long: HashMap<[u32; 3], u64>,
    /// CONSUMING records: the owner, and when the claim expires (ms since the epoch).
    claims: HashMap<u128, (OwnerToken, u64)>,
    /// What `consumed` counts from (ms since the epoch); moved up by each sweep.
    base: u64,
    /// Key operations since the last sweep.
    since_sweep: usize,
}

/// A record as the store answers it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RecordState {
    Consuming(OwnerToken),
    Consumed,
}

/// The key of a CONSUMED record: the first 96 bits of its fingerprint.
fn short(fp: u128) -> [u32; 3] {
    [fp as u32, (fp >> 32) as u32, (fp >> 64) as u32]
}

impl MemoryStore {
    /// An empty store without a capacity limit.
    pub fn new() -> Self {
        MemoryStore {
            state: Mutex::new(State::default()),
            capacity: None,
            epoch: Instant::now(),
        }
    }

    /// An empty store that holds at most `max_records` live records.
    pub fn with_capacity_limit(max_records: usize) -> Self {
        MemoryStore {
            capacity: Some(max_records),
            ..MemoryStore::new()
        }
    }

    /// The number of records held now (expired ones are purged first).
    pub fn len(&self) -> usize {
        let now = self.now();
        let mut state = self.lock();
        state.sweep(now);
        state.len()
    }

    /// Whether the store holds no live records.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes allocated for records (the tables' capacities, not their lengths), after
    /// purging: for the test that memory is given back.
    #[cfg(test)]
    fn allocated_bytes(&self) -> usize {
        let now = self.now();
        let mut state = self.lock();
        state.sweep(now);
        fn table<K, V>(map: &HashMap<K, V>) -> usize {
            map.capacity() * (std::mem::size_of::<(K, V)>() + 1)
        }
        table(&state.consumed) + table(&state.consumed_long) + table(&state.claims)
    }

    fn now(&self) -> u64 {
        millis(Instant::now().saturating_duration_since(self.epoch))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a record half-written (every write is a
        // single insert), so a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn claim_now(
        &self,
        keys: &[RecordKey],
        token: OwnerToken,
        ttl: Duration,
    ) -> Result<Vec<ClaimOutcome>, StoreError> {
        let now = self.now();
        let mut state = self.lock();
        state.tick(now, keys.len());
        let fingerprints: Vec<u128> = keys.iter().map(RecordKey::fingerprint).collect();
        // All or nothing: a claim that would pass the capacity claims no key at all.
        if let Some(capacity) = self.capacity {
            let new = |state: &State| {
                let mut new = std::collections::HashSet::new();
                for fp in &fingerprints {
                    if state.state_of(*fp, now).is_none() {
                        new.insert(*fp);
                    }
                }
                new.len()
            };
            if state.len() + new(&state) > capacity {
                // Expired records still held count until swept: sweep, then count again.
                state.sweep(now);
                if state.len() + new(&state) > capacity {
                    return Err(StoreError::CapacityExceeded { capacity });
                }
            }
        }
        let expires_at = now.saturating_add(millis(super::clamp_ttl(ttl)));
        let outcomes = fingerprints
            .into_iter()
            .map(|fp| match state.state_of(fp, now) {
                Some(RecordState::Consumed) => ClaimOutcome::Consumed,
                // Claimed again with the same token: the claim and its TTL stay as they are.
                Some(RecordState::Consuming(owner)) if owner == token => ClaimOutcome::Claimed,
                Some(RecordState::Consuming(_)) => ClaimOutcome::InFlight,
                None => {
                    state.claims.insert(fp, (token, expires_at));
                    ClaimOutcome::Claimed
                }
            })
            .collect();
        Ok(outcomes)
    }

    fn commit_now(
        &self,
        keys: &[RecordKey],
        token: OwnerToken,
        ttl: Duration,
    ) -> Vec<CommitOutcome> {
        let ttl = millis(super::clamp_ttl(ttl));
        self.each_key(keys, |state, fp, now| match state.state_of(fp, now) {
            Some(RecordState::Consumed) => CommitOutcome::AlreadyConsumed,
            Some(RecordState::Consuming(owner)) if owner != token => CommitOutcome::Lost,
            _ => {
                state.claims.remove(&fp);
                state.put_consumed(fp, now.saturating_add(ttl));
                CommitOutcome::Committed
            }
        })
    }

    fn release_now(&self, keys: &[RecordKey], token: OwnerToken) -> Vec<bool> {
        self.each_key(keys, |state, fp, now| {
            let holds = state.holds(fp, token, now);
            if holds {
                state.claims.remove(&fp);
            }
            holds
        })
    }

    fn renew_now(&self, keys: &[RecordKey], token: OwnerToken, ttl: Duration) -> Vec<bool> {
        let ttl = millis(super::clamp_ttl(ttl));
        self.each_key(keys, |state, fp, now| {
            let holds = state.holds(fp, token, now);
            if holds {
                state.claims.insert(fp, (token, now.saturating_add(ttl)));
            }
            holds
        })
    }

    /// `f` of each key's fingerprint, in order, under one lock and one reading of the clock.
    fn each_key<T>(
        &self,
        keys: &[RecordKey],
        mut f: impl FnMut(&mut State, u128, u64) -> T,
    ) -> Vec<T> {
        let now = self.now();
        let mut state = self.lock();
        state.tick(now, keys.len());
        keys.iter()
            .map(|key| f(&mut state, key.fingerprint(), now))
            .collect()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl State {
    /// Records held, expired ones not yet swept included.
    fn len(&self) -> usize {
        self.consumed.len() + self.consumed_long.len() + self.claims.len()
    }

    /// What `fp` is at `now` (`None`: absent or expired).
    fn state_of(&self, fp: u128, now: u64) -> Option<RecordState> {
        let key = short(fp);
        let consumed = match self.consumed.get(&key) {
            Some(&after_base) => self.base + u64::from(after_base) > now,
            None => self.consumed_long.get(&key).is_some_and(|&at| at > now),
        };
        if consumed {
            return Some(RecordState::Consumed);
        }
        match self.claims.get(&fp) {
            Some(&(owner, at)) if at > now => Some(RecordState::Consuming(owner)),
            _ => None,
        }
    }

    fn put_consumed(&mut self, fp: u128, expires_at: u64) {
        let key = short(fp);
        match u32::try_from(expires_at.saturating_sub(self.base)) {
            Ok(after_base) => {
                self.consumed_long.remove(&key);
                self.consumed.insert(key, after_base);
            }
            Err(_) => {
                self.consumed.remove(&key);
                self.consumed_long.insert(key, expires_at);
            }
        }
    }

    /// Whether `fp` is CONSUMING with `token` at `now`.
    fn holds(&self, fp: u128, token: OwnerToken, now: u64) -> bool {
        self.state_of(fp, now) == Some(RecordState::Consuming(token))
    }

    /// Counts `ops` key operations, and sweeps once they reach half the records held.
    fn tick(&mut self, now: u64, ops: usize) {
        self.since_sweep += ops;
        if self.since_sweep >= (self.len() / 2).max(1024) {
            self.sweep(now);
        }
    }

    /// Drops what expired by `now`, counts the CONSUMED records' expiries from `now` on, and
    /// gives memory back after a burst (a table shrinks once it is mostly empty).
    fn sweep(&mut self, now: u64) {
        self.since_sweep = 0;
        let shift = now.saturating_sub(self.base);
        let base = self.base;
        self.consumed.retain(|_, after_base| {
            let alive = base + u64::from(*after_base) > now;
            // Alive: it expires after `now`, so more than `shift` after the old base.
            *after_base = after_base.saturating_sub(u32::try_from(shift).unwrap_or(u32::MAX));
            alive
        });
        self.base = self.base.max(now);
        self.claims.retain(|_, (_, at)| *at > now);
        let long: Vec<([u32; 3], u64)> =
            self.consumed_long.iter().map(|(k, at)| (*k, *at)).collect();
        for (key, at) in long {
            if at <= now {
                self.consumed_long.remove(&key);
            } else if let Ok(after_base) = u32::try_from(at - self.base) {
                self.consumed_long.remove(&key);
                self.consumed.insert(key, after_base);
            }
        }
        fn shrink<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>) {
            if map.capacity() > 1024 && map.len() < map.capacity() / 4 {
                map.shrink_to(map.len() * 2);
            }
        }
        shrink(&mut self.consumed);
        shrink(&mut self.consumed_long);
        shrink(&mut self.claims);
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl DedupStore for MemoryStore {
    fn claim<'a>(
        &'a self,
        keys: &'a [RecordKey],
        token: OwnerToken,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Vec<ClaimOutcome>, StoreError>> {
        Box::pin(future::ready(self.claim_now(keys, token, ttl)))
    }

    fn commit<'a>(
        &'a self,
        keys: &'a [RecordKey],
        token: OwnerToken,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Vec<CommitOutcome>, StoreError>> {
        Box::pin(future::ready(Ok(self.commit_now(keys, token, ttl))))
    }

    /// Written at once, on the caller's thread: no task waits for it.
    fn commit_detached(&self, commit: DetachedCommit) -> Option<DetachedCommit> {
        let outcomes = self.commit_now(commit.keys(), commit.token(), commit.ttl());
        commit.finish(Ok(outcomes));
        None
    }

    fn release<'a>(
        &'a self,
        keys: &'a [RecordKey],
        token: OwnerToken,
    ) -> BoxFuture<'a, Result<Vec<bool>, StoreError>> {
        Box::pin(future::ready(Ok(self.release_now(keys, token))))
    }

    fn renew<'a>(
        &'a self,
        keys: &'a [RecordKey],
        token: OwnerToken,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Vec<bool>, StoreError>> {
        Box::pin(future::ready(Ok(self.renew_now(keys, token, ttl))))
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record_key::KeyParts;

    fn keys(n: usize, round: usize) -> Vec<RecordKey> {
        (0..n)
            .map(|i| {
                RecordKey::new(KeyParts {
                    prefix: "dedup",
                    namespace: "g",
                    topic: "T",
                    tag: None,
                    key: &format!("k{round}-{i}"),
                })
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn memory_is_returned_after_expiry_under_a_stream_of_new_keys() {
        let store = MemoryStore::new();
        let ttl = Duration::from_secs(10);
        let token = OwnerToken::random();
        let mut peak = 0;
        // 20 rounds of 5 000 new keys each, one TTL apart: without purging, 100 000 records.
        for round in 0..20 {
            let batch = keys(5_000, round);
            store.claim(&batch, token, ttl).await.unwrap();
            store.commit(&batch, token, ttl).await.unwrap();
            peak = peak.max(store.allocated_bytes());
            assert!(
                store.len() <= 10_000,
                "round {round}: {} live records",
                store.len()
            );
            tokio::time::advance(ttl + Duration::from_millis(1)).await;
        }
        assert_eq!(store.len(), 0);
        let after = store.allocated_bytes();
        assert!(
            after * 4 < peak,
            "allocated {after} bytes after expiry, peak {peak}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn capacity_limit_fails_closed_and_frees_with_expiry() {
        let store = MemoryStore::with_capacity_limit(3);
        let token = OwnerToken::random();
        let ttl = Duration::from_secs(1);
        store.claim(&keys(3, 0), token, ttl).await.unwrap();
        let err = store.claim(&keys(1, 1), token, ttl).await.unwrap_err();
        assert!(matches!(err, StoreError::CapacityExceeded { capacity: 3 }));
        // Keys already held can still be answered.
        let again = store.claim(&keys(3, 0), token, ttl).await.unwrap();
        assert_eq!(again, vec![ClaimOutcome::Claimed; 3]);
        tokio::time::advance(Duration::from_secs(2)).await;
        store.claim(&keys(1, 1), token, ttl).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_claim_past_the_capacity_claims_nothing() {
        let store = MemoryStore::with_capacity_limit(3);
        let (token, ttl) = (OwnerToken::random(), Duration::from_secs(1));
        store.claim(&keys(2, 0), token, ttl).await.unwrap();
        // Two new keys would make 4: the whole claim fails, and neither is claimed.
        let err = store.claim(&keys(2, 1), token, ttl).await.unwrap_err();
        assert!(matches!(err, StoreError::CapacityExceeded { capacity: 3 }));
        assert_eq!(store.len(), 2);
        // One new key fits.
        store.claim(&keys(1, 2), token, ttl).await.unwrap();
        assert_eq!(store.len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn ttls_near_the_maximum_saturate_instead_of_wrapping() {
        let store = MemoryStore::new();
        let (a, b) = (OwnerToken::random(), OwnerToken::random());
        let key = keys(1, 0);
        tokio::time::advance(Duration::from_secs(5)).await;
        store.claim(&key, a, Duration::MAX).await.unwrap();
        assert_eq!(
            store.claim(&key, b, Duration::MAX).await.unwrap(),
            [ClaimOutcome::InFlight]
        );
        assert_eq!(store.renew(&key, a, Duration::MAX).await.unwrap(), [true]);
        store.commit(&key, a, Duration::MAX).await.unwrap();
        tokio::time::advance(Duration::from_secs(365 * 24 * 3600)).await;
        assert_eq!(
            store.claim(&key, b, Duration::MAX).await.unwrap(),
            [ClaimOutcome::Consumed]
        );
    }
}
