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

/// What the claim decided for one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Run the handler; `recorded`: under a claim this batch holds.
    Run { recorded: bool },
    /// Not run (an in-order batch stopped before it); `recorded` as above.
    Postpone { recorded: bool },
    /// Its outcome is set.
    Done,
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
        let mut steps = self.claim(tasks, token).await;
        if order == RunOrder::InOrder {
            postpone_after_first_blocked(tasks, &mut steps);
        }
        let to_run: Vec<usize> = (0..tasks.len())
            .filter(|&i| matches!(steps[i], Step::Run { .. }))
            .collect();
        let msgs: Vec<&MessageExt> = to_run.iter().map(|&i| tasks[i].msg()).collect();
        let claimed: Vec<RecordKey> = recorded_keys(tasks, &steps, &to_run);
        let results = self.run_handlers(&msgs, &claimed, token, order).await;
        // A run the in-order batch stopped before is postponed, like the ones after a block.
        for (k, &i) in to_run.iter().enumerate() {
            if results.get(k).is_none() {
                let recorded = steps[i] == Step::Run { recorded: true };
                steps[i] = Step::Postpone { recorded };
            }
        }
        let mut outcomes: Vec<Option<Outcome>> = tasks.iter().map(Task::outcome).collect();
        for (&i, result) in to_run.iter().zip(&results) {
            outcomes[i] = Some(match (steps[i], result) {
                (Step::Run { recorded: true }, Ok(())) => Outcome::Processed,
                (_, Ok(())) => Outcome::ProcessedWithoutDedup,
                (_, Err(failure)) => *failure,
            });
        }
        self.settle(tasks, &steps, &outcomes, token).await;
    }

    /// Claims the keys of `tasks` in one call; sets the outcome of each task the claim
    /// decides, and answers each task's step.
    async fn claim(&self, tasks: &mut [Task<'_>], token: OwnerToken) -> Vec<Step> {
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
        let mut steps = Vec::with_capacity(tasks.len());
        for (task, hit) in tasks.iter_mut().zip(near) {
            if hit {
                steps.push(done(task, Outcome::Duplicate));
                continue;
            }
            let answer = match (&mut answers, task.key()) {
                (_, None) => {
                    steps.push(Step::Run { recorded: false });
                    continue;
                }
                (Ok(answers), Some(_)) => answers.next(),
                (Err(_), Some(_)) => None,
            };
            let step = match answer {
                Some(ClaimOutcome::Claimed) => Step::Run { recorded: true },
                Some(ClaimOutcome::Consumed) => done(task, Outcome::Duplicate),
                Some(ClaimOutcome::InFlight) => done(task, Outcome::InFlight),
                None if fail_open => Step::Run { recorded: false },
                None => {
                    if answers.is_ok() {
                        error!("the store answered fewer claims than keys; treating the rest as unavailable");
                    }
                    done(task, Outcome::StoreUnavailable)
                }
            };
            steps.push(step);
        }
        steps
    }

    /// Commits the successes, releases the rest of this batch's claims, then sets every
    /// task's outcome (which lets the key go in this process).
    async fn settle(
        self: &Arc<Self>,
        tasks: &mut [Task<'_>],
        steps: &[Step],
        outcomes: &[Option<Outcome>],
        token: OwnerToken,
    ) {
        let background = self.config.ack_before_commit;
        let mut commits = Vec::new();
        let mut holds = Vec::new();
        let mut releases = Vec::new();
        for ((task, step), outcome) in tasks.iter_mut().zip(steps).zip(outcomes) {
            let recorded = matches!(
                step,
                Step::Run { recorded: true } | Step::Postpone { recorded: true }
            );
            match (task.key(), recorded, outcome) {
                (Some(key), true, Some(Outcome::Processed)) => {
                    commits.push(key.clone());
                    if background && !self.near.enabled() {
                        // Copies in this process keep waiting until the commit lands.
                        holds.extend(task.take_hold());
                    }
                }
                (Some(key), true, _) => releases.push(key.clone()),
                _ => {}
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
        for ((task, step), outcome) in tasks.iter_mut().zip(steps).zip(outcomes) {
            match (step, outcome) {
                (Step::Done, _) => {}
                (Step::Postpone { .. }, _) | (_, None) => task.finish(Outcome::Postponed),
                (_, Some(outcome)) => task.finish(*outcome),
            }
        }
    }
}

fn done(task: &mut Task<'_>, outcome: Outcome) -> Step {
    task.finish(outcome);
    Step::Done
}

/// In an in-order batch, nothing runs after a message that must be retried.
fn postpone_after_first_blocked(tasks: &[Task<'_>], steps: &mut [Step]) {
    let blocked = tasks
        .iter()
        .position(|t| t.outcome().is_some_and(Outcome::blocks_what_follows));
    if let Some(first) = blocked {
        for step in &mut steps[first + 1..] {
            if let Step::Run { recorded } = *step {
                *step = Step::Postpone { recorded };
            }
        }
    }
}

/// The keys of the tasks in `to_run` that run under this batch's claim.
fn recorded_keys(tasks: &[Task<'_>], steps: &[Step], to_run: &[usize]) -> Vec<RecordKey> {
    to_run
        .iter()
        .filter(|&&i| steps[i] == Step::Run { recorded: true })
        .filter_map(|&i| tasks[i].key().cloned())
        .collect()
}
