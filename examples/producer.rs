//! Sends paid-order messages with a chosen share of deliberate duplicates; with `--orderly`,
//! order timelines (created → paid → shipped, each order's events to one queue) for
//! `orderly_consumer`.
//!
//! Duplicates come in the two forms RocketMQ users meet: the same order sent again as a new
//! message (a double submit: a new UNIQ_KEY, the same `orderId`), and the same message sent
//! again with its UNIQ_KEY (a producer retry after a lost ack). The consumer examples
//! deduplicate both by their business key.
//!
//! Run (with a name server on 127.0.0.1:9876, e.g. `docker-compose up -d`):
//!
//! ```text
//! cargo run --example producer -- --messages 1000 --duplicates 0.2 --topic Orders
//! cargo run --example producer -- --orderly --messages 100 --topic Timeline
//! ```

#[path = "support/app.rs"]
mod app;
#[path = "support/orders.rs"]
mod orders;
#[path = "support/timeline.rs"]
mod timeline;

use clap::Parser;
use rocketmq_client_rust::DefaultMQProducer;

#[derive(Debug, Parser)]
struct Args {
    /// Name server address.
    #[arg(long, env = "ROCKETMQ_NAMESRV_ADDR", default_value = "127.0.0.1:9876")]
    namesrv: String,
    /// Topic.
    #[arg(long, env = "TOPIC", default_value = "Orders")]
    topic: String,
    /// Messages to send.
    #[arg(long, default_value_t = 200)]
    messages: usize,
    /// Share of them that are duplicates (0.0 to 0.95).
    #[arg(long, default_value_t = 0.2)]
    duplicates: f64,
    /// Prefix of order ids, so that runs do not collide.
    #[arg(long, default_value = "run")]
    run: String,
    /// Send order timelines for the orderly consumer: `--messages` orders of three events.
    #[arg(long)]
    orderly: bool,
}

#[tokio::main]
/// Errors print as their message and cause chain (anyhow), once each.
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    app::check_name_server(&args.namesrv, &args.topic).await?;
    let client = rocketmq_dedup::client::ConsumerRuntime::new("producer")?;
    let mut producer = DefaultMQProducer::builder(client.client_runtime())
        .producer_group("order-producer")
        .name_server_addr(args.namesrv.as_str())
        .build();
    producer.start().await?;
    if args.orderly {
        let dup_every = match args.duplicates {
            d if d <= 0.0 => 0,
            d => (1.0 / d).round().max(1.0) as usize,
        };
        let sent =
            timeline::send_timelines(&producer, &args.topic, args.messages, &args.run, dup_every)
                .await?;
        println!(
            "sent={sent} unique={}",
            args.messages * timeline::STEPS.len()
        );
    } else {
        let plan = orders::SendPlan::new(args.messages, args.duplicates);
        orders::send_orders(&producer, &args.topic, plan, &args.run).await?;
        println!("sent={} unique={}", plan.messages, plan.unique);
    }
    producer.shutdown().await;
    client.shutdown().await;
    Ok(())
}
