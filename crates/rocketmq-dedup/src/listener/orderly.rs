//! [`DedupOrderlyListener`]: the deduplicating `MessageListenerOrderly`.

use std::time::Duration;

use rocketmq_client_rust::{
    ClientResult, ConsumeOrderlyContext, ConsumeOrderlyStatus, MessageListenerOrderly,
};
use rocketmq_model::common::message::message_ext::MessageExt;

use super::{DedupListener, Orderly};
use crate::builder::DedupListenerBuilder;
use crate::engine::BatchAnswer;

/// A RocketMQ orderly listener that runs its [`DedupHandler`](crate::DedupHandler) at most once per dedup key and
/// never out of order.
///
/// Order within a queue is the promise, and a retry-topic trip would break it, so every "not
/// now" suspends the queue (the client redelivers the same messages, in order, after the
/// [suspend time](DedupListenerBuilder::suspend_time)), and every "done" is `Success`:
///
/// | claim finds | handler | answer |
/// |---|---|---|
/// | absent: claimed | runs; `Ok` → commit, `Err`/panic → release | Success / SuspendCurrentQueueAMoment |
/// | CONSUMING by another owner | not run | SuspendCurrentQueueAMoment |
/// | CONSUMED | not run | Success |
/// | store error | not run ([`FailClosed`](crate::StoreErrorPolicy::FailClosed)) or run without dedup (`FailOpen`) | SuspendCurrentQueueAMoment / Success |
///
/// A batch runs one message at a time, in order; the first that cannot complete stops the
/// rest (they are not run, and their claims are released), and the whole batch comes back.
/// Its messages already committed come back as CONSUMED and are skipped.
///
/// # Dead letters
/// RocketMQ's orderly consumer retries a suspended batch in place without limit unless the
/// consumer's `max_reconsume_times` is set; past it, the client sends the message to the retry
/// topic (and from there, at its limit, to `%DLQ%group`): order is then given up for that
/// message. Set the same number with
/// [`max_reconsume_times`](DedupListenerBuilder::max_reconsume_times) to be warned first.
///
/// ```no_run
/// use rocketmq_dedup::{handler_fn, DedupOrderlyListener, store::MemoryStore};
/// use rocketmq_model::common::message::message_ext::MessageExt;
///
/// let listener = DedupOrderlyListener::builder(handler_fn(|_msg: &MessageExt| Ok(())))
///     .namespace("order-consumer-group")
///     .store(MemoryStore::new())
///     .suspend_time(std::time::Duration::from_millis(500))
///     .build()?;
/// // consumer.register_message_listener_orderly(listener.clone());
/// # Ok::<(), rocketmq_dedup::ConfigError>(())
/// ```
pub type DedupOrderlyListener = DedupListener<Orderly>;

impl DedupListener<Orderly> {
    /// Processes a batch and answers the status for RocketMQ; the async core of
    /// [`consume_message`](MessageListenerOrderly::consume_message), which also sets the
    /// suspend time on the context when the queue is suspended.
    pub async fn consume(&self, msgs: &[&MessageExt]) -> ConsumeOrderlyStatus {
        match self.engine.consume(msgs).await {
            BatchAnswer::Retry => ConsumeOrderlyStatus::SuspendCurrentQueueAMoment,
            BatchAnswer::Done => ConsumeOrderlyStatus::Success,
        }
    }
}

impl<P> DedupListenerBuilder<Orderly, P> {
    /// How long the queue is suspended when its next message cannot run now: another
    /// consumer processes its key, its handler failed, or the store is down (default
    /// 1 s; 10 ms ..= 30 s, the range RocketMQ accepts).
    pub fn suspend_time(mut self, time: Duration) -> Self {
        self.config_mut().suspend_time = time;
        self
    }
}

impl MessageListenerOrderly for DedupOrderlyListener {
    fn consume_message(
        &self,
        msgs: &[&MessageExt],
        context: &mut ConsumeOrderlyContext,
    ) -> ClientResult<ConsumeOrderlyStatus> {
        let status = self.engine.runtime().block_on(self.consume(msgs));
        if status == ConsumeOrderlyStatus::SuspendCurrentQueueAMoment {
            let millis = self.config().suspend_time.as_millis();
            context.set_suspend_current_queue_time_millis(millis as i64);
        }
        Ok(status)
    }
}
