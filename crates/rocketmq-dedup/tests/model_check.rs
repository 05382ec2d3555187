//! The model-based check can fail: it is run against stores broken on purpose, each in one
//! way, and must catch every one; the same store unbroken must pass. And the memory store
//! passes it while calls fail at random, before or after they were applied.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use rocketmq_dedup::record_key::RecordKey;
use rocketmq_dedup::store::model::{check_store, ModelOptions};
use rocketmq_dedup::store::{ClaimOutcome, CommitOutcome, DedupStore, MemoryStore, OwnerToken};
use rocketmq_dedup::testing::FaultyStore;
use rocketmq_dedup::StoreError;
use tokio::time::Instant;

/// How a [`Broken`] store is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bug {
    None,
    CommitIgnoresToken,
    ReleaseIgnoresToken,
    RenewIgnoresToken,
    /// Reads, yields, then writes without looking again.
    RacyClaim,
    /// Every fifth commit answers Committed and writes nothing.
    LostCommit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Consuming(OwnerToken),
    Consumed,
}

/// A small in-memory store with one bug (or none).
struct Broken {
    bug: Bug,
    records: Mutex<HashMap<RecordKey, (State, Instant)>>,
    commits: Mutex<u64>,
}

impl Broken {
    fn new(bug: Bug) -> Self {
        Broken {
            bug,
            records: Mutex::new(HashMap::new()),
            commits: Mutex::new(0),
        }
    }

    fn get(&self, key: &RecordKey) -> Option<State> {
        let mut records = self.records.lock().unwrap();
        match records.get(key) {
            Some((_, expires)) if *expires <= Instant::now() => {
                records.remove(key);
                None
            }
            other => other.map(|(state, _)| *state),
        }
    }

    fn put(&self, key: &RecordKey, state: State, ttl: Duration) {
        let ttl = ttl.min(Duration::from_secs(3600));
        self.records
            .lock()
            .unwrap()
            .insert(key.clone(), (state, Instant::now() + ttl));
    }

    fn holds(&self, key: &RecordKey, token: OwnerToken, ignore_token: bool) -> bool {
        match self.get(key) {
            Some(State::Consuming(owner)) => ignore_token || owner == token,
            _ => false,
        }
    }

    async fn claim_one(&self, key: &RecordKey, token: OwnerToken, ttl: Duration) -> ClaimOutcome {
        let found = self.get(key);
        if self.bug == Bug::RacyClaim {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        match found {
            Some(State::Consumed) => ClaimOutcome::Consumed,
            Some(State::Consuming(owner)) if owner == token => ClaimOutcome::Claimed,
            Some(State::Consuming(_)) => ClaimOutcome::InFlight,
            None => {
                self.put(key, State::Consuming(token), ttl);
                ClaimOutcome::Claimed
            }
        }
    }

    fn commit_one(&self, key: &RecordKey, token: OwnerToken, ttl: Duration) -> CommitOutcome {
        let lose = self.bug == Bug::LostCommit && {
            let mut commits = self.commits.lock().unwrap();
            *commits += 1;
            commits.is_multiple_of(5)
        };
        match self.get(key) {
            Some(State::Consumed) => CommitOutcome::AlreadyConsumed,
            Some(State::Consuming(owner))
                if owner != token && self.bug != Bug::CommitIgnoresToken =>
            {
                CommitOutcome::Lost
            }
            _ => {
                if !lose {
                    self.put(key, State::Consumed, ttl);
                }
                CommitOutcome::Committed
            }
        }
    }
}

impl DedupStore for Broken {
    fn claim<'a>(
        &'a self,
        keys: &'a [RecordKey],
        token: OwnerToken,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Vec<ClaimOutcome>, StoreError>> {
        Box::pin(async move {
            let mut out = Vec::new();
            for key in keys {
                out.push(self.claim_one(key, token, ttl).await);
            }
            Ok(out)
        })
    }

    fn commit<'a>(
        &'a self,
        keys: &'a [RecordKey],
        token: OwnerToken,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Vec<CommitOutcome>, StoreError>> {
        let out = keys
            .iter()
            .map(|k| self.commit_one(k, token, ttl))
            .collect();
        Box::pin(async move { Ok(out) })
    }

    fn release<'a>(
        &'a self,
        keys: &'a [RecordKey],
        token: OwnerToken,
    ) -> BoxFuture<'a, Result<Vec<bool>, StoreError>> {
        let ignore = self.bug == Bug::ReleaseIgnoresToken;
        let out = keys
            .iter()
            .map(|key| {
                let held = self.holds(key, token, ignore);
                if held {
                    self.records.lock().unwrap().remove(key);
                }
                held
            })
            .collect();
        Box::pin(async move { Ok(out) })
    }

    fn renew<'a>(
        &'a self,
        keys: &'a [RecordKey],
        token: OwnerToken,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Vec<bool>, StoreError>> {
        let ignore = self.bug == Bug::RenewIgnoresToken;
        let out = keys
            .iter()
            .map(|key| {
                let found = self.get(key);
                let held = self.holds(key, token, ignore);
                if let (true, Some(state)) = (held, found) {
                    self.put(key, state, ttl);
                }
                held
            })
            .collect();
        Box::pin(async move { Ok(out) })
    }

    fn kind(&self) -> &'static str {
        "broken"
    }
}

fn options() -> ModelOptions {
    ModelOptions {
        ops_per_worker: 600,
        ..ModelOptions::from_env()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unbroken_twin_passes() {
    let report = check_store(Arc::new(Broken::new(Bug::None)), &options()).await;
    assert!(report.passed(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_broken_store_is_caught() {
    for bug in [
        Bug::CommitIgnoresToken,
        Bug::ReleaseIgnoresToken,
        Bug::RenewIgnoresToken,
        Bug::RacyClaim,
        Bug::LostCommit,
    ] {
        let report = check_store(Arc::new(Broken::new(bug)), &options()).await;
        assert!(!report.passed(), "{bug:?} was not caught: {report}");
        let first = &report.violations[0];
        println!(
            "{bug:?}: {} keys in violation; first:\n{first}",
            report.violations.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_store_passes_while_calls_fail_at_random() {
    let store = FaultyStore::new(MemoryStore::new());
    store.fail_randomly(0.05, 42);
    let report = check_store(Arc::new(store), &options()).await;
    println!("{report}");
    assert!(report.failed_calls > 100, "faults were injected: {report}");
    assert!(report.passed(), "{report}");
}
