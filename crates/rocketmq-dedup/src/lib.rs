//! Process each RocketMQ message once.
//!
//! RocketMQ delivers at least once: producer retries, lost consumer acks, rebalances and
//! `RECONSUME_LATER` all deliver copies. [`DedupConcurrentListener`] wraps your
//! [`DedupHandler`] in a rocketmq-client-rust `MessageListenerConcurrently`, claims each
//! message's dedup key in a [`DedupStore`] and runs the handler at most once per key; a copy
//! that arrives while the first is still being processed goes back through the retry topic
//! and is acked once the first succeeded.
//!
//! ```no_run
//! use rocketmq_dedup::{DedupConcurrentListener, DedupHandler, DedupKey, HandlerError, KeyError, KeyStrategy};
//! use rocketmq_dedup::store::RedisStore;
//! use rocketmq_model::common::message::message_ext::MessageExt;
//!
//! struct Payments;
//!
//! impl DedupHandler for Payments {
//!     async fn handle(&self, msg: &MessageExt) -> Result<(), HandlerError> {
//!         // charge the order once
//!         Ok(())
//!     }
//!     fn dedup_key(&self, msg: &MessageExt) -> Result<DedupKey, KeyError> {
//!         KeyStrategy::json_pointer("/orderId").derive(msg)
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let listener = DedupConcurrentListener::builder(Payments)
//!     .namespace("payment-consumer")
//!     .store(RedisStore::builder("redis://127.0.0.1:6379").connect().await?)
//!     .build()?;
//! // consumer.register_message_listener_concurrently(listener);
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`listener`][]: [`DedupConcurrentListener`] and its builder: the per-batch state machine.
//! - [`handler`][]: the [`DedupHandler`] trait users implement.
//! - [`key`][]: dedup key strategies ([`KeyStrategy`]): unique id, KEYS, JSON field, tag, closure.
//! - [`record_key`][]: the collision-free layout of store keys.
//! - [`store`][]: the [`DedupStore`] trait, [`MemoryStore`](store::MemoryStore),
//!   [`RedisStore`](store::RedisStore) and the store [`contract`](store::contract) suite.
//! - [`config`][]: policies ([`StoreErrorPolicy`], [`KeyFallback`]) and defaults.
//! - [`stats`][]: per-message [`Decision`]s, counters and metrics.
//! - [`error`][]: errors by operation.
//! - [`testing`][]: build messages in tests.
//!
//! # What is guaranteed
//! With a shared store (Redis), the handler runs at most once per key while the record lives
//! (record TTL, 24 h by default), except: a consumer killed after the handler's effect and
//! before its commit leaves a claim that expires, and the redelivered copy runs again; and with
//! [`StoreErrorPolicy::FailOpen`], messages processed during an outage are not deduplicated.
//! Nothing is acked unprocessed under the default fail-closed policy.

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]

pub mod config;
pub mod error;
pub mod handler;
pub mod key;
pub mod listener;
pub mod record_key;
mod runtime;
pub mod stats;
pub mod store;
pub mod testing;

pub use config::{DedupConfig, KeyFallback, StoreErrorPolicy};
pub use error::{ConfigError, HandlerError, KeyError, StoreError, StoreOperation};
pub use handler::{handler_fn, DedupHandler, HandlerFn};
pub use key::{DedupKey, KeyStrategy};
pub use listener::{DedupConcurrentListener, DedupListenerBuilder, DECISION_TARGET};
pub use stats::{Decision, DedupStats, Event};
pub use store::DedupStore;
