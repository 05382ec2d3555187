//! RocketMQ 5's POP consumption against the embedded rocketmq-rust 1.0.0 broker: the group is
//! switched to POP on the broker (`SetMessageRequestMode`), and a push consumer with
//! `client_rebalance(false)` takes its assignment from the broker.
//!
//! Ignored: with rocketmq-rust 1.0.0 (client and broker) no message reaches the listener. The
//! broker takes the mode and assigns a POP queue (`queueId=-1`), but every pop request fails
//! (client: `WARN execute the pop request exception`; broker: `WARN reject invalid timer
//! message: timer delay exceeds the configured maximum`), 0 of 20 in 40 s. Run it again on a
//! newer broker with `cargo nextest run --run-ignored only -E 'binary(pop)'`; see
//! docs/brokers.md.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use rocketmq_client_rust::{DefaultMQAdminExt, DefaultMQPushConsumer, MQPushConsumer, TopicAdmin};
use rocketmq_dedup::store::MemoryStore;
use rocketmq_dedup::DedupConcurrentListener;
use rocketmq_dedup_testkit::{unique_name, ClientEnv};
use rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere;
use rocketmq_model::common::message::message_enum::MessageRequestMode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "rocketmq-rust 1.0.0's broker fails every pop request (see the module docs)"]
async fn a_pop_consumer_of_the_embedded_broker() {
    init_tracing();
    let stack = stack();
    let Some(broker) = stack.broker_addr() else {
        return; // a running stack: its broker's address is not known here
    };
    let client = ClientEnv::new("pop").unwrap();
    let (topic, group) = (unique_name("PopOrders"), unique_name("pop-payments"));
    let producer = client.producer(&stack.namesrv_addr()).await.unwrap();
    for i in 0..20 {
        send(&producer, &order(&topic, &format!("order-{i}"))).await;
    }

    let mut admin = DefaultMQAdminExt::new(client.client_runtime());
    admin.set_namesrv_addr(stack.namesrv_addr().as_str());
    admin.start().await.unwrap();
    let mode = admin
        .set_message_request_mode(
            broker.as_str().into(),
            topic.as_str().into(),
            group.as_str().into(),
            MessageRequestMode::Pop,
            1,
            5_000,
        )
        .await;
    eprintln!("pop probe: SetMessageRequestMode answered {mode:?}");

    let handler = Arc::new(OrderHandler::default());
    let listener = DedupConcurrentListener::builder(handler.clone())
        .namespace(group.as_str())
        .store(MemoryStore::new())
        .build()
        .unwrap();
    let mut consumer = DefaultMQPushConsumer::builder(client.client_runtime())
        .name_server_addr(stack.namesrv_addr())
        .consumer_group(group.as_str())
        .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
        .consume_thread_min(4u32)
        .consume_thread_max(4u32)
        .client_rebalance(false)
        .pop_invisible_time(10_000u64)
        .build();
    consumer.subscribe(topic.as_str(), "*").await.unwrap();
    consumer.register_message_listener_concurrently(listener.clone());
    let started = consumer.start().await;
    eprintln!("pop probe: consumer start answered {started:?}");
    let all = wait_until(Duration::from_secs(40), || handler.ledger.keys() == 20).await;
    eprintln!(
        "pop probe: {} of 20 orders processed, {} runs, {}",
        handler.ledger.keys(),
        handler.runs.load(std::sync::atomic::Ordering::SeqCst),
        listener.stats().summary()
    );
    if !all {
        eprintln!("pop probe: broker log tail:\n{}", stack.broker_log_tail(60));
    }
    consumer.shutdown().await;
    listener.shutdown(Duration::from_secs(5)).await;
    admin.shutdown().await;
    client.shutdown().await;
    assert!(mode.is_ok(), "the broker takes the POP mode: {mode:?}");
    assert!(all, "every order processed in POP mode");
    assert!(handler.ledger.repeated().is_empty(), "each order once");
}
