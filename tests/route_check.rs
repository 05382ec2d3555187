//! The start-up route check against the real (embedded) broker: a topic with a route answers
//! its queues; a topic without one is a clear error, not an idle consumer.

mod common;

use std::sync::Arc;

use common::*;
use rocketmq_dedup::route_check::{check_topic_route, RouteCheckError};
use rocketmq_dedup::store::MemoryStore;
use rocketmq_dedup::DedupConcurrentListener;
use rocketmq_dedup_testkit::{unique_name, ClientEnv, ConsumerSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_started_consumer_reads_its_topics_route() {
    init_tracing();
    let stack = stack();
    let client = ClientEnv::new("route-check").unwrap();
    let (topic, group) = (unique_name("Orders"), unique_name("payments"));
    let producer = client.producer(&stack.namesrv_addr()).await.unwrap();
    send(&producer, &order(&topic, "order-1")).await;
    let listener = DedupConcurrentListener::builder(Arc::new(OrderHandler::default()))
        .namespace(group.as_str())
        .store(MemoryStore::new())
        .build()
        .unwrap();
    let spec = ConsumerSpec::new(&stack.namesrv_addr(), &group, &topic);
    let mut consumer = client.consumer(&spec, listener).await.unwrap();
    let queues = check_topic_route(&mut consumer, &topic).await;
    assert!(matches!(queues, Ok(n) if n > 0), "{queues:?}");
    let missing = check_topic_route(&mut consumer, &unique_name("NoSuchTopic")).await;
    consumer.shutdown().await;
    client.shutdown().await;
    match missing {
        Err(RouteCheckError::NoRoute { .. } | RouteCheckError::Failed { .. }) => {}
        other => panic!("a topic without a route is an error, not a decode failure: {other:?}"),
    }
}
