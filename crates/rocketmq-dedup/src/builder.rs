//! The settings of a dedup listener ([`DedupListenerBuilder`]).

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{DedupConfig, KeyFallback, StoreErrorPolicy};
use crate::engine::processor::RunOrder;
use crate::engine::Engine;
use crate::error::ConfigError;
use crate::handler::DedupHandler;
use crate::lease::LeaseProcessor;
use crate::listener_runtime::ListenerRuntime;
use crate::stats::DedupStats;
use crate::store::DedupStore;

/// Builds a [`DedupConcurrentListener`](crate::DedupConcurrentListener) or a
/// [`DedupOrderlyListener`](crate::DedupOrderlyListener): the settings of a dedup listener,
/// one method each (with its default), checked when the listener is built.
///
/// One builder serves both listeners; its first type parameter is the kind of listener
/// `build` makes ([`Concurrent`](crate::listener::Concurrent) or
/// [`Orderly`](crate::listener::Orderly)), its second how the handler's runs are
/// recorded ([`Processing`]): [`StoreBacked`], claims in a [`DedupStore`], or, with feature
/// `mysql` or `postgres`, [`InboxBacked`](crate::inbox::InboxBacked), one database
/// transaction per message. A user never names them: `DedupConcurrentListener::builder`
/// and `DedupConcurrentListener::inbox` start the builder.
pub struct DedupListenerBuilder<L, P> {
    processing: P,
    config: DedupConfig,
    runtime: Option<tokio::runtime::Handle>,
    listener: PhantomData<fn() -> L>,
}

/// How a listener records its handler's runs: [`StoreBacked`] or
/// [`InboxBacked`](crate::inbox::InboxBacked). Sealed: these are the two.
// Sealed: its supertrait is the crate's own.
#[allow(private_bounds)]
pub trait Processing: sealed::MakeProcessor {}

impl<P: sealed::MakeProcessor> Processing for P {}

#[allow(private_interfaces)]
pub(crate) mod sealed {
    use std::sync::Arc;

    use crate::config::DedupConfig;
    use crate::engine::processor::Processor;
    use crate::error::ConfigError;
    use crate::stats::DedupStats;

    /// A processor made for a listener (opaque outside the crate).
    pub(crate) struct MadeProcessor(pub(crate) Box<dyn Processor>);

    impl std::fmt::Debug for MadeProcessor {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("MadeProcessor").finish_non_exhaustive()
        }
    }

    /// What [`Processing`](super::Processing) does: make the listener's processor.
    pub(crate) trait MakeProcessor {
        /// The processor, for a configuration already checked.
        fn make(
            self,
            config: &DedupConfig,
            stats: Arc<DedupStats>,
            runtime: tokio::runtime::Handle,
        ) -> Result<MadeProcessor, ConfigError>;
    }
}

/// A listener whose handler runs are claimed, committed and released in a [`DedupStore`]
/// (set with [`store`](DedupListenerBuilder::store); required).
pub struct StoreBacked<H> {
    handler: H,
    store: Option<Arc<dyn DedupStore>>,
}

impl<H> std::fmt::Debug for StoreBacked<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreBacked")
            .field("store", &self.store.as_ref().map(|s| s.kind()))
            .finish_non_exhaustive()
    }
}

impl<H: DedupHandler> StoreBacked<H> {
    pub(crate) fn new(handler: H) -> Self {
        StoreBacked {
            handler,
            store: None,
        }
    }
}

impl<H: DedupHandler> sealed::MakeProcessor for StoreBacked<H> {
    fn make(
        self,
        config: &DedupConfig,
        stats: Arc<DedupStats>,
        runtime: tokio::runtime::Handle,
    ) -> Result<sealed::MadeProcessor, ConfigError> {
        let store = self.store.ok_or(ConfigError::MissingStore)?;
        let processor = LeaseProcessor::new(self.handler, store, config, stats, runtime);
        Ok(sealed::MadeProcessor(Box::new(processor)))
    }
}

impl<L, P: std::fmt::Debug> std::fmt::Debug for DedupListenerBuilder<L, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DedupListenerBuilder")
            .field("processing", &self.processing)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<L, H: DedupHandler> DedupListenerBuilder<L, StoreBacked<H>> {
    /// The dedup store: required, there is no default. [`MemoryStore`](crate::store::MemoryStore)
    /// deduplicates within this process; [`RedisStore`](crate::store::RedisStore) across every
    /// consumer of the group.
    pub fn store(self, store: impl DedupStore) -> Self {
        self.shared_store(Arc::new(store))
    }

    /// The dedup store, shared with other listeners.
    pub fn shared_store(mut self, store: Arc<dyn DedupStore>) -> Self {
        self.processing.store = Some(store);
        self
    }
}

impl<L, P: Processing> DedupListenerBuilder<L, P> {
    /// Checks the configuration, settles the runtime and makes the engine, running tasks in
    /// `order`.
    pub(crate) fn engine(self, order: RunOrder) -> Result<Engine, ConfigError> {
        self.config.validate()?;
        let runtime = match self.runtime {
            Some(handle) => ListenerRuntime::Borrowed(handle),
            None => ListenerRuntime::current_or_new()
                .map_err(|e| ConfigError::Runtime(e.to_string()))?,
        };
        let stats = Arc::new(DedupStats::default());
        let handle = runtime.handle().clone();
        let processor = self.processing.make(&self.config, stats.clone(), handle)?;
        Ok(Engine::new(processor.0, self.config, stats, order, runtime))
    }
}

impl<L, P> DedupListenerBuilder<L, P> {
    /// A builder for `processing`, with the settings in `config`.
    pub(crate) fn with_processing(processing: P, config: DedupConfig) -> Self {
        DedupListenerBuilder {
            processing,
            config,
            runtime: None,
            listener: PhantomData,
        }
    }

    pub(crate) fn config_mut(&mut self) -> &mut DedupConfig {
        &mut self.config
    }

    /// The namespace of the record keys: required; use the consumer group (or an application
    /// name shared by the consumers that must not process a key twice).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.config.namespace = namespace.into();
        self
    }

    /// The first part of every record key (default [`crate::record_key::DEFAULT_PREFIX`]).
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.config.prefix = prefix.into();
        self
    }

    /// What to do when a key cannot be derived (default [`KeyFallback::UniqueId`]).
    pub fn key_fallback(mut self, fallback: KeyFallback) -> Self {
        self.config.key_fallback = fallback;
        self
    }

    /// TTL of a claim that is not renewed (default 30 s; 100 ms ..= 365 days). A crashed consumer's
    /// claims block their keys this long.
    pub fn processing_ttl(mut self, ttl: Duration) -> Self {
        self.config.processing_ttl = ttl;
        self
    }

    /// TTL of a CONSUMED record: how long duplicates are recognised (default
    /// 24 h; from the processing TTL up to 365 days).
    pub fn record_ttl(mut self, ttl: Duration) -> Self {
        self.config.record_ttl = ttl;
        self
    }

    /// How often a running handler's claims are renewed (default: a third of the processing
    /// TTL). Must be shorter than the processing TTL.
    pub fn renew_interval(mut self, interval: Duration) -> Self {
        self.config.renew_interval = Some(interval);
        self
    }

    /// Timeout of each store call (default 3 s).
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.config.store_timeout = timeout;
        self
    }

    /// What to do when the store cannot answer (default [`StoreErrorPolicy::FailClosed`]).
    pub fn store_error_policy(mut self, policy: StoreErrorPolicy) -> Self {
        self.config.store_error_policy = policy;
        self
    }

    /// How many of a batch's handlers run at once (default 1: in order, one by one). The
    /// orderly listener always runs them one by one.
    pub fn handler_concurrency(mut self, n: usize) -> Self {
        self.config.handler_concurrency = n;
        self
    }

    /// The consumer group's max reconsume times, to warn before a deferred message would go
    /// to the dead-letter queue (default 16, RocketMQ's, for the concurrent listener;
    /// unlimited for the orderly one, as RocketMQ's orderly consumers).
    pub fn max_reconsume_times(mut self, n: i32) -> Self {
        self.config.max_reconsume_times = n;
        self
    }

    /// How long a batch waits for a key that another batch of this listener is processing
    /// (default 5 s; zero: never wait). Without the wait,
    /// or past it, the copy is deferred, and with it its whole batch.
    pub fn in_flight_wait(mut self, wait: Duration) -> Self {
        self.config.in_flight_wait = wait;
        self
    }

    /// How long a commit that failed after a successful handler is retried in the background
    /// (default 60 s; zero: not retried). The claim is
    /// the listener's by its token, so a late commit is still correct; committing before the
    /// claim expires keeps a redelivered copy from running again.
    pub fn commit_retry_window(mut self, window: Duration) -> Self {
        self.config.commit_retry_window = window;
        self
    }

    /// Acks a batch as soon as its handlers succeeded, and writes its commit in the background
    /// (tracked, drained by `shutdown`) instead of on the consume thread: one store round trip
    /// less on the ack path. The commit goes to the store detached
    /// ([`DedupStore::commit_detached`]), so a store that
    /// can finish it without a task of its own does (the memory and Redis stores). Default
    /// on; `false` answers only once the commit is written.
    ///
    /// The claim is the listener's by its token, so a late commit is correct, and a copy in
    /// this consumer is a duplicate from the ack on (through the near-cache; with
    /// `near_cache(0)` it waits for the commit to land instead). The price: a consumer
    /// that dies after the ack and before the commit lands leaves its claims to expire after
    /// the processing TTL (a copy that arrives after that runs again, as a copy of a message
    /// whose consumer died before its commit always could). BENCHMARKS.md measures what it
    /// gives: its `redis-sync` listener is the Redis store with this `false`. No effect on a transactional inbox,
    /// whose commit is the handler's transaction.
    pub fn ack_before_commit(mut self, yes: bool) -> Self {
        self.config.ack_before_commit = yes;
        self
    }

    /// How many keys this listener committed it remembers, so that a copy of one is answered
    /// without a store round trip (default 10 000; 0:
    /// none). With [`Self::ack_before_commit`] a key counts from its ack on, while its commit
    /// is still on its way. An entry lives until the record's TTL counted from when its commit
    /// was sent (or its ack), so never longer than the store's record; a record an operator deletes
    /// (`rocketmq-dedup forget`) still counts in this process until then. Not used by a
    /// transactional inbox.
    pub fn near_cache(mut self, capacity: usize) -> Self {
        self.config.near_cache_capacity = capacity;
        self
    }

    /// The Tokio runtime that drives store calls and handlers (default: the runtime the
    /// builder runs in, else a one-thread runtime of the listener's own).
    pub fn runtime(mut self, handle: tokio::runtime::Handle) -> Self {
        self.runtime = Some(handle);
        self
    }
}
