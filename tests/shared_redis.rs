//! Consumers sharing the Redis store: a Redis outage during consumption, and two consumers
//! of one group while queues rebalance between them.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use rocketmq_dedup::store::RedisStore;
use rocketmq_dedup::{Decision, DedupConcurrentListener};
use rocketmq_dedup_testkit::{unique_name, ClientEnv, ConsumerSpec, RedisOptions, RedisServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_acked_unprocessed_while_redis_is_down() {
    init_tracing();
    let stack = stack();
    let mut redis = RedisServer::start_local(RedisOptions {
        appendonly: true,
        ..Default::default()
    })
    .unwrap();
    let client = ClientEnv::new("outage").unwrap();
    let (topic, group) = (unique_name("Orders"), unique_name("payments"));
    let producer = client.producer(&stack.namesrv_addr()).await.unwrap();
    for i in 0..10 {
        send(&producer, &order(&topic, &format!("before-{i}"))).await;
    }
    let handler = Arc::new(OrderHandler::default());
    let store = RedisStore::builder(redis.url())
        .response_timeout(Duration::from_millis(300))
        .connect()
        .await
        .unwrap();
    let listener = DedupConcurrentListener::builder(handler.clone())
        .namespace(group.as_str())
        .store(store)
        .store_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let spec = ConsumerSpec::new(&stack.namesrv_addr(), &group, &topic);
    let mut consumer = client.consumer(&spec, listener.clone()).await.unwrap();
    let stats = listener.stats().clone();
    // The ack is counted after the commit, a moment after the effect: wait for both.
    assert!(
        wait_until(Duration::from_secs(60), || handler.ledger.keys() == 10
            && stats.messages_acked() == 10)
        .await,
        "{}",
        stats.summary()
    );

    // Redis goes away; new orders arrive.
    redis.kill();
    let acked_before = stats.messages_acked();
    for i in 0..10 {
        send(&producer, &order(&topic, &format!("during-{i}"))).await;
    }
    let refused = wait_until(Duration::from_secs(30), || {
        stats.decisions(Decision::StoreUnavailable) >= 10
    })
    .await;
    assert!(refused, "{}", stats.summary());
    assert_eq!(
        stats.messages_acked(),
        acked_before,
        "nothing acked while the store is down"
    );
    assert_eq!(
        handler.ledger.keys(),
        10,
        "no handler ran while the store is down"
    );

    // Redis returns, with its records (append-only file); the deferred orders are processed.
    redis.restart().unwrap();
    let done = wait_until(Duration::from_secs(90), || handler.ledger.keys() == 20).await;
    // Redeliver the first orders too: they are recognised after the restart.
    for i in 0..10 {
        send(&producer, &order(&topic, &format!("before-{i}"))).await;
    }
    let dups = wait_until(Duration::from_secs(30), || {
        stats.decisions(Decision::Duplicate) >= 10
    })
    .await;
    consumer.shutdown().await;
    client.shutdown().await;

    assert!(done && dups, "{}", stats.summary());
    assert_eq!(handler.ledger.repeated(), vec![], "{}", stats.summary());
    assert_eq!(handler.ledger.total(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_of_one_group_process_each_key_once_across_rebalances() {
    init_tracing();
    let stack = stack();
    let redis = RedisServer::start().unwrap();
    let (topic, group) = (unique_name("Orders"), unique_name("payments"));
    let client_a = ClientEnv::new("consumer-a").unwrap();
    let client_b = ClientEnv::new("consumer-b").unwrap();
    let producer = client_a.producer(&stack.namesrv_addr()).await.unwrap();
    const ORDERS: usize = 150;
    // 20% of the orders are sent twice, as separate messages.
    let mut sent = 0;
    let mut send_orders = |range: std::ops::Range<usize>| {
        let producer = &producer;
        let topic = topic.clone();
        let mut batch = Vec::new();
        for i in range {
            batch.push(order(&topic, &format!("order-{i}")));
            if i % 5 == 0 {
                batch.push(order(&topic, &format!("order-{i}")));
            }
        }
        sent += batch.len();
        async move {
            for msg in batch {
                send(producer, &msg).await;
            }
        }
    };
    send_orders(0..50).await;

    let ledger = Arc::new(Ledger::default());
    let listener_for = |client: &ClientEnv| {
        let _ = client;
        let handler = Arc::new(OrderHandler {
            ledger: ledger.clone(),
            slow: (0..ORDERS)
                .map(|i| (format!("order-{i}"), Duration::from_millis(20)))
                .collect(),
            ..Default::default()
        });
        (handler, redis.url().to_owned())
    };
    let (handler_a, url) = listener_for(&client_a);
    let listener_a = DedupConcurrentListener::builder(handler_a)
        .namespace(group.as_str())
        .store(RedisStore::builder(url.as_str()).connect().await.unwrap())
        .build()
        .unwrap();
    let (handler_b, _) = listener_for(&client_b);
    let listener_b = DedupConcurrentListener::builder(handler_b)
        .namespace(group.as_str())
        .store(RedisStore::builder(url.as_str()).connect().await.unwrap())
        .build()
        .unwrap();
    let spec = ConsumerSpec::new(&stack.namesrv_addr(), &group, &topic);
    let mut consumer_a = client_a.consumer(&spec, listener_a.clone()).await.unwrap();
    send_orders(50..100).await;
    // B joins mid-stream: the queues rebalance between A and B.
    let spec_b = ConsumerSpec::new(&stack.namesrv_addr(), &group, &topic);
    let mut consumer_b = client_b
        .consumer(&spec_b, listener_b.clone())
        .await
        .unwrap();
    send_orders(100..ORDERS).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // A leaves: B takes all queues, including offsets A processed but may not have committed.
    consumer_a.shutdown().await;
    // Every effect, and every message acked (the ack is counted after the commit).
    let done = wait_until(Duration::from_secs(90), || {
        let acked = listener_a.stats().messages_acked() + listener_b.stats().messages_acked();
        ledger.keys() == ORDERS && acked as usize >= sent
    })
    .await;
    // Late redeliveries would show up now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    consumer_b.shutdown().await;
    client_a.shutdown().await;
    client_b.shutdown().await;

    let (a, b) = (listener_a.stats(), listener_b.stats());
    let summary = format!("A: {} | B: {}", a.summary(), b.summary());
    assert!(done, "{summary}");
    assert_eq!(ledger.repeated(), vec![], "{summary}");
    assert_eq!(ledger.total() as usize, ORDERS, "{summary}");
    let acked = a.messages_acked() + b.messages_acked();
    assert!(
        acked as usize >= sent,
        "every message acked at least once: {acked} of {sent}; {summary}"
    );
    assert!(
        b.decisions(Decision::Processed) > 0,
        "B took part: {summary}"
    );
}
