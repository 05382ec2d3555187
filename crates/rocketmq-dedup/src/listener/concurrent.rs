//! [`DedupConcurrentListener`]: the deduplicating `MessageListenerConcurrently`.

use rocketmq_client_rust::{
    ClientResult, ConsumeConcurrentlyContext, ConsumeConcurrentlyStatus,
    MessageListenerConcurrently,
};
use rocketmq_model::common::message::message_ext::MessageExt;

use super::{Concurrent, DedupListener};
use crate::builder::{DedupListenerBuilder, Processing, StoreBacked};
use crate::config::DedupConfig;
use crate::engine::processor::RunOrder;
use crate::engine::BatchAnswer;
use crate::error::ConfigError;
use crate::handler::DedupHandler;

/// A RocketMQ concurrent listener that runs its [`DedupHandler`] at most once per dedup key.
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
/// [`runtime`](DedupListenerBuilder::runtime) gives), so it never blocks a runtime worker and
/// never nests runtimes. Batches of the same queue may run at the same time on different
/// threads; nothing here assumes otherwise.
///
/// # Shutdown
/// Clones share one listener. Call [`shutdown`](Self::shutdown) after the consumer's own
/// shutdown: it finishes the commits still being retried in the background. Dropping the last
/// clone without it gives those up at once (reported to
/// [`DedupHandler::on_settled`] and counted as `commit_failed`).
pub type DedupConcurrentListener = DedupListener<Concurrent>;

impl DedupListener<Concurrent> {
    /// A builder around `handler`.
    pub fn builder<H: DedupHandler>(
        handler: H,
    ) -> DedupListenerBuilder<Concurrent, StoreBacked<H>> {
        DedupListenerBuilder::with_processing(StoreBacked::new(handler), DedupConfig::new())
    }

    /// Processes a batch and answers the status for RocketMQ; the async core of
    /// [`consume_message`](MessageListenerConcurrently::consume_message).
    pub async fn consume(&self, msgs: &[&MessageExt]) -> ConsumeConcurrentlyStatus {
        match self.engine.consume(msgs).await {
            BatchAnswer::Retry => ConsumeConcurrentlyStatus::ReconsumeLater,
            BatchAnswer::Done => ConsumeConcurrentlyStatus::ConsumeSuccess,
        }
    }
}

#[cfg(feature = "sql")]
impl DedupListener<Concurrent> {
    /// A builder for a listener whose handler runs in a transaction of `inbox`, in which the
    /// message's record is written too: exactly-once effects for database writes (see
    /// [`crate::inbox`]).
    pub fn inbox<H, I>(
        handler: H,
        inbox: I,
    ) -> DedupListenerBuilder<Concurrent, crate::inbox::InboxBacked<H, I>>
    where
        I: crate::inbox::Inbox,
        H: crate::inbox::InboxHandler<I::Database>,
    {
        let processing = crate::inbox::InboxBacked { handler, inbox };
        DedupListenerBuilder::with_processing(processing, DedupConfig::new())
    }
}

impl<P: Processing> DedupListenerBuilder<Concurrent, P> {
    /// Checks the configuration and builds the listener.
    pub fn build(self) -> Result<DedupConcurrentListener, ConfigError> {
        Ok(DedupListener::new(self.engine(RunOrder::Independent)?))
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
