//! What the consumer examples share as programs: logging set up for reading decisions, and
//! running until Ctrl-C (or until the consumer has been idle for a while).

#![allow(dead_code)]

use std::time::Duration;

use rocketmq_dedup::DedupStats;

/// Logs warnings, and one line per dedup decision (`RUST_LOG` overrides).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,rocketmq_dedup::decision=debug".into()),
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

/// Starts `consumer`, then fails at once, naming the cause, if this client cannot read
/// `topic`'s route (an Apache RocketMQ 4.x name server) instead of idling.
pub async fn start(
    consumer: &mut rocketmq_client_rust::DefaultMQPushConsumer,
    topic: &str,
) -> anyhow::Result<()> {
    // Boxed: the client's start future is deep enough to hit the layout recursion limit.
    Box::pin(consumer.start()).await?;
    let queues = rocketmq_dedup::route_check::check_topic_route(consumer, topic).await?;
    println!("{topic} has {queues} queues");
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
