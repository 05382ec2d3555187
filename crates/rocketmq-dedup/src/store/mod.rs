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
//! The `contract` module is the test suite that every store must pass, and `model` a
//! randomized check of the same contract under concurrency (both with feature `test-util`).
//!
//! # Stores
//! - [`MemoryStore`]: in-process, for demos, tests and single-consumer apps.
//! - [`RedisStore`] (feature `redis`, on by default): shared by every consumer of a group.

use std::fmt;
use std::num::NonZeroU64;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::error::StoreError;
use crate::record_key::RecordKey;

pub mod admin;
#[cfg(feature = "test-util")]
pub mod contract;
mod detached;
mod memory;
#[cfg(feature = "test-util")]
pub mod model;
#[cfg(feature = "redis")]
mod redis;

pub use detached::DetachedCommit;
pub use memory::MemoryStore;
#[cfg(feature = "redis")]
pub use redis::{JavaKeys, RedisStore, RedisStoreBuilder};

/// Identifies one claim. Commit, release and renew succeed only with the token of the claim
/// that is current.
///
/// A token is never 0, so a store may use 0 (or its absence) to mean "no owner".
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct OwnerToken(NonZeroU64);

impl OwnerToken {
    /// A fresh random token (64 random bits, never 0).
    pub fn random() -> Self {
        OwnerToken(NonZeroU64::new(fastrand::u64(1..)).unwrap_or(NonZeroU64::MIN))
    }

    /// The token as a number (never 0), for stores to persist.
    pub fn get(self) -> u64 {
        self.0.get()
    }

    /// A token from a persisted number; `None` for 0, which is no token.
    pub fn from_u64(value: u64) -> Option<Self> {
        NonZeroU64::new(value).map(OwnerToken)
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

/// How long a CONSUMED record is kept unless told otherwise (a day): the listener's and every
/// store builder's default, defined here, where both look.
pub(crate) const DEFAULT_RECORD_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// The longest TTL a store keeps a record for; longer ones are cut to it (see [`clamp_ttl`]).
pub const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

/// `ttl`, cut to [`MAX_TTL`] and at least a millisecond: what stores write.
pub fn clamp_ttl(ttl: Duration) -> Duration {
    ttl.clamp(Duration::from_millis(1), MAX_TTL)
}

/// A dedup store. Implementations must pass the contract suite (`store::contract`, feature
/// `test-util`).
///
/// # Batches
/// Methods take batches and answer one entry per key, in order, as if each key's operation
/// were applied in turn: a key repeated in one batch sees the effect of its earlier
/// occurrence (`claim([k, k], t)` answers `[Claimed, Claimed]`, `commit([k, k], t)` answers
/// `[Committed, AlreadyConsumed]`). A batch is not a transaction: a call that fails with a
/// [`StoreError`] may have been applied to some of its keys (a network store may even apply
/// it after the caller gave up waiting). Every such effect is one the caller's token owns, so
/// it is undone by a release with that token or ends with its TTL.
///
/// # TTLs
/// A TTL longer than [`MAX_TTL`] is taken as [`MAX_TTL`]: never as a short one.
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

    /// Takes a commit to write without its caller waiting for it (a listener's commit after
    /// the ack, [`ack_before_commit`](crate::DedupListenerBuilder::ack_before_commit)):
    /// the store writes it as [`commit`](Self::commit) would and calls
    /// [`DetachedCommit::finish`] once with the answer, from whatever thread the answer
    /// arrives on. `Some`: the store gives the commit back, and the caller runs it through
    /// `commit` on a task of its own. Default: gives it back.
    ///
    /// A store overrides this when it can finish a commit with less than a task per commit:
    /// the memory store finishes it at once, the Redis store (one server) sends it in front of
    /// the calling thread's next pipeline (`RedisStoreBuilder::commit_linger`).
    fn commit_detached(&self, commit: DetachedCommit) -> Option<DetachedCommit> {
        Some(commit)
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_no_token() {
        assert_eq!(OwnerToken::from_u64(0), None);
        let token = OwnerToken::random();
        assert_eq!(OwnerToken::from_u64(token.get()), Some(token));
        assert_ne!(token.get(), 0);
    }

    #[test]
    fn ttls_are_clamped_to_what_stores_keep() {
        assert_eq!(clamp_ttl(Duration::MAX), MAX_TTL);
        assert_eq!(clamp_ttl(Duration::ZERO), Duration::from_millis(1));
        assert_eq!(clamp_ttl(Duration::from_secs(5)), Duration::from_secs(5));
    }
}
