//! [`DedupConcurrentListener`]: the deduplicating `MessageListenerConcurrently`.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use rocketmq_client_rust::{
    ClientResult, ConsumeConcurrentlyContext, ConsumeConcurrentlyStatus,
    MessageListenerConcurrently,
};
use rocketmq_model::common::message::message_ext::MessageExt;
use tracing::{debug, error, info_span, warn, Instrument};

use crate::config::{DedupConfig, KeyFallback, StoreErrorPolicy};
use crate::error::{ConfigError, KeyError, StoreError, StoreOperation};
use crate::handler::DedupHandler;
use crate::key::{self, KeyStrategy};
use crate::record_key::{KeyLayout, RecordKey};
use crate::runtime::ListenerRuntime;
use crate::stats::{Decision, DedupStats, Event};
use crate::store::{ClaimOutcome, CommitOutcome, DedupStore, MemoryStore, OwnerToken};

/// The tracing target of the one event per message that states its [`Decision`]
/// (at DEBUG): `RUST_LOG=rocketmq_dedup::decision=debug` prints one line per decision.
pub const DECISION_TARGET: &str = "rocketmq_dedup::decision";

/// A RocketMQ concurrent listener that runs its [`DedupHandler`] at most once per dedup key.
///
/// For each batch it derives every message's dedup key, claims all keys in one store call,
/// runs the handler for the claimed ones (renewing the claims while it runs), then commits the
/// successes and releases the failures in one call each:
///
/// | claim finds | handler | message |
/// |---|---|---|
/// | absent: claimed | runs; `Ok` → commit, `Err`/panic → release | ack / RECONSUME_LATER |
/// | CONSUMING by another owner | not run | RECONSUME_LATER (back through `%RETRY%group`) |
/// | CONSUMED | not run | ack |
/// | store error | not run ([`StoreErrorPolicy::FailClosed`]) or run without dedup (`FailOpen`) | RECONSUME_LATER / ack |
///
/// rocketmq-client-rust 1.0.0 gives the listener no way to ack part of a batch, so a batch is
/// all-or-nothing: when any message must be retried, the whole batch is RECONSUME_LATER. That
/// is safe: the messages already committed come back as CONSUMED and are acked without running
/// the handler. Copies of one key within a batch run the handler once.
///
/// ```no_run
/// use rocketmq_dedup::{handler_fn, DedupConcurrentListener, store::MemoryStore};
///
/// let listener = DedupConcurrentListener::builder(handler_fn(|_msg| Ok(())))
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
/// async work there with the Tokio runtime it was built on (or [`runtime`] gives), so it never
/// blocks a runtime worker and never nests runtimes. Batches of the same queue may run at the
/// same time on different threads; nothing here assumes otherwise.
///
/// [`runtime`]: DedupListenerBuilder::runtime
pub struct DedupConcurrentListener<H> {
    inner: Arc<Inner<H>>,
}

struct Inner<H> {
    handler: H,
    store: Arc<dyn DedupStore>,
    config: DedupConfig,
    runtime: ListenerRuntime,
    stats: Arc<DedupStats>,
    /// Claims this listener holds while their handlers run, with a signal sent when they are
    /// settled: a copy of the key in another batch waits for it instead of a retry-topic trip.
    local: std::sync::Mutex<HashMap<RecordKey, (OwnerToken, tokio::sync::watch::Sender<bool>)>>,
}

impl<H> Clone for DedupConcurrentListener<H> {
    fn clone(&self) -> Self {
        DedupConcurrentListener {
            inner: self.inner.clone(),
        }
    }
}

impl<H> fmt::Debug for DedupConcurrentListener<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DedupConcurrentListener")
            .field("store", &self.inner.store.kind())
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Builds a [`DedupConcurrentListener`]; defaults are the [`DedupConfig`] constants.
pub struct DedupListenerBuilder<H> {
    handler: H,
    store: Option<Arc<dyn DedupStore>>,
    config: DedupConfig,
    runtime: Option<tokio::runtime::Handle>,
}

impl<H> fmt::Debug for DedupListenerBuilder<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DedupListenerBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<H: DedupHandler> DedupListenerBuilder<H> {
    /// The namespace of the record keys: required; use the consumer group (or an application
    /// name shared by the consumers that must not process a key twice).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.config.namespace = namespace.into();
        self
    }

    /// How record keys are written (default [`KeyLayout::Readable`];
    /// [`KeyLayout::Compact`] uses about a third less Redis memory).
    pub fn key_layout(mut self, layout: KeyLayout) -> Self {
        self.config.key_layout = layout;
        self
    }

    /// The first part of every record key (default [`crate::record_key::DEFAULT_PREFIX`]).
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.config.prefix = prefix.into();
        self
    }

    /// The dedup store (default: a fresh [`MemoryStore`]).
    pub fn store(mut self, store: impl DedupStore) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// The dedup store, shared.
    pub fn shared_store(mut self, store: Arc<dyn DedupStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Derive keys with `strategy` instead of the handler's
    /// [`dedup_key`](DedupHandler::dedup_key).
    pub fn key_strategy(mut self, strategy: KeyStrategy) -> Self {
        self.config.key_strategy = Some(strategy);
        self
    }

    /// What to do when a key cannot be derived (default [`KeyFallback::UniqueId`]).
    pub fn key_fallback(mut self, fallback: KeyFallback) -> Self {
        self.config.key_fallback = fallback;
        self
    }

    /// TTL of a claim that is not renewed (default
    /// [`DedupConfig::DEFAULT_PROCESSING_TTL`]). A crashed consumer's claims block their keys
    /// this long.
    pub fn processing_ttl(mut self, ttl: Duration) -> Self {
        self.config.processing_ttl = ttl;
        self
    }

    /// TTL of a CONSUMED record: how long duplicates are recognised (default
    /// [`DedupConfig::DEFAULT_RECORD_TTL`]).
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

    /// Timeout of each store call (default [`DedupConfig::DEFAULT_STORE_TIMEOUT`]).
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.config.store_timeout = timeout;
        self
    }

    /// What to do when the store cannot answer (default [`StoreErrorPolicy::FailClosed`]).
    pub fn store_error_policy(mut self, policy: StoreErrorPolicy) -> Self {
        self.config.store_error_policy = policy;
        self
    }

    /// How many of a batch's handlers run at once (default 1: in order, one by one).
    pub fn handler_concurrency(mut self, n: usize) -> Self {
        self.config.handler_concurrency = n;
        self
    }

    /// The consumer group's max reconsume times (default 16, RocketMQ's), to warn before a
    /// deferred message would go to the dead-letter queue.
    pub fn max_reconsume_times(mut self, n: i32) -> Self {
        self.config.max_reconsume_times = n;
        self
    }

    /// How long a batch waits for a key that another batch of this listener is processing
    /// (default [`DedupConfig::DEFAULT_IN_FLIGHT_WAIT`]; zero: never wait). Without the wait,
    /// or past it, the copy goes back through the retry topic, and with it its whole batch.
    pub fn in_flight_wait(mut self, wait: Duration) -> Self {
        self.config.in_flight_wait = wait;
        self
    }

    /// How long a commit that failed after a successful handler is retried in the background
    /// (default [`DedupConfig::DEFAULT_COMMIT_RETRY_WINDOW`]; zero: not retried). The claim is
    /// the listener's by its token, so a late commit is still correct; committing before the
    /// claim expires keeps a redelivered copy from running again.
    pub fn commit_retry_window(mut self, window: Duration) -> Self {
        self.config.commit_retry_window = window;
        self
    }

    /// The Tokio runtime that drives store calls and handlers (default: the runtime the
    /// builder runs in, else a one-thread runtime of the listener's own).
    pub fn runtime(mut self, handle: tokio::runtime::Handle) -> Self {
        self.runtime = Some(handle);
        self
    }

    /// Checks the configuration and builds the listener.
    pub fn build(self) -> Result<DedupConcurrentListener<H>, ConfigError> {
        let config = self.config;
        if config.namespace.is_empty() {
            return Err(ConfigError::MissingNamespace);
        }
        for (setting, value) in [
            ("namespace", &config.namespace),
            ("key_prefix", &config.prefix),
        ] {
            if value.is_empty() || value.len() > DedupConfig::MAX_NAME_BYTES {
                return Err(ConfigError::BadLength {
                    setting,
                    len: value.len(),
                    max: DedupConfig::MAX_NAME_BYTES,
                });
            }
        }
        let bad = |setting, value, reason| ConfigError::BadDuration {
            setting,
            value,
            reason,
        };
        if config.processing_ttl < Duration::from_millis(100) {
            return Err(bad(
                "processing_ttl",
                config.processing_ttl,
                "must be at least 100ms",
            ));
        }
        if config.record_ttl < config.processing_ttl {
            return Err(bad(
                "record_ttl",
                config.record_ttl,
                "must be at least the processing TTL",
            ));
        }
        if config.renew_interval().is_zero() || config.renew_interval() >= config.processing_ttl {
            return Err(bad(
                "renew_interval",
                config.renew_interval(),
                "must be more than zero and less than the processing TTL",
            ));
        }
        if config.store_timeout.is_zero() {
            return Err(bad(
                "store_timeout",
                config.store_timeout,
                "must be more than zero",
            ));
        }
        if config.handler_concurrency == 0 {
            return Err(ConfigError::Zero {
                setting: "handler_concurrency",
            });
        }
        let runtime = match self.runtime {
            Some(handle) => ListenerRuntime::Borrowed(handle),
            None => ListenerRuntime::current_or_new()
                .map_err(|e| ConfigError::Runtime(e.to_string()))?,
        };
        let store = self.store.unwrap_or_else(|| Arc::new(MemoryStore::new()));
        Ok(DedupConcurrentListener {
            inner: Arc::new(Inner {
                handler: self.handler,
                store,
                config,
                runtime,
                stats: Arc::new(DedupStats::default()),
                local: Default::default(),
            }),
        })
    }
}

impl<H: DedupHandler> DedupConcurrentListener<H> {
    /// A builder around `handler`.
    pub fn builder(handler: H) -> DedupListenerBuilder<H> {
        DedupListenerBuilder {
            handler,
            store: None,
            config: DedupConfig::new(),
            runtime: None,
        }
    }

    /// The listener's counters.
    pub fn stats(&self) -> &Arc<DedupStats> {
        &self.inner.stats
    }

    /// The configuration.
    pub fn config(&self) -> &DedupConfig {
        &self.inner.config
    }

    /// The handler.
    pub fn handler(&self) -> &H {
        &self.inner.handler
    }

    /// Processes a batch and answers the status for RocketMQ; the async core of
    /// [`consume_message`](MessageListenerConcurrently::consume_message).
    pub async fn consume(&self, msgs: &[&MessageExt]) -> ConsumeConcurrentlyStatus {
        let span = info_span!(
            "dedup_batch",
            size = msgs.len(),
            store = self.inner.store.kind()
        );
        self.inner.consume(msgs).instrument(span).await
    }
}

impl<H: DedupHandler> MessageListenerConcurrently for DedupConcurrentListener<H> {
    fn consume_message(
        &self,
        msgs: &[&MessageExt],
        _context: &ConsumeConcurrentlyContext,
    ) -> ClientResult<ConsumeConcurrentlyStatus> {
        Ok(self.inner.runtime.block_on(self.consume(msgs)))
    }
}

/// Drops a pass's local registrations when the pass ends (normally they are already gone).
struct LocalHold<'a, H: DedupHandler> {
    inner: &'a Inner<H>,
    keys: Vec<RecordKey>,
    token: OwnerToken,
}

impl<H: DedupHandler> Drop for LocalHold<'_, H> {
    fn drop(&mut self) {
        self.inner.let_go_locally(&self.keys, self.token);
    }
}

/// How one message of a batch is treated once keys are derived.
#[derive(Debug, Clone, Copy)]
enum Plan {
    /// Deduplicated under `keys[i]`; `leader` is true for the first message with that key.
    Dedup { key: usize, leader: bool },
    /// Run without deduplication.
    NoDedup,
    /// Already decided.
    Decided(Decision),
}

impl<H: DedupHandler> Inner<H> {
    async fn consume(self: &Arc<Self>, msgs: &[&MessageExt]) -> ConsumeConcurrentlyStatus {
        let decisions = self.consume_pass(msgs, true).await;
        let retry = decisions.iter().any(|d| d.needs_retry());
        for (msg, decision) in msgs.iter().zip(&decisions) {
            self.record(msg, *decision, retry);
        }
        self.stats.answer(msgs.len() as u64, retry);
        if retry {
            ConsumeConcurrentlyStatus::ReconsumeLater
        } else {
            ConsumeConcurrentlyStatus::ConsumeSuccess
        }
    }

    /// Claims, handles and settles `msgs`; answers each message's decision. With `wait_local`,
    /// messages whose key is in flight in another batch of this listener wait for it (after
    /// this pass has settled its own claims) and go through one more pass.
    fn consume_pass<'a>(
        self: &'a Arc<Self>,
        msgs: &'a [&'a MessageExt],
        wait_local: bool,
    ) -> futures::future::BoxFuture<'a, Vec<Decision>> {
        Box::pin(async move {
            let (mut plans, keys) = self.plan(msgs);

            // Keys another batch of this listener holds are not claimed now: this pass waits
            // for them once its own claims are settled. The others are registered as held
            // before the claim is sent, so a copy in another batch always finds them here.
            let token = OwnerToken::random();
            let (local_busy, registered) = self.register_locally(&keys, token, wait_local);
            // The keys to claim; the guard lets their registrations go however this pass ends,
            // also when it is cancelled.
            let registrations = LocalHold {
                inner: self,
                keys: registered.iter().map(|&k| keys[k].clone()).collect(),
                token,
            };
            let to_claim = &registrations.keys;
            let claims = if to_claim.is_empty() {
                Some(Vec::new())
            } else {
                let ttl = self.config.processing_ttl;
                // `None`: the store could not answer (already logged and counted by `call`).
                self.call(
                    StoreOperation::Claim,
                    self.store.claim(to_claim, token, ttl),
                )
                .await
                .ok()
            };
            // The claim outcome of each key index (keys busy locally have none).
            let mut outcome_of: Vec<Option<ClaimOutcome>> = vec![None; keys.len()];
            if let Some(claims) = &claims {
                for (&k, outcome) in registered.iter().zip(claims) {
                    outcome_of[k] = Some(*outcome);
                }
            }

            // Decide what needs no handler; list the messages whose handler runs.
            let mut claimed_keys: Vec<RecordKey> = Vec::new();
            let mut to_run: Vec<usize> = Vec::new();
            let mut local_waits: HashMap<usize, tokio::sync::watch::Receiver<bool>> =
                HashMap::new();
            for (i, plan) in plans.iter_mut().enumerate() {
                match *plan {
                    Plan::Dedup { key, .. } if local_busy.contains_key(&key) => {
                        local_waits.insert(i, local_busy[&key].clone());
                        *plan = Plan::Decided(Decision::DeferredInFlight);
                    }
                    Plan::Dedup { key, leader } => match claims.as_ref().map(|_| outcome_of[key]) {
                        Some(Some(ClaimOutcome::Claimed)) if leader => {
                            claimed_keys.push(keys[key].clone());
                            to_run.push(i);
                        }
                        // A copy of the batch's leader for this key: it follows the leader.
                        Some(Some(ClaimOutcome::Claimed)) => {}
                        Some(Some(ClaimOutcome::Consumed)) => {
                            *plan = Plan::Decided(Decision::Duplicate)
                        }
                        Some(Some(ClaimOutcome::InFlight)) | Some(None) => {
                            *plan = Plan::Decided(Decision::DeferredInFlight)
                        }
                        None => match self.config.store_error_policy {
                            StoreErrorPolicy::FailClosed => {
                                *plan = Plan::Decided(Decision::StoreUnavailable)
                            }
                            StoreErrorPolicy::FailOpen if leader => {
                                *plan = Plan::NoDedup;
                                to_run.push(i);
                            }
                            StoreErrorPolicy::FailOpen => {
                                *plan = Plan::Decided(Decision::Duplicate)
                            }
                        },
                    },
                    Plan::NoDedup => to_run.push(i),
                    Plan::Decided(_) => {}
                }
            }
            // Registered keys this pass does not hold (consumed, in flight elsewhere, or the
            // store failed) are let go now; the held ones after they are settled.
            let not_held: Vec<RecordKey> = registered
                .iter()
                .filter(|&&k| outcome_of[k] != Some(ClaimOutcome::Claimed))
                .map(|&k| keys[k].clone())
                .collect();
            self.let_go_locally(&not_held, token);

            let outcomes = self.run_handlers(msgs, &to_run, &claimed_keys, token).await;

            // Commit the successes, release the failures.
            let mut commit_keys = Vec::new();
            let mut release_keys = Vec::new();
            let mut leader_ok: HashMap<usize, bool> = HashMap::new();
            for (&i, outcome) in to_run.iter().zip(&outcomes) {
                let ok = matches!(outcome, Ok(()));
                match plans[i] {
                    Plan::Dedup { key, .. } => {
                        leader_ok.insert(key, ok);
                        if ok {
                            commit_keys.push(keys[key].clone());
                        } else {
                            release_keys.push(keys[key].clone());
                        }
                        plans[i] = Plan::Decided(match outcome {
                            Ok(()) => Decision::Processed,
                            Err(d) => *d,
                        });
                    }
                    _ => {
                        plans[i] = Plan::Decided(match outcome {
                            Ok(()) => Decision::ProcessedWithoutDedup,
                            Err(d) => *d,
                        })
                    }
                }
            }
            self.commit(commit_keys, token).await;
            self.release(&release_keys, token).await;
            self.let_go_locally(&claimed_keys, token);

            // Copies follow their leader.
            let mut decisions: Vec<Decision> = plans
                .iter()
                .map(|plan| match *plan {
                    Plan::Decided(d) => d,
                    Plan::Dedup { key, .. } => match leader_ok.get(&key) {
                        Some(true) => Decision::Duplicate,
                        _ => Decision::RetriedWithBatch,
                    },
                    Plan::NoDedup => Decision::ProcessedWithoutDedup,
                })
                .collect();

            // Keys in flight in this process: this pass holds no claim any more, so waiting
            // cannot deadlock; then one more pass over those messages.
            if !local_waits.is_empty() {
                let wait = self.config.in_flight_wait;
                let all_done = futures::future::join_all(
                    local_waits
                        .values_mut()
                        .map(|done| async move { done.wait_for(|done| *done).await.is_ok() }),
                );
                if tokio::time::timeout(wait, all_done).await.is_ok() {
                    let mut again: Vec<usize> = local_waits.keys().copied().collect();
                    again.sort_unstable();
                    let subset: Vec<&MessageExt> = again.iter().map(|&i| msgs[i]).collect();
                    let second = self.consume_pass(&subset, false).await;
                    for (i, decision) in again.into_iter().zip(second) {
                        decisions[i] = decision;
                    }
                }
            }
            decisions
        })
    }

    /// Registers `keys` as held by this listener. Answers the keys another batch holds
    /// (index → its completion signal) and the indexes this call registered. Without
    /// `wait_local` (a second pass) or with the wait disabled, every key is claimed.
    fn register_locally(
        &self,
        keys: &[RecordKey],
        token: OwnerToken,
        wait_local: bool,
    ) -> (
        HashMap<usize, tokio::sync::watch::Receiver<bool>>,
        Vec<usize>,
    ) {
        let mut busy = HashMap::new();
        if self.config.in_flight_wait.is_zero() {
            return (busy, (0..keys.len()).collect());
        }
        let mut registered = Vec::with_capacity(keys.len());
        let mut local = self.local.lock().unwrap_or_else(|p| p.into_inner());
        for (k, key) in keys.iter().enumerate() {
            match local.get(key) {
                Some((_, done)) if wait_local => {
                    busy.insert(k, done.subscribe());
                }
                // A second pass does not wait again: it claims, and the store decides.
                Some(_) => registered.push(k),
                None => {
                    local.insert(key.clone(), (token, tokio::sync::watch::Sender::new(false)));
                    registered.push(k);
                }
            }
        }
        (busy, registered)
    }

    /// Drops this pass's registrations of `keys` (not another batch's) and wakes the
    /// batches waiting for them.
    fn let_go_locally(&self, keys: &[RecordKey], token: OwnerToken) {
        if keys.is_empty() || self.config.in_flight_wait.is_zero() {
            return;
        }
        let mut local = self.local.lock().unwrap_or_else(|p| p.into_inner());
        for key in keys {
            if local.get(key).is_some_and(|(owner, _)| *owner == token) {
                if let Some((_, done)) = local.remove(key) {
                    done.send_replace(true);
                }
            }
        }
    }

    /// Derives each message's record key; copies of one key share an index.
    fn plan(&self, msgs: &[&MessageExt]) -> (Vec<Plan>, Vec<RecordKey>) {
        let mut plans = Vec::with_capacity(msgs.len());
        let mut keys: Vec<RecordKey> = Vec::with_capacity(msgs.len());
        let mut index: HashMap<RecordKey, usize> = HashMap::with_capacity(msgs.len());
        for msg in msgs {
            let plan = match self.record_key(msg) {
                Ok(record_key) => match index.get(&record_key) {
                    Some(&key) => Plan::Dedup { key, leader: false },
                    None => {
                        index.insert(record_key.clone(), keys.len());
                        keys.push(record_key);
                        Plan::Dedup {
                            key: keys.len() - 1,
                            leader: true,
                        }
                    }
                },
                Err(plan) => plan,
            };
            plans.push(plan);
        }
        (plans, keys)
    }

    fn record_key(&self, msg: &MessageExt) -> Result<RecordKey, Plan> {
        let derived = match &self.config.key_strategy {
            Some(strategy) => strategy.derive(msg),
            None => self.handler.dedup_key(msg),
        };
        let key = match derived {
            Ok(key) => key,
            Err(err) => {
                self.stats.event(Event::KeyError, 1);
                let fallback = self.config.key_fallback;
                warn!(
                    msg_id = %msg.msg_id,
                    topic = %msg.topic(),
                    error = %err,
                    fallback = ?fallback,
                    "dedup key could not be derived"
                );
                match fallback {
                    KeyFallback::UniqueId => key::unique_id(msg).map_err(|err: KeyError| {
                        error!(msg_id = %msg.msg_id, error = %err, "unique id fallback failed too; retrying");
                        Plan::Decided(Decision::KeyRejected)
                    })?,
                    KeyFallback::Retry => return Err(Plan::Decided(Decision::KeyRejected)),
                    KeyFallback::NoDedup => return Err(Plan::NoDedup),
                }
            }
        };
        let config = &self.config;
        Ok(RecordKey::with_layout(
            config.key_layout,
            &config.prefix,
            &config.namespace,
            msg.topic().as_str(),
            key.tag(),
            key.value(),
        ))
    }

    /// Runs the handlers of `to_run` (with renewal of `claimed` while they run) and answers,
    /// in order, `Ok` or the failure decision.
    async fn run_handlers(
        &self,
        msgs: &[&MessageExt],
        to_run: &[usize],
        claimed: &[RecordKey],
        token: OwnerToken,
    ) -> Vec<Result<(), Decision>> {
        // Futures collected first: a closure inside the stream would make the future !Send.
        let handlers: Vec<_> = to_run.iter().map(|&i| self.run_handler(msgs[i])).collect();
        let run = futures::stream::iter(handlers)
            .buffered(self.config.handler_concurrency)
            .collect::<Vec<_>>();
        if claimed.is_empty() {
            return run.await;
        }
        let renew = async {
            let every = self.config.renew_interval();
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                self.renew(claimed, token).await;
            }
        };
        // Biased: the handlers are polled first, so a batch whose handlers finish at once
        // never registers the renewal timer.
        tokio::select! {
            biased;
            outcomes = run => outcomes,
            () = renew => unreachable!("the renewal loop never ends"),
        }
    }

    async fn run_handler(&self, msg: &MessageExt) -> Result<(), Decision> {
        match AssertUnwindSafe(self.handler.handle(msg))
            .catch_unwind()
            .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => {
                warn!(msg_id = %msg.msg_id, topic = %msg.topic(), error = %err, "handler failed; claim released, message will be retried");
                Err(Decision::HandlerFailed)
            }
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic payload".to_owned());
                error!(msg_id = %msg.msg_id, topic = %msg.topic(), panic = %what, "handler panicked; claim released, message will be retried");
                Err(Decision::HandlerPanicked)
            }
        }
    }

    async fn renew(&self, claimed: &[RecordKey], token: OwnerToken) {
        let ttl = self.config.processing_ttl;
        if let Ok(held) = self
            .call(StoreOperation::Renew, self.store.renew(claimed, token, ttl))
            .await
        {
            let lost = held.iter().filter(|h| !**h).count();
            if lost > 0 {
                self.stats.event(Event::ClaimLost, lost as u64);
                warn!(
                    lost,
                    "renewal found claims taken over: another consumer may run the same messages"
                );
            }
        }
    }

    /// Commits the keys of successful handlers. A failed call is handed to a background task
    /// that retries it (see [`DedupListenerBuilder::commit_retry_window`]): the handlers already
    /// succeeded, so the message is acked either way.
    async fn commit(self: &Arc<Self>, keys: Vec<RecordKey>, token: OwnerToken) {
        if keys.is_empty() {
            return;
        }
        let ttl = self.config.record_ttl;
        match self
            .call(StoreOperation::Commit, self.store.commit(&keys, token, ttl))
            .await
        {
            Ok(outcomes) => self.settled(&keys, outcomes),
            Err(err) if self.config.commit_retry_window.is_zero() => {
                self.give_up_commit(&keys, &err)
            }
            Err(_) => {
                self.stats.event(Event::CommitDeferred, keys.len() as u64);
                warn!(
                    keys = keys.len(),
                    window_s = self.config.commit_retry_window.as_secs(),
                    "commit failed after the handlers succeeded; acking, and retrying the commit in the background"
                );
                let inner = Arc::clone(self);
                self.runtime
                    .handle()
                    .spawn(async move { inner.retry_commit(keys, token).await });
            }
        }
    }

    async fn retry_commit(self: Arc<Self>, keys: Vec<RecordKey>, token: OwnerToken) {
        let deadline = tokio::time::Instant::now() + self.config.commit_retry_window;
        let ttl = self.config.record_ttl;
        let mut backoff = Duration::from_millis(100);
        loop {
            tokio::time::sleep(backoff).await;
            match self
                .call(StoreOperation::Commit, self.store.commit(&keys, token, ttl))
                .await
            {
                Ok(outcomes) => {
                    debug!(keys = keys.len(), "deferred commit written");
                    return self.settled(&keys, outcomes);
                }
                Err(err) if tokio::time::Instant::now() + backoff >= deadline => {
                    return self.give_up_commit(&keys, &err)
                }
                Err(_) => backoff = (backoff * 2).min(Duration::from_secs(2)),
            }
        }
    }

    fn settled(&self, keys: &[RecordKey], outcomes: Vec<CommitOutcome>) {
        let lost = outcomes
            .iter()
            .filter(|o| **o == CommitOutcome::Lost)
            .count();
        let twice = outcomes
            .iter()
            .filter(|o| **o == CommitOutcome::AlreadyConsumed)
            .count();
        self.stats.event(Event::ClaimLost, lost as u64);
        self.stats.event(Event::DuplicateEffect, twice as u64);
        if lost + twice > 0 {
            warn!(
                lost,
                already_consumed = twice,
                "commit found claims taken over: a handler may have run twice"
            );
        }
        for (key, outcome) in keys.iter().zip(outcomes) {
            self.handler.on_settled(key, Ok(outcome));
        }
    }

    fn give_up_commit(&self, keys: &[RecordKey], err: &StoreError) {
        self.stats.event(Event::CommitFailed, keys.len() as u64);
        error!(
            keys = keys.len(),
            error = %err,
            "commit could not be written; the claims expire after the processing TTL, and a copy delivered after that runs again"
        );
        for key in keys {
            self.handler.on_settled(key, Err(err));
        }
    }

    async fn release(&self, keys: &[RecordKey], token: OwnerToken) {
        if keys.is_empty() {
            return;
        }
        if self
            .call(StoreOperation::Release, self.store.release(keys, token))
            .await
            .is_err()
        {
            self.stats.event(Event::ReleaseFailed, keys.len() as u64);
        }
    }

    /// Runs a store call with the store timeout; logs, times and counts it.
    async fn call<T>(
        &self,
        operation: StoreOperation,
        fut: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let timeout = self.config.store_timeout;
        let result = match tokio::time::timeout(timeout, fut).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Timeout { operation, timeout }),
        };
        let elapsed = started.elapsed();
        metrics::histogram!("rocketmq_dedup_store_seconds", "op" => operation.as_str(), "store" => self.store.kind())
            .record(elapsed.as_secs_f64());
        match &result {
            Ok(_) => debug!(
                op = operation.as_str(),
                latency_us = elapsed.as_micros() as u64,
                "store call"
            ),
            Err(err) => {
                self.stats.event(Event::StoreError, 1);
                warn!(
                    op = operation.as_str(),
                    latency_us = elapsed.as_micros() as u64,
                    error = %err,
                    cause = %crate::store::error_chain(err),
                    "dedup store call failed"
                );
            }
        }
        result
    }

    fn record(&self, msg: &MessageExt, decision: Decision, batch_retried: bool) {
        self.stats.decide(decision);
        debug!(
            target: DECISION_TARGET,
            msg_id = %msg.msg_id,
            topic = %msg.topic(),
            reconsume_times = msg.reconsume_times,
            decision = decision.as_str(),
            batch_retried,
            "dedup decision"
        );
        if decision == Decision::DeferredInFlight
            && msg.reconsume_times + 1 >= self.config.max_reconsume_times
        {
            self.stats.event(Event::DeferredNearDeadLetter, 1);
            error!(
                msg_id = %msg.msg_id,
                topic = %msg.topic(),
                reconsume_times = msg.reconsume_times,
                max_reconsume_times = self.config.max_reconsume_times,
                "message deferred on its last reconsume attempt while another consumer holds its claim: it may go to the dead-letter queue unprocessed"
            );
        }
    }
}
