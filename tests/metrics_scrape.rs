//! The Prometheus endpoint the example consumer serves (`--metrics-addr`), scraped during a
//! run against the real broker: the counters it shows are the listener's decisions.

#[path = "../examples/support/app.rs"]
mod app;
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rocketmq_dedup::store::MemoryStore;
use rocketmq_dedup::{Decision, DedupConcurrentListener};
use rocketmq_dedup_testkit::{unique_name, ClientEnv, ConsumerSpec};

/// `GET /metrics`, the body.
fn scrape(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).expect("the endpoint accepts");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(
        response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200"),
        "{response}"
    );
    response
}

/// The value of the sample `name{labels}` in a scrape (0 when absent).
fn sample(scrape: &str, name_and_labels: &str) -> u64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scraped_counters_are_the_listeners_decisions() {
    init_tracing();
    let addr: SocketAddr = format!("127.0.0.1:{}", rocketmq_dedup_testkit::free_port().unwrap())
        .parse()
        .unwrap();
    app::serve_metrics(addr).unwrap();
    let stack = stack();
    let client = ClientEnv::new("metrics").unwrap();
    let (topic, group) = (unique_name("Orders"), unique_name("payments"));
    let producer = client.producer(&stack.namesrv_addr()).await.unwrap();
    // 20 orders, 5 of them sent twice (the same orderId: duplicates by business key).
    for i in 0..20 {
        let msg = order(&topic, &format!("order-{i}"));
        send(&producer, &msg).await;
        if i % 4 == 0 {
            send(&producer, &msg).await;
        }
    }
    let handler = Arc::new(OrderHandler::default());
    let listener = DedupConcurrentListener::builder(handler.clone())
        .namespace(group.as_str())
        .store(MemoryStore::new())
        .build()
        .unwrap();
    let spec = ConsumerSpec::new(&stack.namesrv_addr(), &group, &topic);
    let mut consumer = client.consumer(&spec, listener.clone()).await.unwrap();
    let stats = listener.stats().clone();
    let done = wait_until(Duration::from_secs(60), || stats.messages_acked() == 25).await;
    assert!(done, "{}", stats.summary());

    let body = tokio::task::spawn_blocking(move || scrape(addr))
        .await
        .unwrap();
    consumer.shutdown().await;
    client.shutdown().await;
    let processed = sample(
        &body,
        r#"rocketmq_dedup_messages_total{decision="processed"}"#,
    );
    let duplicate = sample(
        &body,
        r#"rocketmq_dedup_messages_total{decision="duplicate"}"#,
    );
    let acked = sample(
        &body,
        r#"rocketmq_dedup_answers_total{status="consume_success"}"#,
    );
    assert_eq!(processed, stats.decisions(Decision::Processed), "{body}");
    assert_eq!(duplicate, stats.decisions(Decision::Duplicate), "{body}");
    assert_eq!(acked, stats.messages_acked(), "{body}");
    assert_eq!((processed, duplicate, acked), (20, 5, 25), "{body}");
    assert!(
        body.contains("rocketmq_dedup_store_seconds"),
        "store latency is exported: {body}"
    );
    assert_eq!(handler.ledger.total(), 20);
}
