//! What an operator asks of a shared store, outside the state machine: one record's state, to
//! forget a record (so its message is processed again), counts, and purging expired rows.
//!
//! [`RecordAdmin`] is implemented by [`RedisStore`](crate::store::RedisStore) (one server,
//! Sentinel, Cluster) and the SQL stores; [`connect_admin`](crate::connect_admin) opens one
//! from a store URL. The
//! operator CLI (`crates/rocketmq-dedup-cli`, binary `rocketmq-dedup`) is built on it.
//!
//! ```no_run
//! # async fn run() -> Result<(), rocketmq_dedup::StoreError> {
//! use rocketmq_dedup::record_key::{KeyParts, RecordKey};
//! use rocketmq_dedup::connect_admin;
//! use rocketmq_dedup::store::admin::RecordState;
//!
//! let store = connect_admin("redis://127.0.0.1:6379").await?;
//! let key = RecordKey::new(KeyParts { prefix: "dedup", namespace: "payments", topic: "Orders", tag: None, key: "o-42" });
//! match store.inspect(&key).await? {
//!     RecordState::Absent => println!("never processed, or expired"),
//!     RecordState::Consuming { owner, ttl_left } => println!("in flight ({owner:x}), {ttl_left:?} left"),
//!     RecordState::Consumed { ttl_left } => println!("processed; recognised for {ttl_left:?}"),
//! }
//! # Ok(()) }
//! ```

use std::time::Duration;

use futures::future::BoxFuture;

use crate::error::StoreError;
use crate::record_key::{RecordKey, RecordScope};

/// One record as the store holds it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordState {
    /// No record: never processed, released, or expired.
    Absent,
    /// Claimed by the owner token `owner`, for `ttl_left` more.
    Consuming {
        /// The owner token's value.
        owner: u64,
        /// Until the claim expires.
        ttl_left: Duration,
    },
    /// Processed; copies are recognised for `ttl_left` more.
    Consumed {
        /// Until the record expires.
        ttl_left: Duration,
    },
}

/// Live records in a scope (expired SQL rows not yet purged are not counted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordCounts {
    /// Records CONSUMING.
    pub consuming: u64,
    /// Records CONSUMED.
    pub consumed: u64,
    /// Expired rows waiting for the purge job (SQL stores).
    pub expired: u64,
    /// The server's memory in use, in bytes, where it says (Redis: `used_memory`, summed over
    /// a Cluster's masters).
    pub memory_bytes: Option<u64>,
    /// Redis: records hashes that outgrew the listpack encoding (a group above its expected
    /// rate): about four times the memory per record, until sweeps shrink them again.
    pub oversized_shards: Option<u64>,
}

/// The operator's view of a store. See the module docs.
pub trait RecordAdmin: Send + Sync {
    /// The record of `key` now.
    fn inspect<'a>(&'a self, key: &'a RecordKey) -> BoxFuture<'a, Result<RecordState, StoreError>>;

    /// Deletes the record of `key` (CONSUMING or CONSUMED), so that the next copy of its
    /// message is processed again; answers whether there was one.
    fn forget<'a>(&'a self, key: &'a RecordKey) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Counts the records in `scope`: a namespace, or one topic (and tag) in it.
    fn counts<'a>(
        &'a self,
        scope: &'a RecordScope<'a>,
    ) -> BoxFuture<'a, Result<RecordCounts, StoreError>>;

    /// Deletes expired records now, where the store keeps them (SQL); answers how many, or
    /// `None` when the store expires records itself (Redis).
    fn purge_expired(&self) -> BoxFuture<'_, Result<Option<u64>, StoreError>> {
        Box::pin(async { Ok(None) })
    }
}
