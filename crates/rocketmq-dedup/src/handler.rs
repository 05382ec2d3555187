//! The user's message handler: the [`DedupHandler`] trait, [`handler_fn`] for closures and
//! [`WithKey`] for a handler keyed by a [`KeyStrategy`].

use std::future::Future;
use std::marker::PhantomData;

use rocketmq_model::common::message::message_ext::MessageExt;

use crate::error::{HandlerError, KeyError, StoreError};
use crate::key::{self, DedupKey, KeyStrategy};
use crate::record_key::RecordKey;
use crate::store::CommitOutcome;

/// Processes messages; the dedup listeners run it at most once per dedup key (until the
/// record TTL ends).
///
/// This is the Rust form of the Java library's `doHandleMsg` / `dedupMessageKey` pair:
/// implement [`handle`](DedupHandler::handle), and override
/// [`dedup_key`](DedupHandler::dedup_key) to deduplicate by a business key (or wrap the
/// handler with [`with_key`](DedupHandler::with_key)). The key has one source: the handler.
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
/// An `Err` or a panic releases the claim and lets RocketMQ redeliver the message (through the
/// retry topic, or by suspending the queue in the orderly listener). A panic is caught and
/// logged; it never reaches the consumer's threads.
///
/// # Cancellation
/// The future runs to completion (RocketMQ's own consume timeout does not cancel it); the
/// claim is renewed while it runs.
pub trait DedupHandler: Send + Sync + 'static {
    /// Processes one message.
    fn handle(&self, msg: &MessageExt) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// The message's dedup key. Default: the client unique id (`UNIQ_KEY`), else the message
    /// id; see [`KeyStrategy`] for the others. An error applies the listener's
    /// [`KeyFallback`](crate::KeyFallback).
    fn dedup_key(&self, msg: &MessageExt) -> Result<DedupKey, KeyError> {
        key::unique_id(msg)
    }

    /// Called once the store has settled a key whose handler succeeded: `Ok` with the
    /// commit's outcome, or `Err` when the commit could not be written within the listener's
    /// commit retry window (the claim then expires after the processing TTL). A commit made
    /// after the ack ([`ack_before_commit`](crate::DedupListenerBuilder::ack_before_commit)),
    /// or one that fails at first and is retried in the background, settles after the message
    /// was acked: this then runs on a runtime thread, or on the consume thread whose store
    /// call carried the commit (the Redis store's commit linger), so keep it short and never
    /// block in it. Default: nothing.
    fn on_settled(&self, key: &RecordKey, result: Result<CommitOutcome, &StoreError>) {
        let _ = (key, result);
    }

    /// This handler, keyed by `strategy` instead of its own
    /// [`dedup_key`](DedupHandler::dedup_key).
    ///
    /// ```
    /// use rocketmq_dedup::{handler_fn, DedupHandler, KeyStrategy};
    /// use rocketmq_model::common::message::message_ext::MessageExt;
    ///
    /// let handler = handler_fn(|_msg: &MessageExt| Ok(()))
    ///     .with_key(KeyStrategy::json_pointer("/orderId"));
    /// ```
    fn with_key(self, strategy: KeyStrategy) -> WithKey<Self>
    where
        Self: Sized,
    {
        WithKey {
            handler: self,
            strategy,
        }
    }
}

/// A handler keyed by a [`KeyStrategy`]; see [`DedupHandler::with_key`].
#[derive(Debug, Clone)]
pub struct WithKey<H> {
    handler: H,
    strategy: KeyStrategy,
}

impl<H> WithKey<H> {
    /// The wrapped handler.
    pub fn get_ref(&self) -> &H {
        &self.handler
    }

    /// The key strategy.
    pub fn strategy(&self) -> &KeyStrategy {
        &self.strategy
    }

    /// The wrapped handler, unwrapped.
    pub fn into_inner(self) -> H {
        self.handler
    }
}

impl<H: DedupHandler> DedupHandler for WithKey<H> {
    fn handle(&self, msg: &MessageExt) -> impl Future<Output = Result<(), HandlerError>> + Send {
        self.handler.handle(msg)
    }

    fn dedup_key(&self, msg: &MessageExt) -> Result<DedupKey, KeyError> {
        self.strategy.derive(msg)
    }

    fn on_settled(&self, key: &RecordKey, result: Result<CommitOutcome, &StoreError>) {
        self.handler.on_settled(key, result)
    }
}

/// A [`DedupHandler`] from a closure; see [`handler_fn`].
pub struct HandlerFn<F, Kind> {
    f: F,
    kind: PhantomData<fn() -> Kind>,
}

impl<F: Clone, Kind> Clone for HandlerFn<F, Kind> {
    fn clone(&self) -> Self {
        HandlerFn {
            f: self.f.clone(),
            kind: PhantomData,
        }
    }
}

impl<F, Kind> std::fmt::Debug for HandlerFn<F, Kind> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerFn").finish_non_exhaustive()
    }
}

/// A handler from a closure, for small consumers and tests: a plain closure, or an async one.
/// Name the argument's type (`&MessageExt`) so that the closure takes any message.
///
/// ```
/// use rocketmq_dedup::handler_fn;
/// use rocketmq_model::common::message::message_ext::MessageExt;
///
/// let sync = handler_fn(|msg: &MessageExt| {
///     println!("{} bytes", msg.body_slice().len());
///     Ok(())
/// });
/// let asynchronous = handler_fn(async |msg: &MessageExt| {
///     tokio::time::sleep(std::time::Duration::from_millis(1)).await;
///     println!("{} bytes", msg.body_slice().len());
///     Ok(())
/// });
/// ```
pub fn handler_fn<Kind, F>(f: F) -> HandlerFn<F, Kind>
where
    F: for<'m> MessageFn<'m, Kind>,
{
    HandlerFn {
        f,
        kind: PhantomData,
    }
}

/// A closure that [`handler_fn`] accepts: `Fn(&MessageExt) -> Result<(), HandlerError>`, or
/// one that returns a `Send` future of that result (an async closure). `Kind` tells the two
/// apart ([`Blocking`] or [`Async`]); it is inferred.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a message handler closure",
    note = "a handler closure takes `&MessageExt` and returns `Result<(), HandlerError>` or a `Send` future of it; name the argument's type: `|msg: &MessageExt| …` or `async |msg: &MessageExt| …`"
)]
pub trait MessageFn<'m, Kind>: Send + Sync + 'static {
    /// The future of one call.
    type Future: Future<Output = Result<(), HandlerError>> + Send + 'm;
    /// Calls the closure.
    fn call(&self, msg: &'m MessageExt) -> Self::Future;
}

/// The [`MessageFn`] kind of a closure that returns its result at once.
#[derive(Debug)]
pub enum Blocking {}

/// The [`MessageFn`] kind of a closure that returns a future.
#[derive(Debug)]
pub enum Async {}

impl<'m, F> MessageFn<'m, Blocking> for F
where
    F: Fn(&MessageExt) -> Result<(), HandlerError> + Send + Sync + 'static,
{
    type Future = std::future::Ready<Result<(), HandlerError>>;

    fn call(&self, msg: &'m MessageExt) -> Self::Future {
        std::future::ready(self(msg))
    }
}

impl<'m, F, Fut> MessageFn<'m, Async> for F
where
    F: Fn(&'m MessageExt) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'm,
{
    type Future = Fut;

    fn call(&self, msg: &'m MessageExt) -> Fut {
        self(msg)
    }
}

impl<F, Kind> DedupHandler for HandlerFn<F, Kind>
where
    F: for<'m> MessageFn<'m, Kind>,
    Kind: 'static,
{
    fn handle(&self, msg: &MessageExt) -> impl Future<Output = Result<(), HandlerError>> + Send {
        self.f.call(msg)
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
