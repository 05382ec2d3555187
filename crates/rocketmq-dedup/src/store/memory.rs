//! The in-memory store.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
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
/// not shared between consumers. Expired records are purged as time passes (each operation
/// purges what has expired since the last), so memory stays bounded under a steady stream of
/// new keys; [`MemoryStore::with_capacity_limit`] also bounds the number of live records, and a
/// claim beyond it fails with [`StoreError::CapacityExceeded`] (fail-closed by default).
///
/// Keys are kept as 128-bit fingerprints of the record key, about 70–100 bytes a record.
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
    records: HashMap<u128, Record>,
    /// Expiry stamps in time order. A record renewed or committed has a stale stamp here too;
    /// popping it is a no-op unless it matches the record's current expiry.
    expiries: BinaryHeap<Reverse<(u64, u128)>>,
}

#[derive(Debug, Clone, Copy)]
struct Record {
    state: RecordState,
    /// Milliseconds since `epoch`.
    expires_at: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RecordState {
    Consuming(OwnerToken),
    Consumed,
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
        state.purge(now);
        state.records.len()
    }

    /// Whether the store holds no live records.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes allocated for records and expiry stamps (the tables' capacities, not their
    /// lengths), after purging.
    pub fn allocated_bytes(&self) -> usize {
        let now = self.now();
        let mut state = self.lock();
        state.purge(now);
        state.records.capacity() * (std::mem::size_of::<(u128, Record)>() + 1)
            + state.expiries.capacity() * std::mem::size_of::<Reverse<(u64, u128)>>()
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
        state.purge(now);
        let fingerprints: Vec<u128> = keys.iter().map(RecordKey::fingerprint).collect();
        // All or nothing: a claim that would pass the capacity claims no key at all.
        if let Some(capacity) = self.capacity {
            let mut new = std::collections::HashSet::new();
            for fp in &fingerprints {
                if !state.records.contains_key(fp) {
                    new.insert(*fp);
                }
            }
            if state.records.len() + new.len() > capacity {
                return Err(StoreError::CapacityExceeded { capacity });
            }
        }
        let expires_at = now.saturating_add(millis(super::clamp_ttl(ttl)));
        let outcomes = fingerprints
            .into_iter()
            .map(|fp| match state.records.get(&fp).map(|r| r.state) {
                Some(RecordState::Consumed) => ClaimOutcome::Consumed,
                // Claimed again with the same token: the claim and its TTL stay as they are.
                Some(RecordState::Consuming(owner)) if owner == token => ClaimOutcome::Claimed,
                Some(RecordState::Consuming(_)) => ClaimOutcome::InFlight,
                None => {
                    state.put(fp, RecordState::Consuming(token), expires_at);
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
        let now = self.now();
        let mut state = self.lock();
        state.purge(now);
        keys.iter()
            .map(|key| {
                let fp = key.fingerprint();
                match state.records.get(&fp).map(|r| r.state) {
                    Some(RecordState::Consumed) => CommitOutcome::AlreadyConsumed,
                    Some(RecordState::Consuming(owner)) if owner != token => CommitOutcome::Lost,
                    _ => {
                        let expires_at = now.saturating_add(millis(super::clamp_ttl(ttl)));
                        state.put(fp, RecordState::Consumed, expires_at);
                        CommitOutcome::Committed
                    }
                }
            })
            .collect()
    }

    fn release_now(&self, keys: &[RecordKey], token: OwnerToken) -> Vec<bool> {
        let now = self.now();
        let mut state = self.lock();
        state.purge(now);
        keys.iter()
            .map(|key| {
                let fp = key.fingerprint();
                let held = state.holds(fp, token);
                if held {
                    state.records.remove(&fp);
                }
                held
            })
            .collect()
    }

    fn renew_now(&self, keys: &[RecordKey], token: OwnerToken, ttl: Duration) -> Vec<bool> {
        let now = self.now();
        let mut state = self.lock();
        state.purge(now);
        keys.iter()
            .map(|key| {
                let fp = key.fingerprint();
                let held = state.holds(fp, token);
                if held {
                    let expires_at = now.saturating_add(millis(super::clamp_ttl(ttl)));
                    state.put(fp, RecordState::Consuming(token), expires_at);
                }
                held
            })
            .collect()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl State {
    fn put(&mut self, fp: u128, state: RecordState, expires_at: u64) {
        self.records.insert(fp, Record { state, expires_at });
        self.expiries.push(Reverse((expires_at, fp)));
    }

    /// Whether `fp` is CONSUMING with `token`.
    fn holds(&self, fp: u128, token: OwnerToken) -> bool {
        self.records
            .get(&fp)
            .is_some_and(|r| r.state == RecordState::Consuming(token))
    }

    fn purge(&mut self, now: u64) {
        while let Some(&Reverse((expires_at, fp))) = self.expiries.peek() {
            if expires_at > now {
                break;
            }
            self.expiries.pop();
            if self
                .records
                .get(&fp)
                .is_some_and(|r| r.expires_at == expires_at)
            {
                self.records.remove(&fp);
            }
        }
        // Give memory back after a burst: tables shrink once they are mostly empty.
        if self.records.capacity() > 1024 && self.records.len() < self.records.capacity() / 4 {
            self.records.shrink_to(self.records.len() * 2);
        }
        if self.expiries.capacity() > 1024 && self.expiries.len() < self.expiries.capacity() / 4 {
            self.expiries.shrink_to(self.expiries.len() * 2);
        }
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

    fn keys(n: usize, round: usize) -> Vec<RecordKey> {
        (0..n)
            .map(|i| RecordKey::new("dedup", "g", "T", None, &format!("k{round}-{i}")))
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
