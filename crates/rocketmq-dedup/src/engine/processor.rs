//! The seam between the engine and what ties a handler's run to its record: the [`Processor`]
//! trait and the [`Task`]s it completes, each with the [`Decision`] for its message.
//!
//! The engine decides which messages need a handler run and which wait; a processor decides
//! how a run and its record are tied together. The lease processor
//! ([`crate::lease`]) claims in a [`DedupStore`](crate::DedupStore), runs, then commits or
//! releases: three steps. A transactional store instead claims, runs the handler with its open
//! transaction, and commits once; both are processors, and the engine is the same.

use std::time::Duration;

use futures::future::BoxFuture;
use rocketmq_model::common::message::message_ext::MessageExt;

use super::inflight::Registration;
use crate::error::KeyError;
use crate::key::DedupKey;
use crate::record_key::RecordKey;
use crate::shutdown::ShutdownReport;
use crate::stats::Decision;

/// How a batch's tasks relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunOrder {
    /// Every task runs whatever happens to the others (the concurrent listener).
    Independent,
    /// Tasks run one at a time in message order; the first that cannot complete postpones
    /// the rest (the orderly listener).
    InOrder,
}

/// One handler run to tie to its record: a record key (or none: run without dedup), the first
/// message of the batch with that key, and the same-process hold on the key.
#[derive(Debug)]
pub(crate) struct Task<'b> {
    key: Option<&'b RecordKey>,
    msg: &'b MessageExt,
    decision: Option<Decision>,
    /// Released when the decision is set, so that a waiting copy in another batch of this
    /// listener goes on as soon as the key is settled.
    hold: Option<Registration>,
}

impl<'b> Task<'b> {
    pub(crate) fn new(
        key: Option<&'b RecordKey>,
        msg: &'b MessageExt,
        hold: Option<Registration>,
    ) -> Self {
        Task {
            key,
            msg,
            decision: None,
            hold,
        }
    }

    /// The record key; `None` for a message processed without dedup.
    pub(crate) fn key(&self) -> Option<&'b RecordKey> {
        self.key
    }

    /// The message whose handler runs.
    pub(crate) fn msg(&self) -> &'b MessageExt {
        self.msg
    }

    /// The decision, once set.
    pub(crate) fn decision(&self) -> Option<Decision> {
        self.decision
    }

    /// Takes the same-process hold on the key (for work that outlives the batch's answer, such
    /// as a commit written after the ack), so `finish` does not let the key go.
    pub(crate) fn take_hold(&mut self) -> Option<Registration> {
        self.hold.take()
    }

    /// Sets the decision and lets the key go in this process.
    pub(crate) fn finish(&mut self, decision: Decision) {
        self.decision = Some(decision);
        self.hold = None;
    }
}

/// Ties handler runs to their records. See the module docs.
pub(crate) trait Processor: Send + Sync + 'static {
    /// The message's dedup key, from the handler.
    fn dedup_key(&self, msg: &MessageExt) -> Result<DedupKey, KeyError>;

    /// Completes every task: each ends with a [`Decision`] set by [`Task::finish`].
    /// In-order tasks run one at a time in slice order.
    fn process<'t>(&'t self, tasks: &'t mut [Task<'_>], order: RunOrder) -> BoxFuture<'t, ()>;

    /// Finishes background work (commit retries) within `timeout`: what cannot be finished is
    /// reported as failed.
    fn shutdown(&self, timeout: Duration) -> BoxFuture<'_, ShutdownReport>;

    /// The listener is gone: background work gives up now, reporting what it gives up.
    fn abandon(&self);

    /// The store's short name, for logs and metrics.
    fn kind(&self) -> &'static str;
}
