//! A model-based check of the [`DedupStore`] contract: concurrent workers call a store on a
//! few keys with short TTLs, fresh, stale and never-claimed tokens and batches that repeat a
//! key, while the caller may inject faults; then every answer is checked against what a
//! correct store could have answered (`check`), given when each call began and ended.
//!
//! Where the contract suite checks one rule at a time, this finds what no single rule thought
//! of: races between owners, TTL edges, answers after a restart. Each store runs it through
//! [`dedup_store_contract!`](crate::dedup_store_contract) with a fixed seed; set
//! `DEDUP_MODEL_SEED` and `DEDUP_MODEL_OPS` (calls per worker) for other and longer runs.
//!
//! ```no_run
//! # async fn run() {
//! use std::sync::Arc;
//! use rocketmq_dedup::store::MemoryStore;
//! use rocketmq_dedup::store::model::{check_store, ModelOptions};
//!
//! let report = check_store(Arc::new(MemoryStore::new()), &ModelOptions::default()).await;
//! assert!(report.passed(), "{report}");
//! # }
//! ```

mod check;
mod machine;
mod workload;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use self::check::Violation;
use self::machine::Tolerance;
use crate::store::DedupStore;

/// How a model run is made.
#[derive(Debug, Clone)]
pub struct ModelOptions {
    /// Seeds the workers' choices (worker `w` uses `seed + w`).
    pub seed: u64,
    /// Concurrent workers.
    pub workers: usize,
    /// Keys they share.
    pub keys: usize,
    /// Calls each worker makes.
    pub ops_per_worker: usize,
    /// How far the store's clock and ours may disagree about an expiry.
    pub clock_margin: Duration,
    /// How long after it failed a call may still take effect (a server that was paused
    /// runs what it had received once it resumes).
    pub failed_call_grace: Duration,
    /// The TTL every commit asks for, instead of a short random one (20 to 300 ms, or a huge
    /// one): a store that keeps records of this TTL otherwise than short ones (the Redis
    /// store's records hashes) is checked on that path, expiries included.
    pub record_ttl: Option<Duration>,
    /// How much longer than its TTL a store may keep a CONSUMED record (the Redis store's
    /// records hashes: up to a unit).
    pub record_ttl_slack: Duration,
    /// Whether a claim that finds a record CONSUMED may leave a claim of its token for a
    /// moment (the Redis store's native claim, which sets the claim key before it reads the
    /// record and undoes it after): should the record expire meanwhile, that claim answers
    /// as one, until it vanishes. See the `machine` module's "Lingering claims".
    pub claims_may_linger: bool,
}

impl ModelOptions {
    /// The seed CI runs with.
    pub const DEFAULT_SEED: u64 = 0x5eed_0001;
    /// Calls per worker in CI.
    pub const DEFAULT_OPS_PER_WORKER: usize = 1_500;

    /// The defaults, with `DEDUP_MODEL_SEED` and `DEDUP_MODEL_OPS` from the environment when
    /// set.
    pub fn from_env() -> Self {
        let mut options = ModelOptions::default();
        let var = |name| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        if let Some(seed) = var("DEDUP_MODEL_SEED") {
            options.seed = seed;
        }
        if let Some(ops) = var("DEDUP_MODEL_OPS") {
            options.ops_per_worker = ops as usize;
        }
        options
    }
}

impl Default for ModelOptions {
    fn default() -> Self {
        ModelOptions {
            seed: Self::DEFAULT_SEED,
            workers: 12,
            keys: 6,
            ops_per_worker: Self::DEFAULT_OPS_PER_WORKER,
            clock_margin: Duration::from_millis(5),
            failed_call_grace: Duration::ZERO,
            record_ttl: None,
            record_ttl_slack: Duration::ZERO,
            claims_may_linger: false,
        }
    }
}

/// What a model run did and found.
#[derive(Debug, Clone)]
pub struct ModelReport {
    /// The seed of the run.
    pub seed: u64,
    /// Store calls made.
    pub calls: usize,
    /// Key operations checked (a call on three keys is three).
    pub key_operations: usize,
    /// Calls that failed (their effect is unknown to the checker).
    pub failed_calls: usize,
    /// Calls whose answer had a number of entries other than the number of keys.
    pub malformed_answers: usize,
    /// Keys whose history no correct store could have produced (at most one per key).
    pub violations: Vec<Violation>,
    /// How long the workload ran (the check not included).
    pub duration: Duration,
}

impl ModelReport {
    /// Whether every answer was one a correct store could give.
    pub fn passed(&self) -> bool {
        self.violations.is_empty() && self.malformed_answers == 0
    }
}

impl fmt::Display for ModelReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "model check (seed {:#x}): {} calls in {:.1} s, {} key operations, {} failed calls, {} malformed answers, {} keys in violation",
            self.seed,
            self.calls,
            self.duration.as_secs_f64(),
            self.key_operations,
            self.failed_calls,
            self.malformed_answers,
            self.violations.len()
        )?;
        for violation in &self.violations {
            write!(f, "{violation}")?;
        }
        Ok(())
    }
}

/// Runs the workload against `store`, then checks every key's history.
pub async fn check_store<S: DedupStore + ?Sized>(
    store: Arc<S>,
    options: &ModelOptions,
) -> ModelReport {
    let began = tokio::time::Instant::now();
    let history = workload::run(store, options).await;
    let duration = began.elapsed();
    let tolerance = Tolerance {
        margin: options.clock_margin.as_micros() as u64,
        grace: options.failed_call_grace.as_micros() as u64,
        slack: options.record_ttl_slack.as_micros() as u64,
        lingering: options.claims_may_linger,
    };
    let key_operations = history.by_key.iter().map(Vec::len).sum();
    let by_key = history.by_key;
    // The search is CPU work: off the runtime's workers.
    let violations = tokio::task::spawn_blocking(move || {
        by_key
            .iter()
            .enumerate()
            .filter_map(|(key, calls)| check::check_key(key, calls, tolerance).err())
            .map(|violation| *violation)
            .collect()
    })
    .await
    .expect("the model checker panicked");
    ModelReport {
        seed: options.seed,
        calls: history.calls,
        key_operations,
        failed_calls: history.failed_calls,
        malformed_answers: history.malformed_answers,
        violations,
        duration,
    }
}
