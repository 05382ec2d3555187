//! The in-memory store.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use futures::future::{self, BoxFuture};
use tokio::time::Instant;

use super::{ClaimOutcome, CommitOutcome, DedupStore, OwnerToken};
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
    /// 0 when CONSUMED, else the owner token of the CONSUMING claim.
    token: u64,
    /// Milliseconds since `epoch`.
    expires_at: u64,
}

const CONSUMED: u64 = 0;

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
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let fp = key.fingerprint();
            let outcome = match state.records.get(&fp) {
                Some(r) if r.token == CONSUMED => ClaimOutcome::Consumed,
                Some(r) if r.token != token.get() => ClaimOutcome::InFlight,
                existing => {
                    if existing.is_none() {
                        if let Some(capacity) = self.capacity {
                            if state.records.len() >= capacity {
                                return Err(StoreError::CapacityExceeded { capacity });
                            }
                        }
                    }
                    state.put(fp, token.get(), now + millis(ttl));
                    ClaimOutcome::Claimed
                }
            };
            out.push(outcome);
        }
        Ok(out)
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
                match state.records.get(&fp) {
                    Some(r) if r.token == CONSUMED => CommitOutcome::AlreadyConsumed,
                    Some(r) if r.token != token.get() => CommitOutcome::Lost,
                    _ => {
                        state.put(fp, CONSUMED, now + millis(ttl));
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
                let held = state
                    .records
                    .get(&fp)
                    .is_some_and(|r| r.token == token.get());
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
                let held = state
                    .records
                    .get(&fp)
                    .is_some_and(|r| r.token == token.get());
                if held {
                    state.put(fp, token.get(), now + millis(ttl));
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
    fn put(&mut self, fp: u128, token: u64, expires_at: u64) {
        self.records.insert(fp, Record { token, expires_at });
        self.expiries.push(Reverse((expires_at, fp)));
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
}
