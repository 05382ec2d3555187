//! The chaos run: three consumer processes of one group share a dedup store while a producer
//! sends orders with 20% duplicates, and the run SIGKILLs and restarts consumers, the store's
//! server and the broker. The verdict comes from a ledger of effects and acks.
//!
//! - [`produce`]: the paced producer and its duplicates.
//! - [`consumer`]: one consumer process (the Redis store, or a database inbox).
//! - [`ledger`]: the ledger and the report read from it.
//! - [`driver`]: servers, faults, and the verdict.

pub mod consumer;
pub mod driver;
pub mod ledger;
pub mod produce;
