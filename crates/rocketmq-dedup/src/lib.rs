//! Process each RocketMQ message once.
//!
//! RocketMQ delivers at least once: producer retries, lost consumer acks, rebalances and
//! `RECONSUME_LATER` all deliver copies. The dedup listeners wrap your [`DedupHandler`] in a
//! rocketmq-client-rust listener, claim each message's dedup key in a [`DedupStore`] and run
//! the handler at most once per key: [`DedupConcurrentListener`] (a copy that arrives while the
//! first is still being processed goes back through the retry topic and is acked once the
//! first succeeded) and [`DedupOrderlyListener`] (the queue is suspended instead, so order
//! holds).
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
//! // consumer.register_message_listener_concurrently(listener.clone());
//! // … and after consumer.shutdown():
//! listener.shutdown(std::time::Duration::from_secs(5)).await;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! At the root: the listeners ([`DedupConcurrentListener`], [`DedupOrderlyListener`]) and
//! their [`DedupListenerBuilder`] (over a store, [`StoreBacked`], or an inbox); the
//! [`DedupHandler`] trait users implement, [`handler_fn`] and [`WithKey`]; dedup keys
//! ([`DedupKey`], [`KeyStrategy`]: unique id, KEYS, JSON field, tag, closure); the settings'
//! enums ([`StoreErrorPolicy`], [`KeyFallback`]); per-message [`Decision`]s, counters and
//! metrics ([`DedupStats`]); what a shutdown finished ([`ShutdownReport`]); errors by
//! operation ([`StoreError`], [`ConfigError`], [`KeyError`]); every store opened by URL
//! ([`connect`], [`connect_admin`]). Modules:
//! - [`listener`][]: the two kinds of one [`DedupListener`](listener::DedupListener): thin
//!   adapters that map the engine's decisions to each client status.
//! - [`client`][]: workarounds for rocketmq-client-rust 1.0.0, grouped:
//!   [`ConsumerRuntime`](client::ConsumerRuntime), the client runtime a consumer app needs (a
//!   widened listener lane, a bounded shutdown), and
//!   [`check_topic_route`](client::check_topic_route), a start-up check of a topic's route that
//!   names the cause the client hides (Apache RocketMQ 4.x).
//! - [`record_key`][]: the collision-free layout of store keys, built from named parts
//!   ([`KeyParts`](record_key::KeyParts)).
//! - [`store`][]: the [`DedupStore`] trait, [`MemoryStore`](store::MemoryStore),
//!   [`RedisStore`](store::RedisStore) and [`JavaKeys`](store::JavaKeys) (the Redis store
//!   beside the Java library's keys), the operator's [`RecordAdmin`](store::admin::RecordAdmin)
//!   (and, with feature `test-util`, the store contract suite and model check).
//! - `sql` (features `mysql`, `postgres`): the SQL stores over the `t_rocketmq_dedup` table
//!   (`sql::mysql`, `sql::postgres`), and `inbox`: the transactional inbox, whose handler
//!   writes in the record's transaction.
//! - `testing` (feature `test-util`): build messages and record keys in tests; a store that
//!   fails on purpose; what tests read off a Redis store (`RedisStoreProbe`).
//!
//! # What is guaranteed
//! With a shared store (Redis, or a SQL table), the handler runs at most once per key while the record lives
//! (record TTL, 24 h by default), except: a consumer killed after the handler's effect and
//! before its commit leaves a claim that expires, and the redelivered copy runs again; and with
//! [`StoreErrorPolicy::FailOpen`], messages processed during an outage are not deduplicated.
//! Nothing is acked unprocessed under the default fail-closed policy.

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]

mod builder;
pub mod client;
mod config;
mod engine;
mod error;
mod handler;
#[cfg(feature = "sql")]
pub mod inbox;
mod key;
mod lease;
pub mod listener;
mod listener_runtime;
pub mod record_key;
mod shutdown;
#[cfg(feature = "sql")]
pub mod sql;
mod stats;
pub mod store;
mod store_url;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;

pub use builder::{DedupListenerBuilder, Processing, StoreBacked};
pub use config::{KeyFallback, StoreErrorPolicy};
pub use error::{ConfigError, HandlerError, KeyError, StoreError, StoreOperation};
pub use handler::{handler_fn, Async, Blocking, DedupHandler, HandlerFn, MessageFn, WithKey};
pub use key::{unique_id, DedupKey, KeyStrategy};
pub use listener::{DedupConcurrentListener, DedupOrderlyListener};
pub use shutdown::ShutdownReport;
pub use stats::{Decision, DedupStats, Event};
pub use store::DedupStore;
pub use store_url::{connect, connect_admin};
