//! Programs that run rocketmq-dedup end to end against servers they start on 127.0.0.1:
//!
//! - `demo`: a local RocketMQ name server and broker, a producer that sends orders with
//!   deliberate duplicates, and a deduplicating consumer that charges each order once;
//! - `chaos`: three consumer processes of one group sharing Redis while consumers, Redis and
//!   the broker are killed and restarted; the ledger of effects is checked at the end.
//!
//! They are binaries of this crate rather than examples because they start and kill servers
//! through the testkit; the examples show only what a consumer app itself needs.

pub mod chaos;

/// The order-payment domain shared with the examples.
#[path = "../../../examples/support/orders.rs"]
pub mod orders;
