//! Producer-side duplicates through a real broker: the same business key sent as several
//! messages, and the same message sent again with its UNIQ_KEY (a producer retry after a lost
//! ack). The handler's effect happens once per key, with either store.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use rocketmq_dedup::store::{MemoryStore, RedisStore};
use rocketmq_dedup::{Decision, DedupConcurrentListener, DedupStore};
use rocketmq_dedup_testkit::{unique_name, ClientEnv, ConsumerSpec, RedisServer};

const ORDERS: usize = 40;

async fn producer_duplicates_are_processed_once(store: impl DedupStore, batch: u32) {
    init_tracing();
    let stack = stack();
    let client = ClientEnv::new("producer-dups").unwrap();
    let topic = unique_name("Orders");
    let group = unique_name("payments");
    let producer = client.producer(&stack.namesrv_addr()).await.unwrap();

    // Every order once; every 4th order twice more as new messages (business duplicates);
    // every 5th order again with the same UNIQ_KEY (a producer retry).
    let mut sent = 0;
    for i in 0..ORDERS {
        let msg = order(&topic, &format!("order-{i}"));
        let uniq = send(&producer, &msg).await;
        sent += 1;
        if i % 4 == 0 {
            for _ in 0..2 {
                send(&producer, &msg).await;
                sent += 1;
            }
        }
        if i % 5 == 0 {
            send(&producer, &resend(&msg, &uniq)).await;
            sent += 1;
        }
    }

    let handler = Arc::new(OrderHandler::default());
    let listener = DedupConcurrentListener::builder(handler.clone())
        .namespace(group.as_str())
        .store(store)
        .build()
        .unwrap();
    let spec = ConsumerSpec::new(&stack.namesrv_addr(), &group, &topic).batch(batch);
    let mut consumer = client.consumer(&spec, listener.clone()).await.unwrap();

    let stats = listener.stats().clone();
    let all_acked = wait_until(Duration::from_secs(60), || {
        stats.messages_acked() >= sent as u64
    })
    .await;
    // Late redeliveries would show up now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    rocketmq_client_rust::MQPushConsumer::shutdown(&mut consumer).await;
    client.shutdown().await;

    assert!(
        all_acked,
        "not every message was acked: {}",
        stats.summary()
    );
    assert_eq!(
        stats.messages_acked() as usize,
        sent,
        "each message acked once: {}",
        stats.summary()
    );
    assert_eq!(handler.ledger.keys(), ORDERS, "every order took effect");
    assert_eq!(
        handler.ledger.repeated(),
        vec![],
        "no order took effect twice"
    );
    assert_eq!(handler.ledger.total() as usize, ORDERS);
    assert_eq!(
        stats.decisions(Decision::Processed) as usize,
        ORDERS,
        "{}",
        stats.summary()
    );
    // Every copy was recognised; with batches, messages of a retried batch come back as
    // duplicates too, so there can be more.
    assert!(
        stats.decisions(Decision::Duplicate) as usize >= sent - ORDERS,
        "{}",
        stats.summary()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_batch_1() {
    producer_duplicates_are_processed_once(MemoryStore::new(), 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_batch_16() {
    let redis = RedisServer::start().unwrap();
    let store = RedisStore::builder(redis.url()).connect().await.unwrap();
    producer_duplicates_are_processed_once(store, 16).await;
}
