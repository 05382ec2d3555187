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
pub use crate::engine::DECISION_TARGET;

use crate::config::DedupConfig;
use crate::engine::Engine;
use crate::shutdown::ShutdownReport;
use crate::stats::DedupStats;

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

impl<K> DedupListener<K> {
    pub(crate) fn new(engine: Engine) -> Self {
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
    pub fn config(&self) -> &DedupConfig {
        self.engine.config()
    }

    /// Finishes the listener's background work (commits being retried) within `timeout`;
    /// what cannot be finished is given up and reported.
    pub async fn shutdown(&self, timeout: Duration) -> ShutdownReport {
        self.engine.shutdown(timeout).await
    }
}
