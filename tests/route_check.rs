//! The start-up route check against real name servers: the embedded rocketmq-rust one (a
//! topic with a route, a topic without), a closed port, and a remoting server answering what
//! Apache RocketMQ 4.9.7's Java name server answered (recorded). Each failure is its own
//! typed error with its own one-line cause.

mod common;

use std::time::Duration;

use common::*;
use rocketmq_dedup::client::{check_topic_route, RouteCheckError};
use rocketmq_dedup_testkit::{free_port, unique_name, ClientEnv, RecordedNameServer};

const WITHIN: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_with_a_route_reads_and_one_without_says_so() {
    init_tracing();
    let stack = stack();
    let client = ClientEnv::new("route-check").unwrap();
    let topic = unique_name("Orders");
    let producer = client.producer(&stack.namesrv_addr()).await.unwrap();
    send(&producer, &order(&topic, "order-1")).await;
    client.shutdown().await;

    let route = check_topic_route(&stack.namesrv_addr(), &topic, WITHIN)
        .await
        .unwrap();
    assert!(route.read_queues > 0 && route.brokers == 1, "{route:?}");

    let missing = unique_name("NoSuchTopic");
    let err = check_topic_route(&stack.namesrv_addr(), &missing, WITHIN)
        .await
        .unwrap_err();
    assert!(matches!(err, RouteCheckError::NoRoute { .. }), "{err:?}");
    assert!(err.to_string().contains(&missing), "{err}");
}

#[tokio::test]
async fn a_closed_port_is_an_unreachable_name_server() {
    let addr = format!("127.0.0.1:{}", free_port().unwrap());
    let err = check_topic_route(&addr, "Orders", WITHIN)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RouteCheckError::Unreachable { .. }),
        "{err:?}"
    );
    let line = err.to_string();
    assert!(
        line.contains(&addr) && line.contains("cannot be reached"),
        "{line}"
    );
}

#[tokio::test]
async fn a_4x_route_names_the_missing_field_and_what_to_do() {
    let namesrv = RecordedNameServer::rocketmq_4_9_7().unwrap();
    let err = check_topic_route(&namesrv.addr(), "StockOrders", WITHIN)
        .await
        .unwrap_err();
    let RouteCheckError::Undecodable { detail, .. } = &err else {
        panic!("a 4.9.7 route is undecodable, not {err:?}");
    };
    assert!(
        detail.contains("missing field `enableActingMaster`"),
        "{detail}"
    );
    let line = err.to_string();
    for needed in ["4.x", "5.x", "StockOrders", "enableActingMaster"] {
        assert!(line.contains(needed), "{needed} missing from: {line}");
    }
    assert!(!line.contains('\n'), "one line: {line}");
}
