//! Workarounds for rocketmq-client-rust 1.0.0: what a consumer app needs around the client
//! that the client itself does not give.
//!
//! - [`ConsumerRuntime`]: the client runtime with a listener lane wide enough
//!   for dedup listeners and a bounded shutdown.
//! - [`check_topic_route`]: a start-up check of a topic's route, asked of the
//!   name server directly, that tells an unreachable name server, a topic without a route and
//!   a route this client cannot read (Apache RocketMQ 4.x) apart, where the client says "topic
//!   not exist" to all three.
//!
//! Each goes when the client does it itself.

pub mod route_check;
pub mod runtime;

pub use route_check::{
    check_topic_route, explain_client_error, Apache4xRoute, RouteCheckError, TopicRoute,
};
pub use runtime::{ConsumerRuntime, ConsumerRuntimeBuilder};
