//! The lease processor: ties a handler's run to its record in a [`DedupStore`] in three
//! steps. Claim every key of the batch in one call (a lease: CONSUMING with the processing
//! TTL, renewed while the handler runs), run the handlers of the claimed keys, then commit
//! the successes and release the failures, one call each.
//!
//! A commit that fails after a successful handler is retried in the background
//! ([`background`]): the message is acked, since its effect happened.

mod background;
mod near_cache;

mod running;
mod settle;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use rocketmq_model::common::message::message_ext::MessageExt;
use tracing::error;

use self::background::Background;
use self::near_cache::NearCache;
use crate::config::{DedupConfig, StoreErrorPolicy};
use crate::engine::calls::StoreCalls;
use crate::engine::processor::{Processor, RunOrder, Task};
use crate::engine::run::Ran;
use crate::error::{KeyError, StoreOperation};
use crate::handler::DedupHandler;
use crate::key::DedupKey;
use crate::record_key::RecordKey;
use crate::shutdown::ShutdownReport;
use crate::stats::{Decision, DedupStats};
use crate::store::{ClaimOutcome, DedupStore, OwnerToken};

/// The [`Processor`] of a [`DedupHandler`] over a [`DedupStore`], shared with its background
/// commits (it is a processor as an `Arc`).
pub(crate) struct LeaseProcessor<H> {
    handler: H,
    store: Arc<dyn DedupStore>,
    config: DedupConfig,
    calls: StoreCalls,
    stats: Arc<DedupStats>,
    background: Background,
    /// Keys this listener committed, recognised without the store.
    near: NearCache,
}

/// Where one task of a batch stands, from its claim to its settlement: one value per task,
/// set by the claim, then by the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lease {
    /// Decided without a run: its outcome is set on the task.
    Decided,
    /// The handler is to run.
    ToRun(Claim),
    /// The handler ran, and this is the message's decision.
    Ran(Claim, Decision),
    /// Not run: an in-order batch stopped before it.
    Postponed(Claim),
}

/// What ties a task's run to its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claim {
    /// This batch's claim: committed or released when the batch settles.
    Held,
    /// None: the run has no record (no dedup key, or fail-open while the store is down).
    Unrecorded,
}

impl Lease {
    /// Whether this batch holds the task's claim (to commit or release).
    fn holds_claim(self) -> bool {
        match self {
            Lease::Decided => false,
            Lease::ToRun(claim) | Lease::Ran(claim, _) | Lease::Postponed(claim) => {
                claim == Claim::Held
            }
        }
    }
}

impl<H: DedupHandler> LeaseProcessor<H> {
    pub(crate) fn new(
        handler: H,
        store: Arc<dyn DedupStore>,
        config: &DedupConfig,
        stats: Arc<DedupStats>,
        runtime: tokio::runtime::Handle,
    ) -> Arc<Self> {
        let calls = StoreCalls::new(store.kind(), config, stats.clone());
        Arc::new(LeaseProcessor {
            handler,
            store,
            config: config.clone(),
            calls,
            stats,
            background: Background::new(runtime),
            near: NearCache::new(config.near_cache_capacity),
        })
    }
}

impl<H: DedupHandler> Processor for Arc<LeaseProcessor<H>> {
    fn dedup_key(&self, msg: &MessageExt) -> Result<DedupKey, KeyError> {
        self.handler.dedup_key(msg)
    }

    fn process<'t>(&'t self, tasks: &'t mut [Task<'_>], order: RunOrder) -> BoxFuture<'t, ()> {
        Box::pin(self.process(tasks, order))
    }

    fn shutdown(&self, timeout: Duration) -> BoxFuture<'_, ShutdownReport> {
        Box::pin(self.background.drain(timeout))
    }

    fn abandon(&self) {
        self.background.abandon();
    }

    fn kind(&self) -> &'static str {
        self.store.kind()
    }
}

impl<H: DedupHandler> LeaseProcessor<H> {
    async fn process(self: &Arc<Self>, tasks: &mut [Task<'_>], order: RunOrder) {
        let token = OwnerToken::random();
        let mut leases = self.claim(tasks, token).await;
        if order == RunOrder::InOrder {
            postpone_after_first_blocked(tasks, &mut leases);
        }
        self.run(tasks, &mut leases, token, order).await;
        self.settle(tasks, &leases, token).await;
    }

    /// Runs the handlers of the tasks to run (renewing their claims meanwhile), and records
    /// how each went; in order, the ones after a failure are postponed.
    async fn run(
        &self,
        tasks: &[Task<'_>],
        leases: &mut [Lease],
        token: OwnerToken,
        order: RunOrder,
    ) {
        let to_run = || {
            tasks
                .iter()
                .zip(leases.iter())
                .filter(|(_, lease)| matches!(lease, Lease::ToRun(_)))
        };
        let msgs: Vec<&MessageExt> = to_run().map(|(task, _)| task.msg()).collect();
        let claimed: Vec<RecordKey> = to_run()
            .filter(|(_, lease)| lease.holds_claim())
            .filter_map(|(task, _)| task.key().cloned())
            .collect();
        let results = self.run_handlers(&msgs, &claimed, token, order).await;
        let to_run = leases.iter_mut().filter(|l| matches!(l, Lease::ToRun(_)));
        for (lease, ran) in to_run.zip(results) {
            let Lease::ToRun(claim) = *lease else {
                continue;
            };
            *lease = match (ran, claim) {
                (Ran::Done(Ok(())), Claim::Held) => Lease::Ran(claim, Decision::Processed),
                (Ran::Done(Ok(())), Claim::Unrecorded) => {
                    Lease::Ran(claim, Decision::ProcessedWithoutDedup)
                }
                (Ran::Done(Err(failure)), _) => Lease::Ran(claim, failure),
                (Ran::Postponed, _) => Lease::Postponed(claim),
            };
        }
    }

    /// Claims the keys of `tasks` in one call; sets the outcome of each task the claim
    /// decides, and answers each task's lease.
    async fn claim(&self, tasks: &mut [Task<'_>], token: OwnerToken) -> Vec<Lease> {
        // Copies of keys this listener committed are duplicates without asking the store.
        let near = self.near.hits(tasks.iter().map(Task::key));
        let keys: Vec<RecordKey> = tasks
            .iter()
            .zip(&near)
            .filter(|(_, hit)| !**hit)
            .filter_map(|(t, _)| t.key().cloned())
            .collect();
        let ttl = self.config.processing_ttl;
        let answers = match keys.is_empty() {
            true => Ok(Vec::new()),
            false => {
                let call = self.store.claim(&keys, token, ttl);
                self.calls.call(StoreOperation::Claim, call).await
            }
        };
        let fail_open = self.config.store_error_policy == StoreErrorPolicy::FailOpen;
        let mut answers = answers.map(Vec::into_iter);
        let mut leases = Vec::with_capacity(tasks.len());
        for (task, hit) in tasks.iter_mut().zip(near) {
            if hit {
                leases.push(decided(task, Decision::Duplicate));
                continue;
            }
            let answer = match (&mut answers, task.key()) {
                (_, None) => {
                    leases.push(Lease::ToRun(Claim::Unrecorded));
                    continue;
                }
                (Ok(answers), Some(_)) => answers.next(),
                (Err(_), Some(_)) => None,
            };
            let lease = match answer {
                Some(ClaimOutcome::Claimed) => Lease::ToRun(Claim::Held),
                Some(ClaimOutcome::Consumed) => decided(task, Decision::Duplicate),
                Some(ClaimOutcome::InFlight) => decided(task, Decision::DeferredInFlight),
                None if fail_open => Lease::ToRun(Claim::Unrecorded),
                None => {
                    if answers.is_ok() {
                        error!("the store answered fewer claims than keys; treating the rest as unavailable");
                    }
                    decided(task, Decision::StoreUnavailable)
                }
            };
            leases.push(lease);
        }
        leases
    }

    /// Commits the successes, releases the rest of this batch's claims, then sets every
    /// task's outcome (which lets the key go in this process).
    async fn settle(self: &Arc<Self>, tasks: &mut [Task<'_>], leases: &[Lease], token: OwnerToken) {
        let background = self.config.ack_before_commit;
        let mut commits = Vec::new();
        let mut holds = Vec::new();
        let mut releases = Vec::new();
        for (task, lease) in tasks.iter_mut().zip(leases) {
            let Some(key) = task.key().filter(|_| lease.holds_claim()) else {
                continue;
            };
            match lease {
                Lease::Ran(_, Decision::Processed) => {
                    commits.push(key.clone());
                    if background && !self.near.enabled() {
                        // Copies in this process keep waiting until the commit lands.
                        holds.extend(task.take_hold());
                    }
                }
                _ => releases.push(key.clone()),
            }
        }
        if background && !commits.is_empty() {
            // The handlers succeeded, so a copy in this process is a duplicate from now on, not
            // only once the commit lands: it need not wait for it (nor for a commit that waits
            // for a carrier, see `RedisStoreBuilder::commit_linger`).
            let now = tokio::time::Instant::now();
            self.near.insert(&commits, now + self.config.record_ttl);
            // Off the ack path: tracked, so shutdown waits for it.
            self.commit_detached(commits, token, holds);
        } else {
            self.commit(commits, token).await;
        }
        self.release(releases, token).await;
        for (task, lease) in tasks.iter_mut().zip(leases) {
            match *lease {
                Lease::Decided => {}
                Lease::Ran(_, decision) => task.finish(decision),
                Lease::ToRun(_) | Lease::Postponed(_) => task.finish(Decision::Postponed),
            }
        }
    }
}

/// Sets `task`'s outcome: decided without a run.
fn decided(task: &mut Task<'_>, outcome: Decision) -> Lease {
    task.finish(outcome);
    Lease::Decided
}

/// In an in-order batch, nothing runs after a message that must be retried.
fn postpone_after_first_blocked(tasks: &[Task<'_>], leases: &mut [Lease]) {
    let blocked = tasks
        .iter()
        .position(|t| t.decision().is_some_and(Decision::needs_retry));
    if let Some(first) = blocked {
        for lease in &mut leases[first + 1..] {
            if let Lease::ToRun(claim) = *lease {
                *lease = Lease::Postponed(claim);
            }
        }
    }
}
