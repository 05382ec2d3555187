//! The user's message handler.

use std::future::Future;

use rocketmq_model::common::message::message_ext::MessageExt;

use crate::error::{HandlerError, KeyError, StoreError};
use crate::key::{self, DedupKey};
use crate::record_key::RecordKey;
use crate::store::CommitOutcome;

/// Processes messages; [`DedupConcurrentListener`](crate::DedupConcurrentListener) runs it at
/// most once per dedup key (until the record TTL ends).
///
/// This is the Rust form of the Java library's `doHandleMsg` / `dedupMessageKey` pair:
/// implement [`handle`](DedupHandler::handle), and override
/// [`dedup_key`](DedupHandler::dedup_key) to deduplicate by a business key.
///
/// ```
/// use rocketmq_dedup::{DedupHandler, DedupKey, HandlerError, KeyError, KeyStrategy};
/// use rocketmq_model::common::message::message_ext::MessageExt;
///
/// struct PaymentHandler;
///
/// impl DedupHandler for PaymentHandler {
///     async fn handle(&self, msg: &MessageExt) -> Result<(), HandlerError> {
///         let body = std::str::from_utf8(msg.body_slice())?;
///         println!("charging {body}");
///         Ok(())
///     }
///
///     fn dedup_key(&self, msg: &MessageExt) -> Result<DedupKey, KeyError> {
///         KeyStrategy::json_pointer("/orderId").derive(msg)
///     }
/// }
/// ```
///
/// # Errors and panics
/// An `Err` or a panic releases the claim and lets RocketMQ redeliver the message through
/// the retry topic. A panic is caught and logged; it never reaches the consumer's threads.
///
/// # Cancellation
/// The future runs to completion (RocketMQ's own consume timeout does not cancel it); the
/// claim is renewed while it runs.
pub trait DedupHandler: Send + Sync + 'static {
    /// Processes one message.
    fn handle(&self, msg: &MessageExt) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// The message's dedup key. Default: the client unique id (`UNIQ_KEY`), else the message
    /// id; see [`KeyStrategy`](crate::KeyStrategy) for the others. An error applies the
    /// listener's [`KeyFallback`](crate::KeyFallback).
    fn dedup_key(&self, msg: &MessageExt) -> Result<DedupKey, KeyError> {
        key::unique_id(msg)
    }

    /// Called once the store has settled a key whose handler succeeded: `Ok` with the
    /// commit's outcome, or `Err` when the commit could not be written within the listener's
    /// commit retry window (the claim then expires after the processing TTL). A commit that
    /// fails at first is retried in the background, so this may run after the message was
    /// acked, on a runtime thread. Default: nothing.
    fn on_settled(&self, key: &RecordKey, result: Result<CommitOutcome, &StoreError>) {
        let _ = (key, result);
    }
}

/// A [`DedupHandler`] from a synchronous closure; see [`handler_fn`].
#[derive(Debug, Clone)]
pub struct HandlerFn<F>(F);

/// A handler from a closure, for small consumers and tests.
///
/// ```
/// let handler = rocketmq_dedup::handler_fn(|msg| {
///     println!("{} bytes", msg.body_slice().len());
///     Ok(())
/// });
/// ```
pub fn handler_fn<F>(f: F) -> HandlerFn<F>
where
    F: Fn(&MessageExt) -> Result<(), HandlerError> + Send + Sync + 'static,
{
    HandlerFn(f)
}

impl<F> DedupHandler for HandlerFn<F>
where
    F: Fn(&MessageExt) -> Result<(), HandlerError> + Send + Sync + 'static,
{
    async fn handle(&self, msg: &MessageExt) -> Result<(), HandlerError> {
        (self.0)(msg)
    }
}

/// A shared handler handles as the handler it shares.
impl<H: DedupHandler> DedupHandler for std::sync::Arc<H> {
    fn handle(&self, msg: &MessageExt) -> impl Future<Output = Result<(), HandlerError>> + Send {
        (**self).handle(msg)
    }

    fn dedup_key(&self, msg: &MessageExt) -> Result<DedupKey, KeyError> {
        (**self).dedup_key(msg)
    }

    fn on_settled(&self, key: &RecordKey, result: Result<CommitOutcome, &StoreError>) {
        (**self).on_settled(key, result)
    }
}
