//! Copies that come back through the retry topic: a duplicate that arrives while the first
//! copy is still being processed, and a handler that fails before it succeeds.

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use rocketmq_dedup::store::RedisStore;
use rocketmq_dedup::{Decision, DedupConcurrentListener};
use rocketmq_dedup_testkit::{unique_name, ClientEnv, ConsumerSpec, RedisServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_flight_duplicate_is_deferred_through_the_retry_topic_then_acked() {
    init_tracing();
    let stack = stack();
    let redis = RedisServer::start().unwrap();
    let client = ClientEnv::new("in-flight").unwrap();
    let (topic, group) = (unique_name("Orders"), unique_name("payments"));
    let producer = client.producer(&stack.namesrv_addr()).await.unwrap();

    // The first copy's handler takes 6 s; the second copy (same UNIQ_KEY, as a producer
    // retry sends it) arrives while it runs.
    let slow = order(&topic, "slow-order");
    let uniq = send(&producer, &slow).await;
    let handler = Arc::new(OrderHandler {
        slow: HashMap::from([("slow-order".to_owned(), Duration::from_secs(6))]),
        ..Default::default()
    });
    let store = RedisStore::builder(redis.url()).connect().await.unwrap();
    let listener = DedupConcurrentListener::builder(handler.clone())
        .namespace(group.as_str())
        .store(store)
        .build()
        .unwrap();
    let spec = ConsumerSpec::new(&stack.namesrv_addr(), &group, &topic);
    let mut consumer = client.consumer(&spec, listener.clone()).await.unwrap();
    let stats = listener.stats().clone();
    assert!(
        wait_until(Duration::from_secs(30), || handler
            .runs
            .load(Ordering::SeqCst)
            == 1)
        .await
    );
    send(&producer, &resend(&slow, &uniq)).await;

    let done = wait_until(Duration::from_secs(60), || stats.messages_acked() >= 2).await;
    consumer.shutdown().await;
    client.shutdown().await;

    assert!(done, "both copies acked: {}", stats.summary());
    assert_eq!(handler.ledger.count("slow-order"), 1, "{}", stats.summary());
    assert_eq!(
        handler.runs.load(Ordering::SeqCst),
        1,
        "the handler never ran for the copy"
    );
    assert!(
        stats.decisions(Decision::DeferredInFlight) >= 1,
        "the copy met the claim: {}",
        stats.summary()
    );
    assert_eq!(
        stats.decisions(Decision::Duplicate),
        1,
        "it came back and was acked: {}",
        stats.summary()
    );
    assert_eq!(handler.max_concurrent_same_key.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_handler_is_retried_until_its_effect_happens_once() {
    init_tracing();
    let stack = stack();
    let redis = RedisServer::start().unwrap();
    let client = ClientEnv::new("failures").unwrap();
    let (topic, group) = (unique_name("Orders"), unique_name("payments"));
    let producer = client.producer(&stack.namesrv_addr()).await.unwrap();
    for i in 0..10 {
        send(&producer, &order(&topic, &format!("order-{i}"))).await;
    }
    // order-3 fails twice, order-7 once, before they succeed.
    let handler = Arc::new(OrderHandler {
        failures: Mutex::new(HashMap::from([
            ("order-3".to_owned(), 2),
            ("order-7".to_owned(), 1),
        ])),
        ..Default::default()
    });
    let store = RedisStore::builder(redis.url()).connect().await.unwrap();
    let listener = DedupConcurrentListener::builder(handler.clone())
        .namespace(group.as_str())
        .store(store)
        .build()
        .unwrap();
    let spec = ConsumerSpec::new(&stack.namesrv_addr(), &group, &topic);
    let mut consumer = client.consumer(&spec, listener.clone()).await.unwrap();
    let stats = listener.stats().clone();
    let done = wait_until(Duration::from_secs(60), || {
        handler.ledger.keys() == 10 && stats.messages_acked() >= 10
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    consumer.shutdown().await;
    client.shutdown().await;

    assert!(done, "{}", stats.summary());
    assert_eq!(handler.ledger.repeated(), vec![]);
    assert_eq!(handler.ledger.total(), 10);
    assert_eq!(
        handler.runs.load(Ordering::SeqCst),
        13,
        "10 successes and 3 failures"
    );
    assert_eq!(
        stats.decisions(Decision::HandlerFailed),
        3,
        "{}",
        stats.summary()
    );
    assert_eq!(
        stats.decisions(Decision::Processed),
        10,
        "{}",
        stats.summary()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clients_own_timeout_redelivery_does_not_run_the_handler_twice() {
    init_tracing();
    let stack = stack();
    let redis = RedisServer::start().unwrap();
    // The client gives up on a listener call after 3 s and sends the message back while the
    // 7 s handler is still running: a duplicate of the client's own making.
    let client =
        ClientEnv::with_listener_timeout("client-timeout", Duration::from_secs(3)).unwrap();
    let (topic, group) = (unique_name("Orders"), unique_name("payments"));
    let producer = client.producer(&stack.namesrv_addr()).await.unwrap();
    send(&producer, &order(&topic, "long-order")).await;
    let handler = Arc::new(OrderHandler {
        slow: HashMap::from([("long-order".to_owned(), Duration::from_secs(7))]),
        ..Default::default()
    });
    let store = RedisStore::builder(redis.url()).connect().await.unwrap();
    let listener = DedupConcurrentListener::builder(handler.clone())
        .namespace(group.as_str())
        .store(store)
        // A 2 s claim under a 7 s handler: only renewal keeps it. No waiting for the
        // in-process owner, so the copy meets the claim in Redis and is deferred.
        .processing_ttl(Duration::from_secs(2))
        .in_flight_wait(Duration::ZERO)
        .build()
        .unwrap();
    let spec = ConsumerSpec::new(&stack.namesrv_addr(), &group, &topic);
    let mut consumer = client.consumer(&spec, listener.clone()).await.unwrap();
    let stats = listener.stats().clone();
    // The first call's own answer is lost to the timeout; the copy's answer is the one that
    // acks: it must be a duplicate, decided after the handler finished.
    let done = wait_until(Duration::from_secs(60), || {
        stats.decisions(Decision::Duplicate) >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    consumer.shutdown().await;
    client.shutdown().await;

    assert!(
        done,
        "the sent-back copy came back and was acked: {}",
        stats.summary()
    );
    assert!(
        stats.decisions(Decision::DeferredInFlight) >= 1,
        "the copy met the renewed claim: {}",
        stats.summary()
    );
    assert_eq!(
        handler.runs.load(Ordering::SeqCst),
        1,
        "{}",
        stats.summary()
    );
    assert_eq!(handler.ledger.count("long-order"), 1);
    assert_eq!(handler.max_concurrent_same_key.load(Ordering::SeqCst), 1);
}
