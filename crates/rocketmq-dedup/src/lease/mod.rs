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
use crate::engine::task::{Outcome, Processor, RunOrder, Task};
use crate::error::{KeyError, StoreOperation};
use crate::handler::DedupHandler;
use crate::key::DedupKey;
use crate::record_key::RecordKey;
use crate::shutdown::ShutdownReport;
use crate::stats::DedupStats;
use crate::store::{ClaimOutcome, DedupStore, OwnerToken};

/// The [`Processor`] of a [`DedupHandler`] over a [`DedupStore`].
pub(crate) struct LeaseProcessor<H> {
    shared: Arc<Shared<H>>,
}

/// What the processor and its background commit retries share.
pub(crate) struct Shared<H> {
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
    /// The handler is to run; `claimed`: under this batch's claim (else without a record).
    ToRun { claimed: bool },
    /// The handler ran, with this outcome.
    Ran { claimed: bool, outcome: Outcome },
    /// Not run: an in-order batch stopped before it.
    Postponed { claimed: bool },
}

impl Lease {
    /// Whether this batch holds the task's claim (to commit or release).
    fn claimed(self) -> bool {
        match self {
            Lease::Decided => false,
            Lease::ToRun { claimed }
            | Lease::Ran { claimed, .. }
            | Lease::Postponed { claimed } => claimed,
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
    ) -> Self {
        let calls = StoreCalls {
            kind: store.kind(),
            timeout: config.store_timeout,
            stats: stats.clone(),
        };
        LeaseProcessor {
            shared: Arc::new(Shared {
                handler,
                store,
                config: config.clone(),
                calls,
                stats,
                background: Background::new(runtime),
                near: NearCache::new(config.near_cache_capacity),
            }),
        }
    }
}

impl<H: DedupHandler> Processor for LeaseProcessor<H> {
    fn dedup_key(&self, msg: &MessageExt) -> Result<DedupKey, KeyError> {
        self.shared.handler.dedup_key(msg)
    }

    fn process<'t>(&'t self, tasks: &'t mut [Task<'_>], order: RunOrder) -> BoxFuture<'t, ()> {
        Box::pin(self.shared.process(tasks, order))
    }

    fn shutdown(&self, timeout: Duration) -> BoxFuture<'_, ShutdownReport> {
        Box::pin(self.shared.background.drain(timeout))
    }

    fn abandon(&self) {
        self.shared.background.abandon();
    }

    fn kind(&self) -> &'static str {
        self.shared.store.kind()
    }
}

impl<H: DedupHandler> Shared<H> {
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
                .filter(|(_, lease)| matches!(lease, Lease::ToRun { .. }))
        };
        let msgs: Vec<&MessageExt> = to_run().map(|(task, _)| task.msg()).collect();
        let claimed: Vec<RecordKey> = to_run()
            .filter(|(_, lease)| lease.claimed())
            .filter_map(|(task, _)| task.key().cloned())
            .collect();
        let mut results = self
            .run_handlers(&msgs, &claimed, token, order)
            .await
            .into_iter();
        for lease in leases.iter_mut() {
            let Lease::ToRun { claimed } = *lease else {
                continue;
            };
            *lease = match results.next() {
                Some(Ok(())) if claimed => Lease::Ran {
                    claimed,
                    outcome: Outcome::Processed,
                },
                Some(Ok(())) => Lease::Ran {
                    claimed,
                    outcome: Outcome::ProcessedWithoutDedup,
                },
                Some(Err(failure)) => Lease::Ran {
                    claimed,
                    outcome: failure,
                },
                // An in-order run stopped before it.
                None => Lease::Postponed { claimed },
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
                leases.push(decided(task, Outcome::Duplicate));
                continue;
            }
            let answer = match (&mut answers, task.key()) {
                (_, None) => {
                    leases.push(Lease::ToRun { claimed: false });
                    continue;
                }
                (Ok(answers), Some(_)) => answers.next(),
                (Err(_), Some(_)) => None,
            };
            let lease = match answer {
                Some(ClaimOutcome::Claimed) => Lease::ToRun { claimed: true },
                Some(ClaimOutcome::Consumed) => decided(task, Outcome::Duplicate),
                Some(ClaimOutcome::InFlight) => decided(task, Outcome::InFlight),
                None if fail_open => Lease::ToRun { claimed: false },
                None => {
                    if answers.is_ok() {
                        error!("the store answered fewer claims than keys; treating the rest as unavailable");
                    }
                    decided(task, Outcome::StoreUnavailable)
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
            let Some(key) = task.key().filter(|_| lease.claimed()) else {
                continue;
            };
            match lease {
                Lease::Ran {
                    outcome: Outcome::Processed,
                    ..
                } => {
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
                Lease::Ran { outcome, .. } => task.finish(outcome),
                Lease::ToRun { .. } | Lease::Postponed { .. } => task.finish(Outcome::Postponed),
            }
        }
    }
}

/// Sets `task`'s outcome: decided without a run.
fn decided(task: &mut Task<'_>, outcome: Outcome) -> Lease {
    task.finish(outcome);
    Lease::Decided
}

/// In an in-order batch, nothing runs after a message that must be retried.
fn postpone_after_first_blocked(tasks: &[Task<'_>], leases: &mut [Lease]) {
    let blocked = tasks
        .iter()
        .position(|t| t.outcome().is_some_and(Outcome::blocks_what_follows));
    if let Some(first) = blocked {
        for lease in &mut leases[first + 1..] {
            if let Lease::ToRun { claimed } = *lease {
                *lease = Lease::Postponed { claimed };
            }
        }
    }
}
