//! [`ConsumerRuntime`]: the RocketMQ client runtime a consumer app needs around a dedup
//! listener with rocketmq-client-rust 1.0.0.
//!
//! The client requires an explicit runtime (`ClientRuntime` on a `RuntimeOwner`), and two of
//! its defaults hurt a dedup consumer:
//! - Listener calls run on the runtime's blocking lane, which admits `4 × cores` running and
//!   `8 × cores` queued calls by default, about as many as one consumer's default threads; a
//!   second consumer, or an orderly one, overflows it, and the client then sends messages back
//!   as if the listener had failed. The lane is widened here.
//! - Shutting the client runtime down waits out its whole deadline (30 s) in 1.0.0: some task
//!   never stops by itself. The deadline is bounded here.
//!
//! ```no_run
//! use rocketmq_client_rust::{DefaultMQPushConsumer, MQPushConsumer};
//! use rocketmq_dedup::client::ConsumerRuntime;
//!
//! # async fn run(listener: rocketmq_dedup::DedupConcurrentListener) -> Result<(), Box<dyn std::error::Error>> {
//! let runtime = ConsumerRuntime::new("payments")?;
//! let mut consumer = DefaultMQPushConsumer::builder(runtime.client_runtime())
//!     .name_server_addr("127.0.0.1:9876")
//!     .consumer_group("payments")
//!     .consume_thread_min(4u32)
//!     .consume_thread_max(4u32)
//!     .build();
//! consumer.subscribe("Orders", "*").await?;
//! consumer.register_message_listener_concurrently(listener.clone());
//! consumer.start().await?;
//! // … until it is time to stop:
//! consumer.shutdown().await;
//! listener.shutdown(std::time::Duration::from_secs(5)).await;
//! runtime.shutdown().await;
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;

use rocketmq_client_rust::{ClientError, ClientRuntime, ClientRuntimeConfig, TelemetryHandle};
use rocketmq_runtime::{RuntimeConfig, RuntimeOwner, ShutdownDeadline};

/// A RocketMQ client runtime for consumers with dedup listeners; see the module docs.
/// Producers can share it.
pub struct ConsumerRuntime {
    owner: RuntimeOwner,
    runtime: Arc<ClientRuntime>,
    shutdown_timeout: Duration,
}

impl std::fmt::Debug for ConsumerRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerRuntime").finish_non_exhaustive()
    }
}

/// Configures a [`ConsumerRuntime`].
#[derive(Debug, Clone)]
pub struct ConsumerRuntimeBuilder {
    name: String,
    listener_calls: usize,
    queued_listener_calls: usize,
    listener_timeout: Duration,
    shutdown_timeout: Duration,
}

impl ConsumerRuntimeBuilder {
    /// Default listener calls that run at once, across the runtime's consumers.
    pub(crate) const DEFAULT_LISTENER_CALLS: usize = 32;
    /// Default listener calls that may wait for a thread.
    pub(crate) const DEFAULT_QUEUED_LISTENER_CALLS: usize = 1024;
    /// Default time the client waits for one listener call before it sends the batch back.
    pub(crate) const DEFAULT_LISTENER_TIMEOUT: Duration = Duration::from_secs(120);
    /// Default bound of the client runtime's shutdown.
    pub(crate) const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);

    /// Listener calls that run at once, across the runtime's consumers (default
    /// 32): at least the sum of their `consume_thread_min`.
    pub fn listener_calls(mut self, n: usize) -> Self {
        self.listener_calls = n;
        self
    }

    /// How long the client waits for one listener call before it sends the batch back
    /// (default 120 s; 1.0.0's own is 30 s). The listener's claim
    /// stays renewed meanwhile, so the copy it sends back is deferred, never run twice.
    pub fn listener_timeout(mut self, timeout: Duration) -> Self {
        self.listener_timeout = timeout;
        self
    }

    /// The bound of [`ConsumerRuntime::shutdown`] (default 2 s).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Starts the runtime (its own multi-thread Tokio runtime).
    pub fn build(self) -> Result<ConsumerRuntime, ClientError> {
        let mut config = RuntimeConfig {
            thread_name: format!("rmq-{}", self.name),
            max_blocking_threads: (self.listener_calls * 2).clamp(8, 512),
            ..Default::default()
        };
        let lane = &mut config.blocking_lane_policies.metadata_io;
        lane.max_concurrency = self.listener_calls;
        lane.max_queue_depth = self.queued_listener_calls;
        lane.queue_timeout = Duration::from_secs(60);
        lane.task_timeout = self.listener_timeout;
        let owner = RuntimeOwner::plan(config)
            .map_err(|e| ClientError::internal("plan the client runtime", e))?
            .build()
            .map_err(|e| ClientError::internal("build the client runtime", e))?;
        let runtime = ClientRuntime::try_new(
            owner.root_context().component("client"),
            ClientRuntimeConfig {
                shutdown_timeout: self.shutdown_timeout,
                ..ClientRuntimeConfig::default()
            },
            TelemetryHandle::noop(),
        )?;
        Ok(ConsumerRuntime {
            owner,
            runtime,
            shutdown_timeout: self.shutdown_timeout,
        })
    }
}

impl ConsumerRuntime {
    /// A builder for a runtime whose threads are named after `name`.
    pub fn builder(name: impl Into<String>) -> ConsumerRuntimeBuilder {
        ConsumerRuntimeBuilder {
            name: name.into(),
            listener_calls: ConsumerRuntimeBuilder::DEFAULT_LISTENER_CALLS,
            queued_listener_calls: ConsumerRuntimeBuilder::DEFAULT_QUEUED_LISTENER_CALLS,
            listener_timeout: ConsumerRuntimeBuilder::DEFAULT_LISTENER_TIMEOUT,
            shutdown_timeout: ConsumerRuntimeBuilder::DEFAULT_SHUTDOWN_TIMEOUT,
        }
    }

    /// A runtime with the defaults.
    pub fn new(name: impl Into<String>) -> Result<Self, ClientError> {
        Self::builder(name).build()
    }

    /// The client runtime every producer and consumer builder takes.
    pub fn client_runtime(&self) -> Arc<ClientRuntime> {
        self.runtime.clone()
    }

    /// Shuts the runtime down, within its shutdown timeout; call it after the consumers' and
    /// producers' own shutdown.
    pub async fn shutdown(self) {
        let _ = self.runtime.shutdown().await;
        let deadline = ShutdownDeadline::after(self.shutdown_timeout);
        let _ = self.owner.shutdown_tasks_until(deadline).await;
        let _ = self.owner.shutdown_background();
    }
}
