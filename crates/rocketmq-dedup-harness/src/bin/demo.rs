//! The whole story in one command: a local RocketMQ name server and broker, a producer that
//! sends orders with deliberate duplicates, and a deduplicating consumer that charges each
//! order once.
//!
//! The name server and broker are rocketmq-rust 1.0.0, embedded in this program and run as
//! two child processes of it on 127.0.0.1 (free ports); they are built by Cargo with the demo,
//! so nothing needs installing. With `--redis` the dedup store is a `redis-server` started on
//! a free loopback port (Debian: `apt-get install redis-server`); without it, the in-memory
//! store. `ROCKETMQ_NAMESRV_ADDR` and `REDIS_URL` reuse a running stack instead (e.g. the
//! repository's docker-compose.yml).
//!
//! It ends with one line, where effects must equal unique:
//!
//! ```text
//! summary: sent=<n> unique=<u> effects=<e> duplicates_suppressed=<d> deferred=<r>
//! ```
//!
//! Run: `cargo run -p rocketmq-dedup-harness --bin demo` or `cargo run -p rocketmq-dedup-harness --bin demo -- --redis`.

use rocketmq_dedup_harness::orders;

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use rocketmq_dedup::{Decision, DedupConcurrentListener};
use rocketmq_dedup_testkit::{
    unique_name, ClientEnv, ConsumerSpec, RedisServer, RocketMqStack, StackOptions,
};

#[derive(Debug, Parser)]
struct Args {
    /// Messages to send.
    #[arg(long, default_value_t = 300)]
    messages: usize,
    /// Share of duplicates among them.
    #[arg(long, default_value_t = 0.3)]
    duplicates: f64,
    /// Use a Redis dedup store (a local redis-server, or REDIS_URL).
    #[arg(long)]
    redis: bool,
    /// Messages per listener call.
    #[arg(long, default_value_t = 1)]
    batch: u32,
    /// Print one line per decision and per effect.
    #[arg(long)]
    verbose: bool,
}

fn main() {
    // This program is also its own name server and broker (see the module docs).
    rocketmq_dedup_stack::serve_if_requested();
    let args = Args::parse();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(run(args)) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("demo failed: {e}");
            std::process::exit(2);
        }
    }
}

async fn run(args: Args) -> Result<bool, Box<dyn std::error::Error>> {
    let filter = if args.verbose {
        "warn,rocketmq_dedup::decision=debug"
    } else {
        "error"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| filter.into()),
        )
        .with_target(false)
        // Colour codes only on a terminal: logs piped to a file or a collector stay plain.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .compact()
        .init();
    let started = Instant::now();

    step("starting the RocketMQ name server and broker on 127.0.0.1 (or using ROCKETMQ_NAMESRV_ADDR)");
    let stack = RocketMqStack::start(StackOptions::new(std::env::current_exe()?))?;
    done(&format!("name server at {}", stack.namesrv_addr()));

    let redis = if args.redis {
        step("starting redis-server on 127.0.0.1 (or using REDIS_URL)");
        let redis = RedisServer::start()?;
        done(&format!("redis at {}", redis_address(redis.url())));
        Some(redis)
    } else {
        None
    };
    let store = match &redis {
        Some(redis) => rocketmq_dedup::connect(redis.url()).await?,
        None => rocketmq_dedup::connect("memory://").await?,
    };

    let client = ClientEnv::new("demo")?;
    let topic = unique_name("DemoOrders");
    let group = unique_name("demo-payments");
    let plan = orders::SendPlan::new(args.messages, args.duplicates);
    step(&format!(
        "sending {} order messages ({} orders, {} duplicates)",
        plan.messages,
        plan.unique,
        plan.messages - plan.unique
    ));
    let producer = client.producer(&stack.namesrv_addr()).await?;
    orders::send_orders(&producer, &topic, plan, "demo").await?;
    done("sent");

    step(&format!(
        "consuming with the {} dedup store",
        if redis.is_some() {
            "Redis"
        } else {
            "in-memory"
        }
    ));
    let payments = Arc::new(orders::OrderPayments {
        verbose: args.verbose,
        ..Default::default()
    });
    let listener = DedupConcurrentListener::builder(payments.clone())
        .namespace(group.as_str())
        .shared_store(store)
        .build()?;
    let spec = ConsumerSpec::new(&stack.namesrv_addr(), &group, &topic).batch(args.batch);
    let mut consumer = client.consumer(&spec, listener.clone()).await?;
    let stats = listener.stats().clone();
    let deadline = Instant::now() + Duration::from_secs(180);
    while (stats.messages_acked() as usize) < plan.messages && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    rocketmq_client_rust::MQPushConsumer::shutdown(&mut consumer).await;
    client.shutdown().await;
    done(&format!("consumed: {}", stats.summary()));

    let effects = payments.charges_made() as usize;
    println!(
        "summary: sent={} unique={} effects={} duplicates_suppressed={} deferred={}",
        plan.messages,
        plan.unique,
        effects,
        stats.decisions(Decision::Duplicate),
        stats.decisions(Decision::DeferredInFlight),
    );
    println!("demo took {:.1}s", started.elapsed().as_secs_f64());
    let ok = effects == plan.unique && payments.orders_charged() == plan.unique;
    if !ok {
        eprintln!("effects != unique: the demo failed");
    }
    Ok(ok)
}

fn step(what: &str) {
    println!("demo: {what} ...");
}

fn done(what: &str) {
    println!("demo:   {what}");
}

/// The `host:port` of a Redis URL, without scheme, credentials or database.
fn redis_address(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, hosts)| hosts);
    rest.split('/').next().unwrap_or(rest)
}
