//! The start-up route check against real name servers: the embedded rocketmq-rust one (a
//! topic with a route, a topic without), a closed port, servers that are no name server
//! (MariaDB, which greets first; redis-server, which answers nothing), and a remoting server answering as Apache RocketMQ 4.9.7's
//! Java name server answered (recorded, stock and with the 5.x field, by request version).
//! Each failure is its own typed error with its own one-line cause, and the examples print it
//! as their one line.

mod common;

use std::time::Duration;

use common::*;
use rocketmq_dedup::client::{check_topic_route, RouteCheckError};
use rocketmq_dedup_testkit::{
    free_port, unique_name, ClientEnv, MariaDbServer, Recorded, RecordedNameServer, RedisOptions,
    RedisServer,
};

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

/// Stock Apache RocketMQ 4.9.7 answers the request the client sends (its remoting version, so
/// quoted map keys) with broker data lacking `enableActingMaster`: the line names the client's
/// own decoding error, 4.x, and what to do.
#[tokio::test]
async fn a_stock_4x_route_is_named_by_the_clients_own_error() {
    let namesrv = RecordedNameServer::rocketmq_4_9_7(Recorded::Stock).unwrap();
    let err = check_topic_route(&namesrv.addr(), "StockOrders", WITHIN)
        .await
        .unwrap_err();
    let RouteCheckError::Undecodable { detail, topic, .. } = &err else {
        panic!("a 4.9.7 route is undecodable, not {err:?}");
    };
    assert_eq!(topic, "StockOrders");
    assert!(
        detail.contains("missing field `enableActingMaster`"),
        "{detail}"
    );
    assert!(!detail.contains("key must be a string"), "{detail}");
    let line = err.to_string();
    for needed in ["4.x", "5.x", "StockOrders", "enableActingMaster"] {
        assert!(line.contains(needed), "{needed} missing from: {line}");
    }
    assert!(!line.contains('\n'), "one line: {line}");
}

/// The workaround: the same 4.x broker with the 5.x field in its route data. The client reads
/// that route, so the check lets it through.
#[tokio::test]
async fn a_4x_route_with_the_5x_field_passes() {
    let namesrv = RecordedNameServer::rocketmq_4_9_7(Recorded::WithActingMaster).unwrap();
    let route = check_topic_route(&namesrv.addr(), "Orders", WITHIN)
        .await
        .unwrap();
    assert_eq!((route.brokers, route.read_queues), (1, 8));
}

/// A topic that does not exist yet on a 4.x name server (a producer's first send): the check
/// reads the default topic's route, as the client will, and names 4.x at once; with the 5.x
/// field the topic simply has no route yet (a producer goes on: the broker creates it).
#[tokio::test]
async fn a_4x_name_server_is_told_apart_before_the_topic_exists() {
    let stock = RecordedNameServer::rocketmq_4_9_7_default_topic_only(Recorded::Stock).unwrap();
    let err = check_topic_route(&stock.addr(), "NewOrders", WITHIN)
        .await
        .unwrap_err();
    let RouteCheckError::Undecodable { topic, detail, .. } = &err else {
        panic!("the default topic's 4.x route is undecodable, not {err:?}");
    };
    assert_eq!(topic, "TBW102");
    assert!(detail.contains("enableActingMaster"), "{detail}");
    assert!(err.to_string().contains("4.x"), "{err}");

    let fixed =
        RecordedNameServer::rocketmq_4_9_7_default_topic_only(Recorded::WithActingMaster).unwrap();
    let err = check_topic_route(&fixed.addr(), "NewOrders", WITHIN)
        .await
        .unwrap_err();
    assert!(matches!(err, RouteCheckError::NoRoute { .. }), "{err:?}");
}

/// A server that speaks first in another protocol (MariaDB greets every connection with its
/// handshake: a consumer pointed at port 3306 instead of 9876) is not a name server: its own
/// error, quoting what it answered, not "cannot be reached".
#[test]
fn a_server_that_greets_in_another_protocol_is_not_a_name_server() {
    let mariadb = MariaDbServer::start_local().unwrap();
    let addr = host_port(mariadb.url());
    let err = block_on(check_topic_route(&addr, "Orders", WITHIN)).unwrap_err();
    let RouteCheckError::NotANameServer { answered, .. } = &err else {
        panic!("MariaDB is no name server, not {err:?}");
    };
    assert!(answered.contains("MariaDB"), "{answered}");
    let line = err.to_string();
    assert!(line.contains("is not a RocketMQ name server"), "{line}");
    assert!(!line.contains("cannot be reached"), "{line}");
}

/// A server that waits for the end of a line before it answers (redis-server; an HTTP server
/// does the same) answers a remoting request with silence: unreachable, saying that it
/// accepted the connection and answered nothing, and said within the timeout.
#[test]
fn a_silent_server_is_named_as_accepting_and_answering_nothing() {
    let redis = RedisServer::start_local(RedisOptions::default()).unwrap();
    let addr = host_port(redis.url());
    let within = Duration::from_secs(1);
    let started = std::time::Instant::now();
    let err = block_on(check_topic_route(&addr, "Orders", within)).unwrap_err();
    assert!(
        started.elapsed() < within + Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let RouteCheckError::Unreachable { reason, .. } = &err else {
        panic!("redis-server answers nothing, not {err:?}");
    };
    assert!(
        reason.contains("accepted the connection but answered nothing"),
        "{reason}"
    );
}

/// `host:port` of a server URL (`scheme://[user@]host:port[/…]`).
fn host_port(url: &str) -> String {
    let rest = url.split("://").nth(1).unwrap();
    let rest = rest.rsplit('@').next().unwrap();
    rest.split('/').next().unwrap().to_owned()
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// An example program built beside this test (`target/<profile>/examples/<name>`).
fn example(name: &str) -> std::process::Command {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let path = dir.join("examples").join(name);
    assert!(path.is_file(), "{} is built with the tests", path.display());
    let mut command = std::process::Command::new(path);
    command
        .env_remove("RUST_LOG")
        .env_remove("RUST_BACKTRACE")
        .env_remove("ROCKETMQ_NAMESRV_ADDR");
    command
}

/// What an example printed, when it exits (status, stdout, stderr); killed after `within`.
fn run(mut command: std::process::Command, within: Duration) -> (Option<i32>, String, String) {
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    (
        status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The examples print one line for each failure, at once, and exit 1: a stock 4.x name server
/// (the consumer's topic, and the producer's topic that does not exist yet), a closed port, a
/// server that is no name server (MariaDB). With the 5.x field they go on past the check.
#[test]
fn the_examples_print_one_line_for_each_failure() {
    let stock = RecordedNameServer::rocketmq_4_9_7(Recorded::Stock).unwrap();
    let stock_new_topics =
        RecordedNameServer::rocketmq_4_9_7_default_topic_only(Recorded::Stock).unwrap();
    let closed = format!("127.0.0.1:{}", free_port().unwrap());
    let mariadb = MariaDbServer::start_local().unwrap();
    let not_namesrv = host_port(mariadb.url());
    let cases = [
        ("order_consumer", stock.addr(), "Apache RocketMQ 4.x"),
        ("producer", stock_new_topics.addr(), "Apache RocketMQ 4.x"),
        ("order_consumer", closed.clone(), "cannot be reached"),
        ("producer", closed.clone(), "cannot be reached"),
        (
            "order_consumer",
            not_namesrv.clone(),
            "is not a RocketMQ name server",
        ),
        ("producer", not_namesrv, "is not a RocketMQ name server"),
    ];
    for (name, namesrv, expected) in cases {
        let mut command = example(name);
        command.args(["--namesrv", &namesrv, "--topic", "Orders"]);
        let started = std::time::Instant::now();
        let (status, stdout, stderr) = run(command, Duration::from_secs(30));
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        println!("{name} --namesrv {namesrv}: {stderr}");
        assert_eq!(status, Some(1), "{name} {namesrv}: {stdout} {stderr}");
        assert_eq!(lines.len(), 1, "{name} {namesrv}: one line, not {stderr:?}");
        assert!(
            lines[0].starts_with("Error: ") && lines[0].contains(expected),
            "{name}: {}",
            lines[0]
        );
        assert!(stdout.trim().is_empty(), "{name}: {stdout}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{name} took {:?}",
            started.elapsed()
        );
    }
    // The 5.x field: the consumer reads the route and goes on to consume (here the recorded
    // broker is not there, so it is stopped after a while).
    let fixed = RecordedNameServer::rocketmq_4_9_7(Recorded::WithActingMaster).unwrap();
    let mut command = example("order_consumer");
    command.args(["--namesrv", &fixed.addr(), "--topic", "Orders"]);
    let (status, stdout, stderr) = run(command, Duration::from_secs(3));
    assert_eq!(status, None, "it ran on: {stdout} {stderr}");
    assert!(
        stdout.starts_with("Orders: 8 read queues on 1 broker(s)"),
        "{stdout} {stderr}"
    );
    assert!(!stderr.contains("4.x"), "{stderr}");
    println!("order_consumer, 4.x with the 5.x field: {stdout}");
}
