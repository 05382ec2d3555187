//! The listeners: thin adapters from rocketmq-client-rust's listener traits to the dedup
//! engine, which decides; each maps the decisions to its client's status.
//!
//! | the engine decides | [`DedupConcurrentListener`] answers | [`DedupOrderlyListener`] answers |
//! |---|---|---|
//! | processed, duplicate | CONSUME_SUCCESS | Success |
//! | any message must be retried | RECONSUME_LATER (retry topic) | SuspendCurrentQueueAMoment |
//!
//! Both are a [`DedupListener`] of a kind ([`Concurrent`] or [`Orderly`]): one engine behind
//! a handle that clones share, with its counters, its configuration and its shutdown.

mod concurrent;
mod orderly;

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

pub use self::concurrent::DedupConcurrentListener;
pub use self::orderly::DedupOrderlyListener;

use crate::builder::{DedupListenerBuilder, Processing, StoreBacked};
use crate::config::DedupConfig;
use crate::engine::Engine;
use crate::error::ConfigError;
use crate::handler::DedupHandler;
#[cfg(feature = "sql")]
use crate::inbox::{Inbox, InboxBacked, InboxHandler};
use crate::shutdown::ShutdownReport;
use crate::stats::DedupStats;

/// A kind of [`DedupListener`]: [`Concurrent`] or [`Orderly`]. Sealed.
// Sealed: its supertrait is the crate's own.
#[allow(private_bounds)]
pub trait ListenerKind: sealed::Kind {}

impl<K: sealed::Kind> ListenerKind for K {}

// Sealed: what a kind sets is the crate's own business.
#[allow(private_interfaces)]
pub(crate) mod sealed {
    use crate::config::DedupConfig;
    use crate::engine::processor::RunOrder;

    /// What a kind of listener sets.
    pub(crate) trait Kind {
        /// The configuration a builder starts from.
        fn config() -> DedupConfig;
        /// How a batch's messages relate.
        fn order() -> RunOrder;
    }

    impl Kind for super::Concurrent {
        fn config() -> DedupConfig {
            DedupConfig::new()
        }

        fn order() -> RunOrder {
            RunOrder::Independent
        }
    }

    impl Kind for super::Orderly {
        fn config() -> DedupConfig {
            DedupConfig::orderly()
        }

        fn order() -> RunOrder {
            RunOrder::InOrder
        }
    }
}

/// The kind of a [`DedupListener`] that implements `MessageListenerConcurrently`:
/// [`DedupConcurrentListener`].
#[derive(Debug, Clone, Copy)]
pub enum Concurrent {}

/// The kind of a [`DedupListener`] that implements `MessageListenerOrderly`:
/// [`DedupOrderlyListener`].
#[derive(Debug, Clone, Copy)]
pub enum Orderly {}

/// A deduplicating listener of kind `K`; use it by its names, [`DedupConcurrentListener`]
/// and [`DedupOrderlyListener`]. Clones share one listener.
pub struct DedupListener<K> {
    engine: Arc<Engine>,
    kind: PhantomData<fn() -> K>,
}

impl<K> Clone for DedupListener<K> {
    fn clone(&self) -> Self {
        DedupListener {
            engine: self.engine.clone(),
            kind: PhantomData,
        }
    }
}

impl<K> fmt::Debug for DedupListener<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DedupListener")
            .field("engine", &self.engine)
            .finish()
    }
}

impl<K: ListenerKind> DedupListener<K> {
    /// A builder around `handler`; its records go to the store it is given.
    pub fn builder<H: DedupHandler>(handler: H) -> DedupListenerBuilder<K, StoreBacked<H>> {
        DedupListenerBuilder::with_processing(StoreBacked::new(handler), K::config())
    }

    /// A builder for a listener whose handler runs in a transaction of `inbox`, in which the
    /// message's record is written too: exactly-once effects for database writes (see
    /// [`crate::inbox`]).
    #[cfg(feature = "sql")]
    pub fn inbox<H, I>(handler: H, inbox: I) -> DedupListenerBuilder<K, InboxBacked<H, I>>
    where
        I: Inbox,
        H: InboxHandler<I::Database>,
    {
        DedupListenerBuilder::with_processing(InboxBacked { handler, inbox }, K::config())
    }
}

impl<K: ListenerKind, P: Processing> DedupListenerBuilder<K, P> {
    /// Checks the configuration and builds the listener.
    pub fn build(self) -> Result<DedupListener<K>, ConfigError> {
        Ok(DedupListener::new(self.engine(K::order())?))
    }
}

impl<K> DedupListener<K> {
    fn new(engine: Engine) -> Self {
        DedupListener {
            engine: Arc::new(engine),
            kind: PhantomData,
        }
    }

    /// The listener's counters.
    pub fn stats(&self) -> &Arc<DedupStats> {
        self.engine.stats()
    }

    /// The configuration.
    pub(crate) fn config(&self) -> &DedupConfig {
        self.engine.config()
    }

    /// Finishes the listener's background work (commits being retried) within `timeout`;
    /// what cannot be finished is given up and reported.
    pub async fn shutdown(&self, timeout: Duration) -> ShutdownReport {
        self.engine.shutdown(timeout).await
    }
}
