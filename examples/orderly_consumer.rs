//! An order-timeline consumer that applies each order's events once and in order, however
//! often RocketMQ delivers them.
//!
//! Every order goes through created → paid → shipped; the producer sends its three events to
//! one queue (`cargo run --example producer -- --orderly`). The handler
//! ([`support/timeline.rs`]) deduplicates by the message KEYS (`<order>#<step>`), and the
//! orderly listener suspends the queue instead of skipping ahead whenever an event cannot be
//! applied now: its handler failed, the store is down, or another consumer of the group is
//! still applying it (a rebalance hands a queue over while its old owner works).
//!
//! Guarantee: with a Redis store shared by the group, each event is applied at most once while
//! its record lives (24 h), never before the events sent ahead of it on its queue. Caveat: a
//! consumer killed between applying an event and its commit leaves a claim that expires after
//! the processing TTL (30 s); the redelivered event then applies again. RocketMQ's orderly
//! consumers retry a suspended queue without limit unless `max_reconsume_times` is set.
//!
//! Run (with a stack from `docker-compose up -d`, or any name server and Redis):
//!
//! ```text
//! cargo run --example orderly_consumer -- --namesrv 127.0.0.1:9876 --topic Timeline \
//!     --group shipping --store redis://127.0.0.1:6379
//! ```

#[path = "support/app.rs"]
mod app;
#[path = "support/timeline.rs"]
mod timeline;

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use rocketmq_client_rust::MQPushConsumer;
use rocketmq_dedup::client::ConsumerRuntime;
use rocketmq_dedup::DedupOrderlyListener;

#[derive(Debug, Parser)]
struct Args {
    /// Name server address.
    #[arg(long, env = "ROCKETMQ_NAMESRV_ADDR", default_value = "127.0.0.1:9876")]
    namesrv: String,
    /// Topic.
    #[arg(long, env = "TOPIC", default_value = "Timeline")]
    topic: String,
    /// Consumer group (also the dedup namespace).
    #[arg(long, env = "CONSUMER_GROUP", default_value = "order-timeline")]
    group: String,
    /// Dedup store: `memory://`, `redis://[:password@]host:port[/db]` or `rediss://…`.
    #[arg(long, env = "DEDUP_STORE_URL", default_value = "memory://")]
    store: String,
    /// How long a queue is suspended when its next event cannot be applied now (ms).
    #[arg(long, default_value_t = 1000)]
    suspend_ms: u64,
    /// Exit after this many seconds without a message (default: run until Ctrl-C).
    #[arg(long)]
    idle_exit: Option<u64>,
}

#[tokio::main]
/// Errors print as their message and cause chain (anyhow), once each.
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    app::init_logging();
    app::check_route(&args.namesrv, &args.topic).await?;

    let store = rocketmq_dedup::connect(&args.store).await?;
    let timeline = Arc::new(timeline::Timeline {
        verbose: true,
        ..Default::default()
    });
    let listener = DedupOrderlyListener::builder(timeline.clone())
        .namespace(args.group.as_str())
        .shared_store(store)
        .suspend_time(Duration::from_millis(args.suspend_ms))
        .build()?;

    let runtime = ConsumerRuntime::new("orderly-consumer")?;
    let mut consumer = app::consumer_builder(&runtime, &args.namesrv, &args.group).build();
    consumer.subscribe(args.topic.as_str(), "*").await?;
    consumer.register_message_listener_orderly(listener.clone());
    app::start(&mut consumer).await?;
    println!("consuming {} in order as {}", args.topic, args.group);

    let stats = listener.stats().clone();
    app::run_until_stopped(&stats, args.idle_exit).await;
    consumer.shutdown().await;
    listener.shutdown(Duration::from_secs(5)).await;
    runtime.shutdown().await;
    let out_of_order = timeline
        .out_of_order
        .load(std::sync::atomic::Ordering::SeqCst);
    println!(
        "summary: events_applied={} out_of_order={out_of_order} {}",
        timeline.events(),
        stats.summary()
    );
    Ok(())
}
