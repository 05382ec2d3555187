//! RocketMQ clients for tests: a client runtime, producers and push consumers set up for a
//! 2-core machine.

use std::sync::Arc;
use std::time::Duration;

use rocketmq_client_rust::{
    ClientConfig, ClientResult, ClientRuntime, DefaultMQProducer, DefaultMQPushConsumer,
    MQPushConsumer, MessageListenerConcurrently, MessageListenerOrderly, SendResult,
};
use rocketmq_dedup::client::ConsumerRuntime;
use rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere;
use rocketmq_model::common::message::message_single::Message;

/// A RocketMQ client runtime for tests: the library's
/// [`ConsumerRuntime`], with producers and consumers
/// set up for a 2-core machine.
pub struct ClientEnv {
    runtime: ConsumerRuntime,
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
        Ok(ClientEnv {
            runtime: ConsumerRuntime::new(scope)?,
        })
    }

    /// A client runtime whose consumers stop waiting for a listener call after `timeout` (the
    /// blocking lane's task timeout; rocketmq-client-rust 1.0.0 then sends the batch back
    /// while the listener still runs). The 1.0.0 default is 30 s.
    pub fn with_listener_timeout(scope: &str, timeout: Duration) -> ClientResult<Self> {
        let runtime = ConsumerRuntime::builder(scope)
            .listener_timeout(timeout)
            .build()?;
        Ok(ClientEnv { runtime })
    }

    /// The client runtime, for builders.
    pub fn client_runtime(&self) -> Arc<ClientRuntime> {
        self.runtime.client_runtime()
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

    /// A started push consumer with a concurrent `listener`, reading from the first offset.
    pub async fn consumer<L>(
        &self,
        spec: &ConsumerSpec,
        listener: L,
    ) -> ClientResult<DefaultMQPushConsumer>
    where
        L: MessageListenerConcurrently + Send + Sync + 'static,
    {
        let mut consumer = self.consumer_for(spec).await?;
        consumer.register_message_listener_concurrently(listener);
        consumer.start().await?;
        Ok(consumer)
    }

    /// A started push consumer with an orderly `listener`, reading from the first offset.
    pub async fn orderly_consumer<L>(
        &self,
        spec: &ConsumerSpec,
        listener: L,
    ) -> ClientResult<DefaultMQPushConsumer>
    where
        L: MessageListenerOrderly + Send + Sync + 'static,
    {
        let mut consumer = self.consumer_for(spec).await?;
        consumer.register_message_listener_orderly(listener);
        consumer.start().await?;
        Ok(consumer)
    }

    /// A subscribed consumer, not started.
    async fn consumer_for(&self, spec: &ConsumerSpec) -> ClientResult<DefaultMQPushConsumer> {
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
        Ok(consumer)
    }

    /// Shuts the client runtime down (after its producers and consumers).
    pub async fn shutdown(self) {
        self.runtime.shutdown().await;
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
