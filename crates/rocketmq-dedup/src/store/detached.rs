//! A commit its caller does not wait for: [`DedupStore::commit_detached`](super::DedupStore::commit_detached).
//!
//! A listener that acks before it commits ([`ack_before_commit`](crate::DedupListenerBuilder::ack_before_commit)) has no
//! use for a task that only waits for the commit's answer: every such task costs thread
//! wake-ups. It hands the store a [`DetachedCommit`] instead, and the store finishes it from
//! wherever the answer arrives (for the Redis store, the thread whose pipeline carried it). A
//! store that cannot do better gives it back, and the caller awaits [`DedupStore::commit`](super::DedupStore::commit) on
//! a task of its own.
//!
//! ```
//! use std::time::Duration;
//! use rocketmq_dedup::record_key::{KeyParts, RecordKey};
//! use rocketmq_dedup::store::{CommitOutcome, DedupStore, DetachedCommit, MemoryStore, OwnerToken};
//!
//! # #[tokio::main] async fn main() {
//! let store = MemoryStore::new();
//! let (keys, token) = (vec![RecordKey::new(KeyParts { prefix: "dedup", namespace: "g", topic: "T", tag: None, key: "k" })], OwnerToken::random());
//! store.claim(&keys, token, Duration::from_secs(60)).await.unwrap();
//! let (tx, rx) = tokio::sync::oneshot::channel();
//! let commit = DetachedCommit::new(keys, token, Duration::from_secs(600), move |_keys, result| {
//!     let _ = tx.send(result);
//! });
//! if let Some(commit) = store.commit_detached(commit) {
//!     // Given back: run it as an ordinary commit.
//!     let result = store.commit(commit.keys(), commit.token(), commit.ttl()).await;
//!     commit.finish(result);
//! }
//! assert_eq!(rx.await.unwrap().unwrap(), [CommitOutcome::Committed]);
//! # }
//! ```

use std::fmt;
use std::time::Duration;

use super::{CommitOutcome, OwnerToken};
use crate::error::{StoreError, StoreOperation};
use crate::record_key::RecordKey;

/// What a detached commit does with its outcome.
type Done = Box<dyn FnOnce(&[RecordKey], Result<Vec<CommitOutcome>, StoreError>) + Send>;

/// A commit handed to a store to write in its own time: the keys, the owner token, the record
/// TTL, and what to do with the outcome.
///
/// [`finish`](Self::finish) runs the outcome callback with what [`DedupStore::commit`] would
/// have answered, on whichever thread the answer arrives, so the callback must be short and
/// never block. The callback runs exactly once: a commit dropped unfinished (a store that
/// lost it, or its runtime shutting down) finishes with a [`StoreError::Backend`] error, so
/// the caller can retry it rather than lose it.
///
/// [`DedupStore::commit`]: super::DedupStore::commit
pub struct DetachedCommit {
    keys: Vec<RecordKey>,
    token: OwnerToken,
    ttl: Duration,
    /// `None` once finished.
    done: Option<Done>,
}

impl DetachedCommit {
    /// A commit of `keys` for `token` with the record TTL `ttl`; `done` gets the keys and the
    /// outcome.
    pub fn new(
        keys: Vec<RecordKey>,
        token: OwnerToken,
        ttl: Duration,
        done: impl FnOnce(&[RecordKey], Result<Vec<CommitOutcome>, StoreError>) + Send + 'static,
    ) -> Self {
        DetachedCommit {
            keys,
            token,
            ttl,
            done: Some(Box::new(done)),
        }
    }

    /// The keys to mark CONSUMED.
    pub fn keys(&self) -> &[RecordKey] {
        &self.keys
    }

    /// The token of the claim the keys are held by.
    pub fn token(&self) -> OwnerToken {
        self.token
    }

    /// The record TTL.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Reports the commit's outcome: one entry per key, in order, as [`DedupStore::commit`]
    /// answers, or the error that kept it from being written.
    ///
    /// [`DedupStore::commit`]: super::DedupStore::commit
    pub fn finish(mut self, result: Result<Vec<CommitOutcome>, StoreError>) {
        if let Some(done) = self.done.take() {
            done(&self.keys, result)
        }
    }
}

impl Drop for DetachedCommit {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            let dropped = StoreError::backend(
                StoreOperation::Commit,
                "the store dropped the detached commit before it was written",
            );
            done(&self.keys, Err(dropped))
        }
    }
}

impl fmt::Debug for DetachedCommit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DetachedCommit")
            .field("keys", &self.keys)
            .field("token", &self.token)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}
