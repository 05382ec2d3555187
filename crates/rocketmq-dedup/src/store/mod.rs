//! Dedup stores: where claims and consumed records live.
//!
//! Every store implements one state machine per record key:
//!
//! ```text
//! absent --claim--> CONSUMING{owner token, processing TTL}
//! CONSUMING --commit(token)--> CONSUMED{record TTL}      handler succeeded
//! CONSUMING --release(token)--> absent                   handler failed or panicked
//! CONSUMING --renew(token)--> CONSUMING (TTL extended)   handler still running
//! CONSUMING --TTL expires--> absent                      consumer died mid-handler
//! ```
//!
//! Commit, release and renew are compare-and-set on the [`OwnerToken`]: an owner whose claim
//! expired never overwrites or deletes a newer owner's record. All operations take a batch so
//! that a networked store answers a whole RocketMQ batch in one round trip.
//!
//! The [`contract`] module is the test suite that every store must pass.
//!
//! # Stores
//! - [`MemoryStore`]: in-process, for demos, tests and single-consumer apps.
//! - [`RedisStore`] (feature `redis`, on by default): shared by every consumer of a group.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::error::StoreError;
use crate::record_key::RecordKey;

#[cfg(feature = "test-util")]
pub mod contract;
mod memory;
#[cfg(feature = "redis")]
mod redis;

pub use memory::MemoryStore;
#[cfg(feature = "redis")]
pub use redis::{RedisStore, RedisStoreBuilder};

/// Identifies one claim. Commit, release and renew succeed only with the token of the claim
/// that is current.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct OwnerToken(u64);

impl OwnerToken {
    /// A fresh random token (64 random bits; never 0).
    pub fn random() -> Self {
        OwnerToken(fastrand::u64(1..))
    }

    /// The token as a number, for stores to persist.
    pub fn get(self) -> u64 {
        self.0
    }

    /// A token from a persisted number.
    pub fn from_u64(value: u64) -> Self {
        OwnerToken(value)
    }
}

impl fmt::Debug for OwnerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OwnerToken({:016x})", self.0)
    }
}

/// What a claim found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The key was absent (or already claimed with this very token) and is now CONSUMING,
    /// owned by the caller.
    Claimed,
    /// Another owner holds a live claim: the message is being processed elsewhere.
    InFlight,
    /// The key is CONSUMED: the message was processed.
    Consumed,
}

/// What a commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitOutcome {
    /// The record is CONSUMED. Also the outcome when the caller's claim had expired and
    /// nobody had claimed the key since: the handler did succeed, so the record is written.
    Committed,
    /// The key was already CONSUMED by another owner (whose claim followed an expiry of
    /// ours): the handler ran twice. Logged and counted by the listener.
    AlreadyConsumed,
    /// Another owner holds the claim now; the record is left to them.
    Lost,
}

/// TTLs of the two states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttls {
    /// How long a CONSUMING claim lives without renewal.
    pub processing: Duration,
    /// How long a CONSUMED record lives.
    pub record: Duration,
}

/// A dedup store. Implementations must pass [`contract`].
///
/// Methods take batches and answer one entry per key, in order. A method either answers for
/// every key or fails as a whole with a [`StoreError`]. Keys in one call are distinct.
///
/// # Cancellation
/// The listener drops a call's future when it times out; an operation may or may not have
/// been applied then. Claims are idempotent for the same token, and commit, release and renew
/// are compare-and-set, so the listener's retries are safe.
pub trait DedupStore: Send + Sync + 'static {
    /// Claims every absent key for `token` with the processing TTL.
    fn claim<'a>(
        &'a self,
        keys: &'a [RecordKey],
        token: OwnerToken,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Vec<ClaimOutcome>, StoreError>>;

    /// Marks each key CONSUMED with the record TTL unless another owner holds or consumed it.
    fn commit<'a>(
        &'a self,
        keys: &'a [RecordKey],
        token: OwnerToken,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Vec<CommitOutcome>, StoreError>>;

    /// Deletes each key that is CONSUMING with `token`; answers whether it did.
    fn release<'a>(
        &'a self,
        keys: &'a [RecordKey],
        token: OwnerToken,
    ) -> BoxFuture<'a, Result<Vec<bool>, StoreError>>;

    /// Resets the processing TTL of each key that is CONSUMING with `token`; answers whether
    /// the claim was still held.
    fn renew<'a>(
        &'a self,
        keys: &'a [RecordKey],
        token: OwnerToken,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Vec<bool>, StoreError>>;

    /// A short name for logs and metrics (`memory`, `redis`).
    fn kind(&self) -> &'static str;
}

impl<S: DedupStore + ?Sized> DedupStore for Arc<S> {
    fn claim<'a>(
        &'a self,
        keys: &'a [RecordKey],
        token: OwnerToken,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Vec<ClaimOutcome>, StoreError>> {
        (**self).claim(keys, token, ttl)
    }

    fn commit<'a>(
        &'a self,
        keys: &'a [RecordKey],
        token: OwnerToken,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Vec<CommitOutcome>, StoreError>> {
        (**self).commit(keys, token, ttl)
    }

    fn release<'a>(
        &'a self,
        keys: &'a [RecordKey],
        token: OwnerToken,
    ) -> BoxFuture<'a, Result<Vec<bool>, StoreError>> {
        (**self).release(keys, token)
    }

    fn renew<'a>(
        &'a self,
        keys: &'a [RecordKey],
        token: OwnerToken,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Vec<bool>, StoreError>> {
        (**self).renew(keys, token, ttl)
    }

    fn kind(&self) -> &'static str {
        (**self).kind()
    }
}

/// Opens a store from a URL: `memory://` for a [`MemoryStore`], `redis://…` or `rediss://…`
/// for a [`RedisStore`] (feature `redis`).
pub async fn connect(url: &str) -> Result<Arc<dyn DedupStore>, crate::error::ConfigError> {
    if url == "memory://" || url == "memory:" {
        return Ok(Arc::new(MemoryStore::new()));
    }
    #[cfg(feature = "redis")]
    if url.starts_with("redis://")
        || url.starts_with("rediss://")
        || url.starts_with("redis+unix://")
    {
        let store = RedisStore::builder(url).connect().await.map_err(|e| {
            crate::error::ConfigError::BadStoreUrl {
                reason: format!("{e}: {}", crate::error::source_chain(&e)),
            }
        })?;
        return Ok(Arc::new(store));
    }
    Err(crate::error::ConfigError::BadStoreUrl {
        reason: "expected memory:// or redis://host:port (rediss:// for TLS)".to_owned(),
    })
}
