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

/// One task of a batch and its lease, together from the claim to the settlement.
struct Leased<'b, 't> {
    task: &'b mut Task<'t>,
    lease: Lease,
}

impl Leased<'_, '_> {
    /// Sets the task's outcome: decided without a run.
    fn decide(&mut self, outcome: Decision) {
        self.task.finish(outcome);
        self.lease = Lease::Decided;
    }

    /// The key of the claim this batch holds for the task, if it holds one.
    fn held_key(&self) -> Option<&RecordKey> {
        self.task.key().filter(|_| self.lease.holds_claim())
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
        let mut batch = self.claim(tasks, token).await;
        if order == RunOrder::InOrder {
            postpone_after_first_blocked(&mut batch);
        }
        self.run(&mut batch, token, order).await;
        self.settle(&mut batch, token).await;
    }

    /// Runs the handlers of the tasks to run (renewing their claims meanwhile), and records
    /// how each went; in order, the ones after a failure are postponed.
    async fn run(&self, batch: &mut [Leased<'_, '_>], token: OwnerToken, order: RunOrder) {
        let to_run = || batch.iter().filter(|l| matches!(l.lease, Lease::ToRun(_)));
        let msgs: Vec<&MessageExt> = to_run().map(|l| l.task.msg()).collect();
        let claimed: Vec<RecordKey> = to_run().filter_map(|l| l.held_key().cloned()).collect();
        let results = self.run_handlers(&msgs, &claimed, token, order).await;
        let to_run = batch
            .iter_mut()
            .filter(|l| matches!(l.lease, Lease::ToRun(_)));
        for (leased, ran) in to_run.zip(results) {
            let Lease::ToRun(claim) = leased.lease else {
                continue;
            };
            leased.lease = match (ran, claim) {
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
    /// decides, and answers each task with its lease.
    async fn claim<'b, 't>(
        &self,
        tasks: &'b mut [Task<'t>],
        token: OwnerToken,
    ) -> Vec<Leased<'b, 't>> {
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
        let mut batch = Vec::with_capacity(tasks.len());
        for (task, hit) in tasks.iter_mut().zip(near) {
            let has_key = task.key().is_some();
            let mut leased = Leased {
                task,
                lease: Lease::ToRun(Claim::Unrecorded),
            };
            let answer = match (hit, &mut answers, has_key) {
                (true, _, _) => Some(ClaimOutcome::Consumed),
                (false, _, false) => {
                    batch.push(leased);
                    continue;
                }
                (false, Ok(answers), true) => answers.next(),
                (false, Err(_), true) => None,
            };
            match answer {
                Some(ClaimOutcome::Claimed) => leased.lease = Lease::ToRun(Claim::Held),
                Some(ClaimOutcome::Consumed) => leased.decide(Decision::Duplicate),
                Some(ClaimOutcome::InFlight) => leased.decide(Decision::DeferredInFlight),
                None if fail_open => {}
                None => {
                    if answers.is_ok() {
                        error!("the store answered fewer claims than keys; treating the rest as unavailable");
                    }
                    leased.decide(Decision::StoreUnavailable)
                }
            }
            batch.push(leased);
        }
        batch
    }

    /// Commits the successes, releases the rest of this batch's claims, then sets every
    /// task's outcome (which lets the key go in this process).
    async fn settle(self: &Arc<Self>, batch: &mut [Leased<'_, '_>], token: OwnerToken) {
        let background = self.config.ack_before_commit;
        let mut commits = Vec::new();
        let mut holds = Vec::new();
        let mut releases = Vec::new();
        for leased in batch.iter_mut() {
            let Some(key) = leased.held_key().cloned() else {
                continue;
            };
            match leased.lease {
                Lease::Ran(_, Decision::Processed) => {
                    commits.push(key);
                    if background && !self.near.enabled() {
                        // Copies in this process keep waiting until the commit lands.
                        holds.extend(leased.task.take_hold());
                    }
                }
                _ => releases.push(key),
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
        for leased in batch.iter_mut() {
            match leased.lease {
                Lease::Decided => {}
                Lease::Ran(_, decision) => leased.task.finish(decision),
                Lease::ToRun(_) | Lease::Postponed(_) => leased.task.finish(Decision::Postponed),
            }
        }
    }
}

/// In an in-order batch, nothing runs after a message that must be retried.
fn postpone_after_first_blocked(batch: &mut [Leased<'_, '_>]) {
    let blocked = batch
        .iter()
        .position(|l| l.task.decision().is_some_and(Decision::needs_retry));
    if let Some(first) = blocked {
        for leased in &mut batch[first + 1..] {
            if let Lease::ToRun(claim) = leased.lease {
                leased.lease = Lease::Postponed(claim);
            }
        }
    }
}
