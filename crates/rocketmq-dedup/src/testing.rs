//! Helpers for tests and doc examples: build a [`MessageExt`] as a consumer would receive it;
//! a store that fails on purpose ([`FaultyStore`]); what the bench and tests read off a Redis
//! store (`RedisStoreProbe`, feature `redis`).
//!
//! ```
//! use rocketmq_dedup::testing::message;
//!
//! let msg = message("Orders").uniq_key("7F000001...").tag("paid").body("{}").build();
//! assert_eq!(msg.tags(), Some("paid"));
//! ```

use cheetah_string::CheetahString;
use rocketmq_model::common::message::message_ext::MessageExt;

use crate::record_key::{KeyParts, RecordKey};

/// The record key of dedup key `key` in namespace `g`, topic `T`: a key for tests that need
/// any.
pub fn record_key(key: &str) -> RecordKey {
    RecordKey::new(KeyParts {
        namespace: "g",
        topic: "T",
        key,
        ..KeyParts::default()
    })
}

/// Starts a [`MessageBuilder`] for a message on `topic`.
pub fn message(topic: &str) -> MessageBuilder {
    let mut msg = MessageExt::default();
    msg.message.set_topic(CheetahString::from(topic));
    MessageBuilder { msg }
}

/// Builds a [`MessageExt`] field by field.
#[derive(Debug)]
pub struct MessageBuilder {
    msg: MessageExt,
}

impl MessageBuilder {
    /// Sets the client unique id (the `UNIQ_KEY` property).
    pub fn uniq_key(self, id: &str) -> Self {
        self.property("UNIQ_KEY", id)
    }

    /// Sets the broker message id (`msg_id()`).
    pub fn msg_id(mut self, id: &str) -> Self {
        self.msg.msg_id = CheetahString::from(id);
        self
    }

    /// Sets the `KEYS` property.
    pub fn keys(self, keys: &str) -> Self {
        self.property("KEYS", keys)
    }

    /// Sets the tag.
    pub fn tag(self, tag: &str) -> Self {
        self.property("TAGS", tag)
    }

    /// Sets the body.
    pub fn body(mut self, body: impl AsRef<[u8]>) -> Self {
        let bytes = bytes::Bytes::copy_from_slice(body.as_ref());
        self.msg.message.set_body(Some(bytes));
        self
    }

    /// Sets the number of earlier deliveries.
    pub fn reconsume_times(mut self, n: i32) -> Self {
        self.msg.reconsume_times = n;
        self
    }

    /// Sets any property.
    pub fn property(mut self, name: &str, value: &str) -> Self {
        self.msg
            .message
            .properties_mut()
            .as_map_mut()
            .insert(CheetahString::from(name), CheetahString::from(value));
        self
    }

    /// The message.
    pub fn build(self) -> MessageExt {
        self.msg
    }
}

/// A [`DedupStore`] wrapper that injects faults, for testing how a consumer behaves when its
/// store misbehaves: failing or hanging calls of chosen operations, and renewals that do not
/// renew (so that a claim expires under a running handler).
///
/// ```
/// use rocketmq_dedup::store::MemoryStore;
/// use rocketmq_dedup::testing::FaultyStore;
/// use rocketmq_dedup::StoreOperation;
///
/// let store = FaultyStore::new(MemoryStore::new());
/// store.fail(StoreOperation::Commit, true);
/// ```
#[derive(Debug)]
pub struct FaultyStore<S> {
    inner: S,
    failing: std::sync::Mutex<Vec<StoreOperation>>,
    hang: std::sync::atomic::AtomicBool,
    stall_renewals: std::sync::atomic::AtomicBool,
    /// With [`FaultyStore::fail_randomly`]: the share of calls that fail, and the dice.
    random: std::sync::Mutex<Option<(f64, fastrand::Rng)>>,
}

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::error::{StoreError, StoreOperation};
use crate::store::{ClaimOutcome, CommitOutcome, DedupStore, OwnerToken};

impl<S: DedupStore> FaultyStore<S> {
    /// A wrapper that passes every call to `inner` until told otherwise.
    pub fn new(inner: S) -> Self {
        FaultyStore {
            inner,
            failing: std::sync::Mutex::new(Vec::new()),
            hang: false.into(),
            stall_renewals: false.into(),
            random: std::sync::Mutex::new(None),
        }
    }

    /// Makes a share `rate` of all calls fail, chosen by dice seeded with `seed`: half of them
    /// before the wrapped store sees the call, half after it was applied (as when a network
    /// store's answer is lost).
    pub fn fail_randomly(&self, rate: f64, seed: u64) {
        *self.random.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((rate, fastrand::Rng::with_seed(seed)));
    }

    /// A call as this store answers it: failed by a fault that is switched on, or passed on
    /// (`call` makes the wrapped store's call: some stores act when called, not when polled).
    fn wrap<'a, T: Send + 'a>(
        &'a self,
        operation: StoreOperation,
        call: impl FnOnce() -> BoxFuture<'a, Result<T, StoreError>>,
    ) -> BoxFuture<'a, Result<T, StoreError>> {
        if let Some(fault) = self.fault(operation) {
            return fault;
        }
        let call = call();
        let dice = {
            let mut random = self.random.lock().unwrap_or_else(|p| p.into_inner());
            random
                .as_mut()
                .map(|(rate, rng)| (rng.f64() < *rate, rng.bool()))
        };
        match dice {
            Some((true, before)) => Box::pin(async move {
                if !before {
                    let _ = call.await;
                }
                Err(StoreError::backend(
                    operation,
                    "injected fault: answer lost",
                ))
            }),
            _ => call,
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Makes calls of `operation` fail (`true`) or pass again (`false`).
    pub fn fail(&self, operation: StoreOperation, failing: bool) {
        let mut ops = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        ops.retain(|op| *op != operation);
        if failing {
            ops.push(operation);
        }
    }

    /// Makes failing calls hang forever instead of failing at once.
    pub fn hang(&self, hang: bool) {
        self.hang.store(hang, Ordering::SeqCst);
    }

    /// Makes renewals answer "still held" without renewing anything.
    pub fn stall_renewals(&self, stall: bool) {
        self.stall_renewals.store(stall, Ordering::SeqCst);
    }

    fn fault<'a, T: Send + 'a>(
        &'a self,
        operation: StoreOperation,
    ) -> Option<BoxFuture<'a, Result<T, StoreError>>> {
        let failing = self
            .failing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&operation);
        if !failing {
            return None;
        }
        let hang = self.hang.load(Ordering::SeqCst);
        Some(Box::pin(async move {
            if hang {
                futures::future::pending::<()>().await;
            }
            Err(StoreError::backend(
                operation,
                "injected fault: connection refused",
            ))
        }))
    }
}

impl<S: DedupStore> DedupStore for FaultyStore<S> {
    fn claim<'a>(
        &'a self,
        keys: &'a [RecordKey],
        token: OwnerToken,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Vec<ClaimOutcome>, StoreError>> {
        self.wrap(StoreOperation::Claim, || self.inner.claim(keys, token, ttl))
    }

    fn commit<'a>(
        &'a self,
        keys: &'a [RecordKey],
        token: OwnerToken,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Vec<CommitOutcome>, StoreError>> {
        self.wrap(StoreOperation::Commit, || {
            self.inner.commit(keys, token, ttl)
        })
    }

    fn release<'a>(
        &'a self,
        keys: &'a [RecordKey],
        token: OwnerToken,
    ) -> BoxFuture<'a, Result<Vec<bool>, StoreError>> {
        self.wrap(StoreOperation::Release, || self.inner.release(keys, token))
    }

    fn renew<'a>(
        &'a self,
        keys: &'a [RecordKey],
        token: OwnerToken,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Vec<bool>, StoreError>> {
        if self.stall_renewals.load(Ordering::SeqCst) {
            return Box::pin(futures::future::ready(Ok(vec![true; keys.len()])));
        }
        self.wrap(StoreOperation::Renew, || self.inner.renew(keys, token, ttl))
    }

    fn kind(&self) -> &'static str {
        "faulty"
    }
}

/// What the bench and tests read off a [`RedisStore`](crate::store::RedisStore) (import the
/// trait to call these as its methods).
#[cfg(feature = "redis")]
pub trait RedisStoreProbe {
    /// Round trips to Redis so far (one per pipeline; a `NOSCRIPT` reload adds two: the load
    /// and the commands sent again).
    fn round_trips(&self) -> u64;

    /// The Lua source of the script behind `operation` (claim, commit, release, renew), for
    /// tests that race a store on its script cache.
    fn script_source(operation: StoreOperation) -> Option<&'static str>;

    /// The Redis key of `key`'s claim, once this store has met its group (a claim of any key
    /// of the group), for tests that look at records in Redis.
    fn claim_key(&self, key: &RecordKey) -> Option<String>;

    /// The store's connection, for looking at records in Redis: it implements redis-rs's
    /// `ConnectionLike` (on a Cluster, routed by key; through Sentinel, to the current master).
    fn connection(&self) -> impl redis::aio::ConnectionLike + Clone + Send + Sync + 'static;
}

#[cfg(feature = "redis")]
impl RedisStoreProbe for crate::store::RedisStore {
    fn round_trips(&self) -> u64 {
        self.round_trips_so_far()
    }

    fn script_source(operation: StoreOperation) -> Option<&'static str> {
        Self::script_of(operation)
    }

    fn claim_key(&self, key: &RecordKey) -> Option<String> {
        self.claim_key_of(key)
    }

    fn connection(&self) -> impl redis::aio::ConnectionLike + Clone + Send + Sync + 'static {
        self.shared_connection()
    }
}
