//! The README's quick start, quoted there verbatim (`tests/readme.rs` checks): a consumer of
//! the topic `Orders` that charges each order once, its dedup records in Redis.
//!
//! ```sh
//! cargo run --example quick_start -- 127.0.0.1:9876 redis://127.0.0.1:6379
//! ```

use std::time::Duration;

use rocketmq_client_rust::{DefaultMQPushConsumer, MQPushConsumer};
use rocketmq_dedup::client::ConsumerRuntime;
use rocketmq_dedup::store::RedisStore;
use rocketmq_dedup::{
    DedupConcurrentListener, DedupHandler, DedupKey, HandlerError, KeyError, KeyStrategy,
};
use rocketmq_model::common::message::message_ext::MessageExt;

/// Your handler: runs once per order id, however many copies of the message arrive.
struct Payments;

impl DedupHandler for Payments {
    async fn handle(&self, msg: &MessageExt) -> Result<(), HandlerError> {
        let order: serde_json::Value = serde_json::from_slice(msg.body_slice())?;
        println!("charging order {}", order["orderId"]);
        Ok(())
    }

    // The dedup key: here the body's `orderId` (default: the message's unique id).
    fn dedup_key(&self, msg: &MessageExt) -> Result<DedupKey, KeyError> {
        KeyStrategy::json_pointer("/orderId").derive(msg)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let name_server = args.next().unwrap_or_else(|| "127.0.0.1:9876".into());
    let redis_url = args
        .next()
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into());

    // The listener: your handler, and where the dedup records live.
    let listener = DedupConcurrentListener::builder(Payments)
        .namespace("payments") // names the records: the consumer group, say
        .store(RedisStore::builder(redis_url).connect().await?)
        .build()?;

    // A RocketMQ push consumer, as rocketmq-client-rust builds it, with the listener.
    let runtime = ConsumerRuntime::new("payments")?;
    let mut consumer = DefaultMQPushConsumer::builder(runtime.client_runtime())
        .name_server_addr(name_server)
        .consumer_group("payments")
        .consume_thread_min(4u32)
        .consume_thread_max(4u32)
        .build();
    consumer.subscribe("Orders", "*").await?;
    consumer.register_message_listener_concurrently(listener.clone());
    Box::pin(consumer.start()).await?;

    // Until Ctrl-C; then the consumer first, the listener's last commits, the runtime.
    tokio::signal::ctrl_c().await?;
    consumer.shutdown().await;
    listener.shutdown(Duration::from_secs(5)).await;
    runtime.shutdown().await;
    Ok(())
}
