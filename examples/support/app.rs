//! What the consumer examples share as programs: logging set up for reading decisions, and
//! running until Ctrl-C (or until the consumer has been idle for a while).

#![allow(dead_code)]

use std::time::Duration;

use rocketmq_dedup::DedupStats;

/// Logs this library's warnings, and one line per dedup decision (`RUST_LOG` overrides). The
/// RocketMQ client and its runtime log errors only: at WARN, rocketmq-client-rust 1.0.0 and
/// rocketmq-runtime 1.0.0 print a JSON report of their tasks on every shutdown (several hundred
/// lines when a consumer stops before its runtime finished), and a line for every topic whose
/// route is not there yet (the retry topic, until the first heartbeat). The start-up check
/// (`check_route`) reports what used to hide among them. `RUST_LOG=warn` brings them back.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                "warn,rocketmq_client_rust=error,rocketmq_runtime=error,rocketmq_dedup::decision=debug"
                    .into()
            }),
        )
        .with_target(false)
        // Colour codes only on a terminal: logs piped to a file or a collector stay plain.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .compact()
        .init();
}

/// A push consumer of `group` reading from the first offset, with 4 consume threads (the
/// 1.0.0 defaults of 20/64 overflow the client runtime's blocking lane; see ROCKETMQ-NOTES).
pub fn consumer_builder(
    runtime: &rocketmq_dedup::client::ConsumerRuntime,
    namesrv: &str,
    group: &str,
) -> rocketmq_client_rust::DefaultMQPushConsumerBuilder {
    rocketmq_client_rust::DefaultMQPushConsumer::builder(runtime.client_runtime())
        .name_server_addr(namesrv)
        .consumer_group(group)
        .consume_from_where(
            rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere::ConsumeFromFirstOffset,
        )
        .consume_thread_min(4u32)
        .consume_thread_max(4u32)
}

/// How long the start-up check waits for the name server.
const ROUTE_CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// Fails at once, with the one cause that applies (the name server cannot be reached, the
/// topic has no route, or the route is in a format this client cannot read: Apache RocketMQ
/// 4.x), before any client starts: its error is the last line the program prints.
pub async fn check_route(namesrv: &str, topic: &str) -> anyhow::Result<()> {
    let route =
        rocketmq_dedup::client::check_topic_route(namesrv, topic, ROUTE_CHECK_TIMEOUT).await?;
    println!(
        "{topic}: {} read queues on {} broker(s)",
        route.read_queues, route.brokers
    );
    Ok(())
}

/// As [`check_route`], for a producer: a topic with no route yet is fine (a broker that
/// creates topics makes it at the first send).
pub async fn check_name_server(namesrv: &str, topic: &str) -> anyhow::Result<()> {
    use rocketmq_dedup::client::{check_topic_route, RouteCheckError};
    match check_topic_route(namesrv, topic, ROUTE_CHECK_TIMEOUT).await {
        Ok(_) | Err(RouteCheckError::NoRoute { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Starts `consumer`.
pub async fn start(
    consumer: &mut rocketmq_client_rust::DefaultMQPushConsumer,
) -> anyhow::Result<()> {
    // Boxed: the client's start future is deep enough to hit the layout recursion limit.
    Box::pin(consumer.start()).await?;
    Ok(())
}

/// Serves every `rocketmq_dedup_*` metric in Prometheus' text format at
/// `http://<addr>/metrics` (metrics-exporter-prometheus), for as long as the process runs.
/// Give it a loopback address unless something in front of it authenticates scrapers.
pub fn serve_metrics(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()?;
    Ok(())
}

/// Returns on Ctrl-C, or once `stats` show no message answered for `idle_exit` seconds.
pub async fn run_until_stopped(stats: &DedupStats, idle_exit: Option<u64>) {
    let answered = || (stats.messages_acked(), stats.messages_retried());
    let mut last = answered();
    let mut quiet = 0;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let now = answered();
        quiet = if now == last { quiet + 1 } else { 0 };
        last = now;
        if idle_exit.is_some_and(|idle| quiet >= idle) {
            return;
        }
    }
}
