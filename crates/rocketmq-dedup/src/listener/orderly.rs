//! [`DedupOrderlyListener`]: the deduplicating `MessageListenerOrderly`.

use std::sync::Arc;
use std::time::Duration;

use rocketmq_client_rust::{
    ClientResult, ConsumeOrderlyContext, ConsumeOrderlyStatus, MessageListenerOrderly,
};
use rocketmq_model::common::message::message_ext::MessageExt;

use super::Core;
use crate::builder::{DedupListenerBuilder, Orderly, StoreBacked};
use crate::config::DedupConfig;
use crate::engine::task::RunOrder;
use crate::engine::Engine;
use crate::error::ConfigError;
use crate::handler::DedupHandler;
use crate::shutdown::ShutdownReport;
use crate::stats::DedupStats;

/// A RocketMQ orderly listener that runs its [`DedupHandler`] at most once per dedup key and
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
#[derive(Debug, Clone)]
pub struct DedupOrderlyListener {
    core: Core,
}

impl DedupOrderlyListener {
    /// A builder around `handler`.
    pub fn builder<H: DedupHandler>(handler: H) -> DedupListenerBuilder<Orderly, StoreBacked<H>> {
        DedupListenerBuilder::with_store_backed(handler, DedupConfig::orderly())
    }

    fn new(engine: Engine) -> Self {
        DedupOrderlyListener {
            core: Core {
                engine: Arc::new(engine),
            },
        }
    }

    /// The listener's counters.
    pub fn stats(&self) -> &Arc<DedupStats> {
        self.core.stats()
    }

    /// The configuration.
    pub fn config(&self) -> &DedupConfig {
        self.core.config()
    }

    /// Processes a batch and answers the status for RocketMQ; the async core of
    /// [`consume_message`](MessageListenerOrderly::consume_message), which also sets the
    /// suspend time on the context when the queue is suspended.
    pub async fn consume(&self, msgs: &[&MessageExt]) -> ConsumeOrderlyStatus {
        match self.core.engine.consume(msgs).await.retry {
            true => ConsumeOrderlyStatus::SuspendCurrentQueueAMoment,
            false => ConsumeOrderlyStatus::Success,
        }
    }

    /// Finishes the listener's background work (commits being retried) within `timeout`;
    /// what cannot be finished is given up and reported.
    pub async fn shutdown(&self, timeout: Duration) -> ShutdownReport {
        self.core.shutdown(timeout).await
    }
}

impl<P> DedupListenerBuilder<Orderly, P> {
    /// How long the queue is suspended when its next message cannot run now: another
    /// consumer processes its key, its handler failed, or the store is down (default
    /// [`DedupConfig::DEFAULT_SUSPEND_TIME`]; 10 ms ..= 30 s, the range RocketMQ accepts).
    pub fn suspend_time(mut self, time: Duration) -> Self {
        self.config_mut().suspend_time = time;
        self
    }
}

impl<H: DedupHandler> DedupListenerBuilder<Orderly, StoreBacked<H>> {
    /// Checks the configuration and builds the listener.
    pub fn build(self) -> Result<DedupOrderlyListener, ConfigError> {
        Ok(DedupOrderlyListener::new(self.engine(RunOrder::InOrder)?))
    }
}

#[cfg(feature = "sql")]
impl DedupOrderlyListener {
    /// A builder for a listener whose handler runs in a transaction of `inbox`, in which the
    /// message's record is written too: exactly-once effects for database writes (see
    /// [`crate::inbox`]).
    pub fn inbox<H, I>(
        handler: H,
        inbox: I,
    ) -> DedupListenerBuilder<Orderly, crate::inbox::InboxBacked<H, I>>
    where
        I: crate::inbox::Inbox,
        H: crate::inbox::InboxHandler<I::Database>,
    {
        let processing = crate::inbox::InboxBacked { handler, inbox };
        DedupListenerBuilder::with_processing(processing, DedupConfig::orderly())
    }
}

#[cfg(feature = "sql")]
impl<H, I> DedupListenerBuilder<Orderly, crate::inbox::InboxBacked<H, I>>
where
    I: crate::inbox::Inbox,
    H: crate::inbox::InboxHandler<I::Database>,
{
    /// Checks the configuration and builds the listener.
    pub fn build(self) -> Result<DedupOrderlyListener, ConfigError> {
        Ok(DedupOrderlyListener::new(self.engine(RunOrder::InOrder)?))
    }
}

impl MessageListenerOrderly for DedupOrderlyListener {
    fn consume_message(
        &self,
        msgs: &[&MessageExt],
        context: &mut ConsumeOrderlyContext,
    ) -> ClientResult<ConsumeOrderlyStatus> {
        let status = self.core.engine.runtime().block_on(self.consume(msgs));
        if status == ConsumeOrderlyStatus::SuspendCurrentQueueAMoment {
            let millis = self.config().suspend_time.as_millis();
            context.set_suspend_current_queue_time_millis(millis as i64);
        }
        Ok(status)
    }
}
