//! The RocketMQ client setup every example needs: rocketmq-client-rust 1.0.0 takes an explicit
//! client runtime, which a `RuntimeOwner` provides.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use rocketmq_client_rust::{ClientResult, ClientRuntime, ClientRuntimeConfig, TelemetryHandle};
use rocketmq_runtime::{RuntimeConfig, RuntimeOwner, ShutdownDeadline};

/// The client's own Tokio runtime and the client runtime on it.
pub struct Client {
    pub owner: RuntimeOwner,
    pub runtime: Arc<ClientRuntime>,
}

impl Client {
    pub fn new(name: &str) -> ClientResult<Self> {
        let mut config = RuntimeConfig {
            thread_name: name.to_owned(),
            max_blocking_threads: 32,
            ..Default::default()
        };
        // Listeners run on the metadata_io blocking lane. Its 1.0.0 defaults on 2 cores
        // (4 running + 16 queued) overflow easily; a rejected admission sends the batch back.
        let lane = &mut config.blocking_lane_policies.metadata_io;
        lane.max_concurrency = 16;
        lane.max_queue_depth = 1024;
        lane.queue_timeout = Duration::from_secs(60);
        lane.task_timeout = Duration::from_secs(120);
        let owner = RuntimeOwner::plan(config)
            .map_err(|e| rocketmq_client_rust::ClientError::internal("plan client runtime", e))?
            .build()
            .map_err(|e| rocketmq_client_rust::ClientError::internal("build client runtime", e))?;
        let runtime = ClientRuntime::try_new(
            owner.root_context().component("client"),
            // The default 30 s is spent in full at every shutdown: some 1.0.0 client task
            // does not stop by itself, so the deadline always runs out.
            ClientRuntimeConfig {
                shutdown_timeout: Duration::from_secs(2),
                ..ClientRuntimeConfig::default()
            },
            TelemetryHandle::noop(),
        )?;
        Ok(Client { owner, runtime })
    }

    /// Shuts down after the producers and consumers.
    pub async fn shutdown(self) {
        let _ = self.runtime.shutdown().await;
        let _ = self
            .owner
            .shutdown_tasks_until(ShutdownDeadline::after(Duration::from_secs(2)))
            .await;
        let _ = self.owner.shutdown_background();
    }
}
