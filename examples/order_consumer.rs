//! An order-payment consumer that charges each order once, however often RocketMQ delivers it.
//!
//! The handler ([`support/orders.rs`]) is written subclass-style: `handle` charges the order,
//! `dedup_key` names the business key (`orderId` in the JSON body). The listener claims each
//! key in the dedup store before the handler runs and marks it consumed after.
//!
//! Guarantee: with a Redis store shared by all consumers of the group, an order is charged at
//! most once while its record lives (24 h); nothing is acked unprocessed. Caveat: a consumer
//! killed between a charge and its commit leaves a claim that expires after the processing TTL
//! (30 s), and the redelivered copy charges again; the in-memory store only deduplicates
//! within this process.
//!
//! Prints one line per decision and per effect, and a summary on exit (Ctrl-C, or after
//! `--idle-exit` seconds without messages).
//!
//! Run (with a stack from `docker-compose up -d`, or any name server and Redis):
//!
//! ```text
//! cargo run --example order_consumer -- --namesrv 127.0.0.1:9876 --topic Orders \
//!     --group payments --store redis://127.0.0.1:6379
//! # the key from the producer's UNIQ_KEY instead of the body, metrics for Prometheus:
//! cargo run --example order_consumer -- --key unique-id --metrics-addr 127.0.0.1:9464
//! ```
//!
//! A body that is not JSON, or has no `orderId`, is charged under its message id.

#[path = "support/app.rs"]
mod app;
#[path = "support/orders.rs"]
mod orders;

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use rocketmq_client_rust::MQPushConsumer;
use rocketmq_dedup::{DedupConcurrentListener, DedupHandler as _, KeyStrategy};

#[derive(Debug, Parser)]
struct Args {
    /// Name server address.
    #[arg(long, env = "ROCKETMQ_NAMESRV_ADDR", default_value = "127.0.0.1:9876")]
    namesrv: String,
    /// Topic.
    #[arg(long, env = "TOPIC", default_value = "Orders")]
    topic: String,
    /// Consumer group (also the dedup namespace).
    #[arg(long, env = "CONSUMER_GROUP", default_value = "order-payments")]
    group: String,
    /// Dedup store: `memory://`, `redis://[:password@]host:port[/db]`, `rediss://…`,
    /// `redis+cluster://h1:p1,h2:p2`, `redis+sentinel://s1:p1/master`, `mysql://…`,
    /// `postgres://…`.
    #[arg(long, env = "DEDUP_STORE_URL", default_value = "memory://")]
    store: String,
    /// The dedup key: `unique-id` (the producer's UNIQ_KEY), `keys` (the message KEYS), or
    /// `json:<pointer>` (a field of the JSON body, e.g. `json:/orderId`).
    #[arg(long, env = "DEDUP_KEY", default_value = "json:/orderId", value_parser = key_strategy)]
    key: KeyStrategy,
    /// Serve Prometheus metrics at `http://<addr>/metrics` (e.g. `127.0.0.1:9464`).
    #[arg(long, env = "DEDUP_METRICS_ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Messages per listener call.
    #[arg(long, default_value_t = 1)]
    batch: u32,
    /// Exit after this many seconds without a message (default: run until Ctrl-C).
    #[arg(long)]
    idle_exit: Option<u64>,
}

/// `unique-id`, `keys` or `json:<pointer>`.
fn key_strategy(s: &str) -> Result<KeyStrategy, String> {
    match s {
        "unique-id" => Ok(KeyStrategy::UniqueId),
        "keys" => Ok(KeyStrategy::Keys),
        _ => match s.strip_prefix("json:") {
            Some(pointer) if pointer.starts_with('/') => Ok(KeyStrategy::json_pointer(pointer)),
            _ => Err("expected unique-id, keys or json:/pointer".to_owned()),
        },
    }
}

#[tokio::main]
/// Errors print as their message and cause chain (anyhow), once each.
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    app::init_logging();
    app::check_route(&args.namesrv, &args.topic).await?;
    if let Some(addr) = args.metrics_addr {
        app::serve_metrics(addr)?;
        println!("metrics at http://{addr}/metrics");
    }

    let store = rocketmq_dedup::connect(&args.store).await?;
    let payments = Arc::new(orders::OrderPayments {
        verbose: true,
        ..Default::default()
    });
    let listener = DedupConcurrentListener::builder(payments.clone().with_key(args.key.clone()))
        .namespace(args.group.as_str())
        .shared_store(store)
        .build()?;

    // rocketmq-client-rust 1.0.0 needs an explicit client runtime; `ConsumerRuntime` owns one
    // and widens the blocking lane listeners run on (see its docs).
    let client = rocketmq_dedup::client::ConsumerRuntime::new("order-consumer")?;
    let mut consumer = app::consumer_builder(&client, &args.namesrv, &args.group)
        .consume_message_batch_max_size(args.batch)
        .build();
    consumer.subscribe(args.topic.as_str(), "*").await?;
    consumer.register_message_listener_concurrently(listener.clone());
    app::start(&mut consumer).await?;
    println!(
        "consuming {} as {} with the {} store",
        args.topic,
        args.group,
        args.store.split("://").next().unwrap_or("?")
    );

    let stats = listener.stats().clone();
    app::run_until_stopped(&stats, args.idle_exit).await;
    consumer.shutdown().await;
    listener.shutdown(Duration::from_secs(5)).await;
    client.shutdown().await;
    println!(
        "summary: orders_charged={} charges={} {}",
        payments.orders_charged(),
        payments.charges_made(),
        stats.summary()
    );
    Ok(())
}
