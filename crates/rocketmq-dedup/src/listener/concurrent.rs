//! [`DedupConcurrentListener`]: the deduplicating `MessageListenerConcurrently`.

use rocketmq_client_rust::{
    ClientResult, ConsumeConcurrentlyContext, ConsumeConcurrentlyStatus,
    MessageListenerConcurrently,
};
use rocketmq_model::common::message::message_ext::MessageExt;

use super::{Concurrent, DedupListener};
use crate::engine::BatchAnswer;

/// A RocketMQ concurrent listener that runs its [`DedupHandler`](crate::DedupHandler) at most once per dedup key.
///
/// For each batch it derives every message's dedup key, claims all keys in one store call,
/// runs the handler for the claimed ones (renewing the claims while it runs), then commits the
/// successes and releases the failures in one call each:
///
/// | claim finds | handler | message |
/// |---|---|---|
/// | absent: claimed | runs; `Ok` → commit, `Err`/panic → release | ack / RECONSUME_LATER |
/// | CONSUMING by another batch of this listener | waits for it, then claims again | as that claim finds |
/// | CONSUMING by another owner | not run | RECONSUME_LATER (back through `%RETRY%group`) |
/// | CONSUMED | not run | ack |
/// | store error | not run ([`FailClosed`](crate::StoreErrorPolicy::FailClosed)) or run without dedup (`FailOpen`) | RECONSUME_LATER / ack |
///
/// rocketmq-client-rust 1.0.0 gives the listener no way to ack part of a batch, so a batch is
/// all-or-nothing: when any message must be retried, the whole batch is RECONSUME_LATER. That
/// is safe: the messages already committed come back as CONSUMED and are acked without running
/// the handler. Copies of one key within a batch run the handler once.
///
/// ```no_run
/// use rocketmq_dedup::{handler_fn, DedupConcurrentListener, store::MemoryStore};
/// use rocketmq_model::common::message::message_ext::MessageExt;
///
/// let listener = DedupConcurrentListener::builder(handler_fn(|_msg: &MessageExt| Ok(())))
///     .namespace("order-consumer-group")
///     .store(MemoryStore::new())
///     .build()?;
/// // consumer.register_message_listener_concurrently(listener.clone());
/// println!("{}", listener.stats().summary());
/// # Ok::<(), rocketmq_dedup::ConfigError>(())
/// ```
///
/// # Threads
/// The client calls the listener synchronously on a blocking thread. The listener drives its
/// async work there with the Tokio runtime it was built on (or
/// [`runtime`](crate::DedupListenerBuilder::runtime) gives), so it never blocks a runtime worker and
/// never nests runtimes. Batches of the same queue may run at the same time on different
/// threads; nothing here assumes otherwise.
///
/// # Shutdown
/// Clones share one listener. Call [`shutdown`](Self::shutdown) after the consumer's own
/// shutdown: it finishes the commits still being retried in the background. Dropping the last
/// clone without it gives those up at once (reported to
/// [`DedupHandler::on_settled`](crate::DedupHandler::on_settled) and counted as `commit_failed`).
pub type DedupConcurrentListener = DedupListener<Concurrent>;

impl DedupListener<Concurrent> {
    /// Processes a batch and answers the status for RocketMQ; the async core of
    /// [`consume_message`](MessageListenerConcurrently::consume_message).
    pub async fn consume(&self, msgs: &[&MessageExt]) -> ConsumeConcurrentlyStatus {
        match self.engine.consume(msgs).await {
            BatchAnswer::Retry => ConsumeConcurrentlyStatus::ReconsumeLater,
            BatchAnswer::Done => ConsumeConcurrentlyStatus::ConsumeSuccess,
        }
    }
}

impl MessageListenerConcurrently for DedupConcurrentListener {
    fn consume_message(
        &self,
        msgs: &[&MessageExt],
        _context: &ConsumeConcurrentlyContext,
    ) -> ClientResult<ConsumeConcurrentlyStatus> {
        Ok(self.engine.runtime().block_on(self.consume(msgs)))
    }
}
