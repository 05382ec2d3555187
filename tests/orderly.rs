//! The orderly listener on a real broker: order timelines (created → paid → shipped, each
//! order's events to one queue of several) arrive with duplicates, and each event takes effect
//! once and in send order: through producer retries and double submits, a failing handler, a
//! claim held by another consumer of the group, and a second consumer joining.

mod common;
#[path = "../examples/support/timeline.rs"]
mod timeline;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{init_tracing, stack, wait_until};
use rocketmq_dedup::record_key::{KeyParts, RecordKey};
use rocketmq_dedup::store::{ClaimOutcome, DedupStore, OwnerToken, RedisStore};
use rocketmq_dedup::{Decision, DedupOrderlyListener};
use rocketmq_dedup_testkit::{unique_name, ClientEnv, ConsumerSpec, RedisServer};
use timeline::Timeline;

const ORDERS: usize = 24;

fn listener(group: &str, timeline: &Arc<Timeline>, store: RedisStore) -> DedupOrderlyListener {
    DedupOrderlyListener::builder(timeline.clone())
        .namespace(group)
        .store(store)
        .suspend_time(Duration::from_millis(300))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_event_takes_effect_once_and_in_order_through_duplicates_failures_and_a_foreign_claim()
{
    init_tracing();
    let stack = stack();
    let redis = RedisServer::start().unwrap();
    let client = ClientEnv::new("orderly").unwrap();
    let (topic, group) = (unique_name("Timeline"), unique_name("shipping"));
    let run = unique_name("run");
    let order = |i: usize| format!("{run}-order-{i}");
    let producer = client.producer(&stack.namesrv_addr()).await.unwrap();
    // Every fourth event twice (alternately a retry with its UNIQ_KEY and a double submit).
    let mut sent = timeline::send_timelines(&producer, &topic, ORDERS, &run, 4)
        .await
        .unwrap();
    // Late double submits of a first step, after the later steps were sent.
    for i in [1, 7] {
        let late = timeline::event_message(&topic, &order(i), 1);
        timeline::send_ordered(&producer, late, &order(i))
            .await
            .unwrap();
        sent += 1;
    }

    // Another consumer of the group holds order 5's second event and commits it later.
    let foreign = RedisStore::builder(redis.url()).connect().await.unwrap();
    let held = RecordKey::new(KeyParts {
        prefix: "dedup",
        namespace: &group,
        topic: &topic,
        tag: None,
        key: &format!("{}#2", order(5)),
    });
    let other = OwnerToken::random();
    let ttl = Duration::from_secs(60);
    let claimed = foreign
        .claim(std::slice::from_ref(&held), other, ttl)
        .await
        .unwrap();
    assert_eq!(claimed, [ClaimOutcome::Claimed]);

    let timeline = Arc::new(Timeline {
        failures: Mutex::new(HashMap::from([(format!("{}#2", order(9)), 2)])),
        ..Default::default()
    });
    let store = RedisStore::builder(redis.url()).connect().await.unwrap();
    let listener = listener(&group, &timeline, store);
    let spec = ConsumerSpec::new(&stack.namesrv_addr(), &group, &topic);
    let mut consumer = client
        .orderly_consumer(&spec, listener.clone())
        .await
        .unwrap();
    let stats = listener.stats().clone();

    // Once order 5's first event took effect here, its second waits for the other consumer:
    // the queue stays suspended, nothing behind it runs. Then the other one finishes.
    let first_done = wait_until(Duration::from_secs(60), || timeline.steps(&order(5)) == [1]).await;
    assert!(first_done, "{}", stats.summary());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        timeline.steps(&order(5)),
        [1],
        "nothing ran past the held event"
    );
    let suspended = stats.decisions(Decision::DeferredInFlight);
    assert!(suspended >= 1, "{}", stats.summary());
    timeline
        .applied
        .lock()
        .unwrap()
        .get_mut(&order(5))
        .unwrap()
        .push(2);
    foreign.commit(&[held], other, ttl).await.unwrap();

    let all = (ORDERS * timeline::STEPS.len()) as u64;
    let done = wait_until(Duration::from_secs(90), || {
        timeline.events() as u64 == all && stats.messages_acked() >= sent as u64
    })
    .await;
    consumer.shutdown().await;
    listener.shutdown(Duration::from_secs(2)).await;
    client.shutdown().await;

    assert!(done, "{} events; {}", timeline.events(), stats.summary());
    assert_eq!(timeline.broken_orders(), vec![], "{}", stats.summary());
    assert_eq!(timeline.out_of_order.load(Ordering::SeqCst), 0);
    assert_eq!(timeline.events() as u64, all, "each event once");
    assert_eq!(
        stats.decisions(Decision::HandlerFailed),
        2,
        "{}",
        stats.summary()
    );
    assert!(
        stats.decisions(Decision::Duplicate) as usize >= sent - ORDERS * timeline::STEPS.len(),
        "every extra copy was acked as a duplicate: {}",
        stats.summary()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_orderly_consumers_of_one_group_keep_each_order_once_and_in_order() {
    init_tracing();
    let stack = stack();
    let redis = RedisServer::start().unwrap();
    let (client_a, client_b) = (
        ClientEnv::new("orderly-a").unwrap(),
        ClientEnv::new("orderly-b").unwrap(),
    );
    let (topic, group) = (unique_name("Timeline"), unique_name("shipping"));
    let run = unique_name("run");
    let producer = client_a.producer(&stack.namesrv_addr()).await.unwrap();
    // Slow enough that every queue is still busy when B joins and A leaves.
    let timeline = Arc::new(Timeline {
        delay: Duration::from_millis(150),
        ..Default::default()
    });
    const ORDERS: usize = 40;
    let sent = timeline::send_timelines(&producer, &topic, ORDERS, &run, 5)
        .await
        .unwrap();
    let store = || RedisStore::builder(redis.url()).connect();
    let listener_a = listener(&group, &timeline, store().await.unwrap());
    let listener_b = listener(&group, &timeline, store().await.unwrap());
    let spec = ConsumerSpec::new(&stack.namesrv_addr(), &group, &topic);
    let mut consumer_a = client_a
        .orderly_consumer(&spec, listener_a.clone())
        .await
        .unwrap();
    let started = wait_until(Duration::from_secs(30), || timeline.events() > 0).await;
    assert!(started, "A consumes");
    // B joins: the queues rebalance between them; then A leaves and B takes all of them,
    // offsets A processed but had not committed among them.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let spec_b = ConsumerSpec::new(&stack.namesrv_addr(), &group, &topic);
    let mut consumer_b = client_b
        .orderly_consumer(&spec_b, listener_b.clone())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    consumer_a.shutdown().await;

    let all = ORDERS * timeline::STEPS.len();
    let acked = || listener_a.stats().messages_acked() + listener_b.stats().messages_acked();
    let done = wait_until(Duration::from_secs(90), || {
        timeline.events() == all && acked() as usize >= sent
    })
    .await;
    consumer_b.shutdown().await;
    client_a.shutdown().await;
    client_b.shutdown().await;

    let summary = format!(
        "A: {} | B: {}",
        listener_a.stats().summary(),
        listener_b.stats().summary()
    );
    println!("{summary}");
    assert!(done, "{} of {all} events; {summary}", timeline.events());
    assert_eq!(timeline.broken_orders(), vec![], "{summary}");
    assert_eq!(timeline.out_of_order.load(Ordering::SeqCst), 0, "{summary}");
    assert!(
        listener_b.stats().decisions(Decision::Processed) > 0,
        "B took part: {summary}"
    );
}
