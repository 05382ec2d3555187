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

type Records = HashMap<RecordKey, (State, Instant)>;

/// A small in-memory store with one bug (or none). Each key operation reads, decides and
/// writes under one lock acquisition, so the only races are the ones a bug puts there.
struct Broken {
    bug: Bug,
    records: Mutex<Records>,
    commits: Mutex<u64>,
}

/// The live state of `key`; an expired record is removed first.
fn live(records: &mut Records, key: &RecordKey) -> Option<State> {
    match records.get(key) {
        Some((_, expires)) if *expires <= Instant::now() => {
            records.remove(key);
            None
        }
        other => other.map(|(state, _)| *state),
    }
}

fn put(records: &mut Records, key: &RecordKey, state: State, ttl: Duration) {
    let ttl = ttl.min(Duration::from_secs(3600));
    records.insert(key.clone(), (state, Instant::now() + ttl));
}

fn claim_decision(found: Option<State>, token: OwnerToken) -> ClaimOutcome {
    match found {
        Some(State::Consumed) => ClaimOutcome::Consumed,
        Some(State::Consuming(owner)) if owner == token => ClaimOutcome::Claimed,
        Some(State::Consuming(_)) => ClaimOutcome::InFlight,
        None => ClaimOutcome::Claimed,
    }
}

impl Broken {
    fn new(bug: Bug) -> Self {
        Broken {
            bug,
            records: Mutex::new(HashMap::new()),
            commits: Mutex::new(0),
        }
    }

    fn records(&self) -> std::sync::MutexGuard<'_, Records> {
        self.records.lock().unwrap()
    }

    fn holds(records: &mut Records, key: &RecordKey, token: OwnerToken, ignore: bool) -> bool {
        match live(records, key) {
            Some(State::Consuming(owner)) => ignore || owner == token,
            _ => false,
        }
    }

    async fn claim_one(&self, key: &RecordKey, token: OwnerToken, ttl: Duration) -> ClaimOutcome {
        if self.bug != Bug::RacyClaim {
            let mut records = self.records();
            let found = live(&mut records, key);
            if found.is_none() {
                put(&mut records, key, State::Consuming(token), ttl);
            }
            return claim_decision(found, token);
        }
        // The bug: the read and the write are two lock acquisitions with a pause between.
        let found = live(&mut self.records(), key);
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_micros(200)).await;
        if found.is_none() {
            put(&mut self.records(), key, State::Consuming(token), ttl);
        }
        claim_decision(found, token)
    }

    fn commit_one(&self, key: &RecordKey, token: OwnerToken, ttl: Duration) -> CommitOutcome {
        let lose = self.bug == Bug::LostCommit && {
            let mut commits = self.commits.lock().unwrap();
            *commits += 1;
            commits.is_multiple_of(5)
        };
        let mut records = self.records();
        match live(&mut records, key) {
            Some(State::Consumed) => CommitOutcome::AlreadyConsumed,
            Some(State::Consuming(owner))
                if owner != token && self.bug != Bug::CommitIgnoresToken =>
            {
                CommitOutcome::Lost
            }
            _ => {
                if !lose {
                    put(&mut records, key, State::Consumed, ttl);
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
                let mut records = self.records();
                let held = Self::holds(&mut records, key, token, ignore);
                if held {
                    records.remove(key);
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
                let mut records = self.records();
                let found = live(&mut records, key);
                let held = Self::holds(&mut records, key, token, ignore);
                if let (true, Some(state)) = (held, found) {
                    put(&mut records, key, state, ttl);
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

/// How many runs a broken store gets to show its bug.
const RUNS_TO_CATCH: u64 = 3;

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
        // Whether a run hits a bug depends on how the workers interleave, which the seed
        // does not fix: one run in about 25 of 600 calls a worker left `LostCommit` unseen on
        // a loaded machine. So a bug has up to RUNS_TO_CATCH runs (other seeds, a fresh store
        // each) and must show in one of them.
        let mut runs = Vec::new();
        for run in 0..RUNS_TO_CATCH {
            let options = ModelOptions {
                seed: options().seed.wrapping_add(1_000 * run),
                ..options()
            };
            let report = check_store(Arc::new(Broken::new(bug)), &options).await;
            if !report.passed() {
                let first = &report.violations[0];
                println!(
                    "{bug:?}: caught in run {}; {} keys in violation; first:\n{first}",
                    run + 1,
                    report.violations.len()
                );
                break;
            }
            runs.push(report);
        }
        assert!(
            runs.len() < RUNS_TO_CATCH as usize,
            "{bug:?} was not caught in {RUNS_TO_CATCH} runs: {}",
            runs.iter().map(ToString::to_string).collect::<String>()
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
