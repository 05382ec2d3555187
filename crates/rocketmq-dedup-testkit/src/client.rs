//! RocketMQ clients for tests: a client runtime, producers and push consumers set up for a
//! 2-core machine.

use std::sync::Arc;
use std::time::Duration;

use rocketmq_client_rust::{
    ClientConfig, ClientResult, ClientRuntime, ClientRuntimeConfig, DefaultMQProducer,
    DefaultMQPushConsumer, MQPushConsumer, MessageListenerConcurrently, SendResult,
    TelemetryHandle,
};
use rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere;
use rocketmq_model::common::message::message_single::Message;
use rocketmq_runtime::{RuntimeConfig, RuntimeOwner, ShutdownDeadline};

/// A RocketMQ client runtime (its own Tokio runtime, as rocketmq-client-rust 1.0.0 requires).
///
/// The blocking lane that runs listeners is widened so that several consumers of one
/// runtime do not overflow it (the 1.0.0 defaults admit 20 listener calls on 2 cores).
pub struct ClientEnv {
    owner: RuntimeOwner,
    runtime: Arc<ClientRuntime>,
}

impl std::fmt::Debug for ClientEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientEnv").finish_non_exhaustive()
    }
}

/// How a push consumer is set up.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    /// Name server address.
    pub namesrv: String,
    /// Consumer group.
    pub group: String,
    /// Topic (all tags).
    pub topic: String,
    /// Messages per listener call.
    pub batch: u32,
    /// Concurrent listener calls.
    pub threads: u32,
    /// Client instance name (unique per consumer in one process).
    pub instance: String,
}

impl ConsumerSpec {
    /// A consumer of `topic` in `group`, batch 1, 4 threads.
    pub fn new(namesrv: &str, group: &str, topic: &str) -> Self {
        ConsumerSpec {
            namesrv: namesrv.to_owned(),
            group: group.to_owned(),
            topic: topic.to_owned(),
            batch: 1,
            threads: 4,
            instance: crate::unique_name("consumer"),
        }
    }

    /// Sets the batch size.
    pub fn batch(mut self, batch: u32) -> Self {
        self.batch = batch;
        self
    }
}

impl ClientEnv {
    /// A client runtime named `scope`.
    pub fn new(scope: &str) -> ClientResult<Self> {
        Self::with_listener_timeout(scope, Duration::from_secs(120))
    }

    /// A client runtime whose consumers stop waiting for a listener call after `timeout` (the
    /// blocking lane's task timeout; rocketmq-client-rust 1.0.0 then sends the batch back
    /// while the listener still runs). The 1.0.0 default is 30 s.
    pub fn with_listener_timeout(scope: &str, timeout: Duration) -> ClientResult<Self> {
        let mut config = RuntimeConfig {
            thread_name: format!("rmq-{scope}"),
            max_blocking_threads: 64,
            ..Default::default()
        };
        let lane = &mut config.blocking_lane_policies.metadata_io;
        lane.max_concurrency = 32;
        lane.max_queue_depth = 1024;
        lane.queue_timeout = Duration::from_secs(60);
        lane.task_timeout = timeout;
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
        Ok(ClientEnv { owner, runtime })
    }

    /// The client runtime, for builders.
    pub fn client_runtime(&self) -> Arc<ClientRuntime> {
        self.runtime.clone()
    }

    /// A started producer.
    pub async fn producer(&self, namesrv: &str) -> ClientResult<DefaultMQProducer> {
        let mut producer = DefaultMQProducer::builder(self.client_runtime())
            .producer_group(crate::unique_name("producer"))
            .name_server_addr(namesrv.to_owned())
            .send_msg_timeout(5000u32)
            .retry_times_when_send_failed(2u32)
            .build();
        producer.start().await?;
        Ok(producer)
    }

    /// A started push consumer with `listener`, reading from the first offset.
    pub async fn consumer<L>(
        &self,
        spec: &ConsumerSpec,
        listener: L,
    ) -> ClientResult<DefaultMQPushConsumer>
    where
        L: MessageListenerConcurrently + Send + Sync + 'static,
    {
        let mut client_config = ClientConfig::default();
        client_config.set_instance_name(spec.instance.as_str().into());
        // Find new topics (the retry topic among them) within 10 s (the minimum), not 30 s.
        client_config.set_poll_name_server_interval(10_000);
        let mut consumer = DefaultMQPushConsumer::builder(self.client_runtime())
            .client_config(client_config)
            .name_server_addr(spec.namesrv.clone())
            .consumer_group(spec.group.clone())
            .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
            .consume_thread_min(spec.threads)
            .consume_thread_max(spec.threads)
            .consume_message_batch_max_size(spec.batch)
            .build();
        consumer.subscribe(spec.topic.as_str(), "*").await?;
        consumer.register_message_listener_concurrently(listener);
        consumer.start().await?;
        Ok(consumer)
    }

    /// Shuts the client runtime down (after its producers and consumers).
    pub async fn shutdown(self) {
        let _ = self.runtime.shutdown().await;
        let _ = self
            .owner
            .shutdown_tasks_until(ShutdownDeadline::after(Duration::from_secs(2)))
            .await;
        let _ = self.owner.shutdown_background();
    }
}

/// Sends `msg`, retrying for up to `patience` while the topic's route is being created.
pub async fn send_with_retry(
    producer: &DefaultMQProducer,
    msg: &Message,
    patience: Duration,
) -> ClientResult<SendResult> {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match producer.send_with_timeout(msg.clone(), 5000).await {
            Ok(Some(result)) => return Ok(result),
            Ok(None) | Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Ok(None) => {
                return Err(rocketmq_client_rust::ClientError::internal(
                    "send",
                    std::io::Error::other("no send result"),
                ))
            }
            Err(e) => return Err(e),
        }
    }
}
