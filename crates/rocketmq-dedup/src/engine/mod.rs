//! The dedup engine: a batch in, one [`Decision`] per message out, whatever the listener.
//!
//! For each batch it derives every message's record key ([`keying`]), groups copies
//! ([`batch`]), holds the keys in this process ([`inflight`]) and hands the entries to its
//! [`Processor`] ([`processor`]), which runs the handlers and records what they did. A key that
//! another batch of this listener is processing waits for it: in a concurrent batch after the
//! rest of the batch is done, in an in-order batch before anything runs. The listeners map the
//! decisions to their client's status.

pub(crate) mod batch;
pub(crate) mod calls;
pub(crate) mod inflight;
pub(crate) mod keying;
pub(crate) mod processor;
pub(crate) mod run;

use std::sync::Arc;
use std::time::Duration;

use rocketmq_model::common::message::message_ext::MessageExt;
use tracing::{debug, error, info_span, Instrument};

use self::batch::{Batch, EntryState};
use self::inflight::{InFlightRegistry, Registered};
use self::processor::{Processor, RunOrder, Task};
use crate::config::DedupConfig;
use crate::listener_runtime::ListenerRuntime;
use crate::shutdown::ShutdownReport;
use crate::stats::{Decision, DedupStats, Event};

/// The tracing target of the one event per message that states its [`Decision`]
/// (at DEBUG): `RUST_LOG=rocketmq_dedup::decision=debug` prints one line per decision.
pub(crate) const DECISION_TARGET: &str = "rocketmq_dedup::decision";

/// What the engine answers for a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BatchAnswer {
    /// Every message is done (processed, or a duplicate): the batch is acked.
    Done,
    /// Some message must be delivered again (its decision needs a retry): the whole batch is.
    Retry,
}

/// What a pass does with an entry whose key another batch of this listener holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WhenHeld {
    /// Leave it waiting for that batch.
    Wait,
    /// Process it anyway (the store decides), without holding the key here.
    Proceed,
}

/// The listener-neutral core; see the module docs.
pub(crate) struct Engine {
    processor: Box<dyn Processor>,
    config: DedupConfig,
    stats: Arc<DedupStats>,
    registry: Arc<InFlightRegistry>,
    order: RunOrder,
    runtime: ListenerRuntime,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("store", &self.processor.kind())
            .field("order", &self.order)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Engine {
    pub(crate) fn new(
        processor: Box<dyn Processor>,
        config: DedupConfig,
        stats: Arc<DedupStats>,
        order: RunOrder,
        runtime: ListenerRuntime,
    ) -> Self {
        Engine {
            registry: Arc::new(InFlightRegistry::new(!config.in_flight_wait.is_zero())),
            processor,
            config,
            stats,
            order,
            runtime,
        }
    }

    pub(crate) fn config(&self) -> &DedupConfig {
        &self.config
    }

    pub(crate) fn stats(&self) -> &Arc<DedupStats> {
        &self.stats
    }

    pub(crate) fn runtime(&self) -> &ListenerRuntime {
        &self.runtime
    }

    /// Processes a batch: every message gets its decision, recorded and counted.
    pub(crate) async fn consume(&self, msgs: &[&MessageExt]) -> BatchAnswer {
        let span = info_span!(
            "dedup_batch",
            size = msgs.len(),
            store = self.processor.kind()
        );
        async {
            let mut batch = Batch::plan(msgs, |msg| {
                let derived = self.processor.dedup_key(msg);
                keying::keyed(&self.config, &self.stats, msg, derived)
            });
            match self.order {
                RunOrder::Independent => {
                    self.pass(&mut batch, WhenHeld::Wait).await;
                    self.wait_then_pass(&mut batch).await;
                }
                RunOrder::InOrder => {
                    self.wait_for_holders(&batch).await;
                    self.pass(&mut batch, WhenHeld::Proceed).await;
                }
            }
            self.record(&batch)
        }
        .instrument(span)
        .await
    }

    /// Processes the pending entries; an entry whose key another batch of this listener holds
    /// is left waiting or processed anyway, as `when_held` says.
    async fn pass(&self, batch: &mut Batch<'_>, when_held: WhenHeld) {
        let mut picked = Vec::new();
        for (e, entry) in batch.entries.iter_mut().enumerate() {
            if !matches!(entry.state, EntryState::Pending) {
                continue;
            }
            let hold = match &entry.key {
                None => None,
                Some(key) => match (self.registry.register(key), when_held) {
                    (Registered::Held(hold), _) => hold,
                    (Registered::Busy(done), WhenHeld::Wait) => {
                        entry.state = EntryState::Waiting(done);
                        continue;
                    }
                    (Registered::Busy(_), WhenHeld::Proceed) => None,
                },
            };
            picked.push((e, hold));
        }
        if picked.is_empty() {
            return;
        }
        let entries: Vec<usize> = picked.iter().map(|(e, _)| *e).collect();
        let mut tasks: Vec<Task<'_>> = picked
            .into_iter()
            .map(|(e, hold)| {
                let entry = &batch.entries[e];
                Task::new(entry.key.as_ref(), batch.msg(entry.leader), hold)
            })
            .collect();
        self.processor.process(&mut tasks, self.order).await;
        let outcomes: Vec<Decision> = tasks
            .iter()
            .map(|task| task.decision().expect("the processor completes every task"))
            .collect();
        drop(tasks);
        for (e, outcome) in entries.into_iter().zip(outcomes) {
            batch.entries[e].state = EntryState::Done(outcome);
        }
    }

    /// Waits (at most the in-flight wait) for the other batches of this listener that hold
    /// this batch's waiting keys; once they all let go, processes those keys.
    async fn wait_then_pass(&self, batch: &mut Batch<'_>) {
        if !batch.has_waiting() {
            return;
        }
        let signals = batch.waiting_signals();
        let all = inflight::all_let_go(signals);
        if let Ok(true) = tokio::time::timeout(self.config.in_flight_wait, all).await {
            batch.retry_waiting();
            self.pass(batch, WhenHeld::Proceed).await;
        }
    }

    /// Waits (at most the in-flight wait) until no other batch of this listener holds a key
    /// of this one. Nothing of this batch is held while it waits, so two batches never wait
    /// for each other.
    async fn wait_for_holders(&self, batch: &Batch<'_>) {
        let signals: Vec<_> = batch
            .entries
            .iter()
            .filter_map(|e| e.key.as_ref())
            .filter_map(|key| self.registry.holder_of(key))
            .collect();
        if !signals.is_empty() {
            let all = inflight::all_let_go(signals);
            let _ = tokio::time::timeout(self.config.in_flight_wait, all).await;
        }
    }

    /// Records every message's decision (stats, metrics, one DEBUG line each).
    fn record(&self, batch: &Batch<'_>) -> BatchAnswer {
        let decisions = batch.decisions();
        let answer = match decisions.iter().any(|d| d.needs_retry()) {
            true => BatchAnswer::Retry,
            false => BatchAnswer::Done,
        };
        for (i, decision) in decisions.into_iter().enumerate() {
            self.record_one(batch.msg(i), decision, answer);
        }
        self.stats
            .answer(batch.len() as u64, answer == BatchAnswer::Retry);
        answer
    }

    fn record_one(&self, msg: &MessageExt, decision: Decision, answer: BatchAnswer) {
        self.stats.decide(decision);
        debug!(
            target: DECISION_TARGET,
            msg_id = %msg.msg_id,
            topic = %msg.topic(),
            reconsume_times = msg.reconsume_times,
            decision = decision.as_str(),
            batch_retried = answer == BatchAnswer::Retry,
            "dedup decision"
        );
        let near_dead_letter = msg.reconsume_times + 1 >= self.config.max_reconsume_times;
        if decision == Decision::DeferredInFlight && near_dead_letter {
            self.stats.event(Event::DeferredNearDeadLetter, 1);
            error!(
                msg_id = %msg.msg_id,
                topic = %msg.topic(),
                reconsume_times = msg.reconsume_times,
                max_reconsume_times = self.config.max_reconsume_times,
                "message deferred on its last reconsume attempt while another consumer holds its claim: it may go to the dead-letter queue unprocessed"
            );
        }
    }

    /// Finishes background work within `timeout`.
    pub(crate) async fn shutdown(&self, timeout: Duration) -> ShutdownReport {
        self.processor.shutdown(timeout).await
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.processor.abandon();
    }
}
