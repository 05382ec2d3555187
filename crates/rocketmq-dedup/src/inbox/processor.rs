//! The inbox's [`Processor`]: each task is one transaction that claims the record, runs the
//! handler and commits, all or nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use rocketmq_model::common::message::message_ext::MessageExt;
use tracing::warn;

use super::{Inbox, InboxBacked, InboxClaim, InboxHandler};
use crate::builder::sealed::{MadeProcessor, MakeProcessor};
use crate::config::DedupConfig;
use crate::engine::calls::StoreCalls;
use crate::engine::processor::{Processor, RunOrder, Task};
use crate::engine::run::{guarded, run_in_order, Ran};
use crate::error::{
    deadlock_backoff, ConfigError, KeyError, StoreError, StoreOperation, DEADLOCK_ATTEMPTS,
};
use crate::key::DedupKey;
use crate::record_key::RecordKey;
use crate::shutdown::ShutdownReport;
use crate::stats::{Decision, DedupStats, Event};
use crate::store::OwnerToken;

/// Runs each message in one inbox transaction.
pub(crate) struct InboxProcessor<H, I> {
    handler: H,
    inbox: I,
    record_ttl: Duration,
    concurrency: usize,
    calls: StoreCalls,
}

impl<H, I> MakeProcessor for InboxBacked<H, I>
where
    I: Inbox,
    H: InboxHandler<I::Database>,
{
    fn make(
        self,
        config: &DedupConfig,
        stats: Arc<DedupStats>,
        _runtime: tokio::runtime::Handle,
    ) -> Result<MadeProcessor, ConfigError> {
        Ok(MadeProcessor(Box::new(InboxProcessor::new(
            self, config, stats,
        ))))
    }
}

impl<H, I> InboxProcessor<H, I>
where
    I: Inbox,
    H: InboxHandler<I::Database>,
{
    fn new(processing: InboxBacked<H, I>, config: &DedupConfig, stats: Arc<DedupStats>) -> Self {
        let calls = StoreCalls::new(processing.inbox.kind(), config, stats);
        InboxProcessor {
            handler: processing.handler,
            inbox: processing.inbox,
            record_ttl: config.record_ttl,
            concurrency: config.handler_concurrency,
            calls,
        }
    }

    async fn process_all(&self, tasks: &mut [Task<'_>], order: RunOrder) {
        let runs: Vec<_> = tasks.iter().map(|t| self.run(t.key(), t.msg())).collect();
        let outcomes = run_in_order(runs, order, self.concurrency, |d| d.needs_retry()).await;
        for (task, ran) in tasks.iter_mut().zip(outcomes) {
            task.finish(match ran {
                Ran::Done(decision) => decision,
                Ran::Postponed => Decision::Postponed,
            });
        }
    }

    /// One message: claim, handler, commit, in one transaction; a deadlock tries it again.
    async fn run(&self, key: Option<&RecordKey>, msg: &MessageExt) -> Decision {
        for attempt in 1..=DEADLOCK_ATTEMPTS {
            match self.run_once(key, msg).await {
                Err(StoreError::Deadlock { .. }) if attempt < DEADLOCK_ATTEMPTS => {
                    self.calls.stats.event(Event::TransactionRetried, 1);
                    warn!(msg_id = %msg.msg_id, attempt, "the message's transaction was a deadlock victim and rolled back; running it again");
                    deadlock_backoff(attempt).await
                }
                Err(_) => return Decision::StoreUnavailable,
                Ok(outcome) => return outcome,
            }
        }
        Decision::StoreUnavailable
    }

    async fn run_once(
        &self,
        key: Option<&RecordKey>,
        msg: &MessageExt,
    ) -> Result<Decision, StoreError> {
        let calls = &self.calls;
        let mut tx = calls
            .call(StoreOperation::Begin, self.inbox.begin())
            .await?;
        if let Some(key) = key {
            let token = OwnerToken::random();
            let claim = self.inbox.claim(&mut tx, key, token, self.record_ttl);
            match calls.call(StoreOperation::Claim, claim).await? {
                InboxClaim::Claimed => {}
                InboxClaim::Consumed => return Ok(Decision::Duplicate),
                InboxClaim::InFlight => return Ok(Decision::DeferredInFlight),
            }
        }
        let deadlocked = AtomicBool::new(false);
        let handler = async {
            let result = self.handler.handle(msg, &mut tx).await;
            if let Err(err) = &result {
                let sql = err.downcast_ref::<sqlx::Error>();
                let victim = sql.is_some_and(|e| self.inbox.is_deadlock(e));
                deadlocked.store(victim, Ordering::Relaxed);
            }
            result
        };
        if let Err(failure) = guarded(msg, || handler).await {
            // Dropping the transaction rolls it back: no effect, no record.
            if deadlocked.load(Ordering::Relaxed) {
                let operation = StoreOperation::Commit;
                return Err(StoreError::Deadlock {
                    operation,
                    attempts: 1,
                });
            }
            return Ok(failure);
        }
        let commit = calls
            .call(StoreOperation::Commit, self.inbox.commit(tx))
            .await;
        if let Err(err) = &commit {
            if !matches!(err, StoreError::Deadlock { .. }) {
                warn!(msg_id = %msg.msg_id, error = %err, "the inbox commit's answer was lost: the effect and its record committed together or not at all; the message will be retried");
            }
        }
        commit?;
        Ok(match key {
            Some(_) => Decision::Processed,
            None => Decision::ProcessedWithoutDedup,
        })
    }
}

impl<H, I> Processor for InboxProcessor<H, I>
where
    I: Inbox,
    H: InboxHandler<I::Database>,
{
    fn dedup_key(&self, msg: &MessageExt) -> Result<DedupKey, KeyError> {
        self.handler.dedup_key(msg)
    }

    fn process<'t>(&'t self, tasks: &'t mut [Task<'_>], order: RunOrder) -> BoxFuture<'t, ()> {
        Box::pin(self.process_all(tasks, order))
    }

    fn shutdown(&self, _timeout: Duration) -> BoxFuture<'_, ShutdownReport> {
        // Nothing runs in the background: every transaction ends with its message.
        Box::pin(async { ShutdownReport::default() })
    }

    fn abandon(&self) {}

    fn kind(&self) -> &'static str {
        self.inbox.kind()
    }
}
