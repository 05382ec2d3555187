//! The chaos run: three consumer processes of one group share a dedup store while a producer
//! sends orders with 20% duplicates, and the run SIGKILLs and restarts consumers, the store's
//! server and the broker once. With `--store redis` (the default) Redis (append-only file,
//! fsync always) is crashed and restarted twice; with `--store mysql` or `--store postgres`
//! the consumers use the transactional inbox, the effect is a row written in the handler's
//! transaction, and the database is crashed and restarted once.
//!
//! Each consumer appends to a ledger file: `E pid order` when its handler's effect happens,
//! `C pid order outcome` when the key's commit settled, `A pid order ms` when a message is
//! acked. From the ledger, at the end:
//!
//! ```text
//! chaos: sent=<n> unique=<u> effects=<e> lost=<l> duplicate_effects=<d> in_flight_at_kills=<k> acked_while_store_down=<a>
//! ```
//!
//! - `lost`: orders with no effect; `duplicate_effects`: effects beyond one per order;
//! - `in_flight_at_kills`: effects of killed consumers whose commit had not settled: the only
//!   window in which the Redis store may let an order run twice;
//! - `acked_while_store_down`: acks, during a Redis outage, of orders with no effect yet.
//!
//! The run fails (exit 1) when lost > 0, acked_while_store_down > 0, or
//! duplicate_effects > in_flight_at_kills (with an inbox: duplicate_effects > 0).
//!
//! Run: `cargo run -p rocketmq-dedup-harness --bin chaos -- --quick` (5 000 messages, about a minute; CI runs it) or
//! `cargo run --release -p rocketmq-dedup-harness --bin chaos -- --full` (100 000 messages). It always starts its
//! own broker and Redis (it must kill them), ignoring `ROCKETMQ_NAMESRV_ADDR` and `REDIS_URL`.

use std::time::Duration;

use clap::{Parser, Subcommand};
use rocketmq_dedup_harness::chaos::consumer::{self, Backend, ConsumerArgs};
use rocketmq_dedup_harness::chaos::driver::{self, Plan};

#[derive(Debug, Parser)]
struct Cli {
    /// 5 000 messages, 4 consumer kills (the CI mode).
    #[arg(long, conflicts_with = "full")]
    quick: bool,
    /// 100 000 messages, 6 consumer kills.
    #[arg(long)]
    full: bool,
    /// Messages to send (overrides the mode's).
    #[arg(long)]
    messages: Option<usize>,
    /// Messages per listener call in the consumers.
    #[arg(long, default_value_t = 8)]
    batch: u32,
    /// What keeps the records: the Redis store, or a database's transactional inbox.
    #[arg(long, value_enum, default_value = "redis")]
    store: Backend,
    #[command(subcommand)]
    role: Option<Role>,
}

#[derive(Debug, Subcommand)]
enum Role {
    /// One consumer process (started by the run itself).
    #[command(hide = true)]
    Consumer(ConsumerArgs),
}

fn main() {
    rocketmq_dedup_stack::serve_if_requested();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let code = match cli.role {
        Some(Role::Consumer(args)) => match runtime.block_on(consumer::run(args)) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("chaos consumer {}: {e}", std::process::id());
                2
            }
        },
        None => {
            let plan = Plan {
                messages: cli
                    .messages
                    .unwrap_or(if cli.full { 100_000 } else { 5_000 }),
                kills: if cli.full { 6 } else { 4 },
                batch: cli.batch,
                backend: cli.store,
            };
            match runtime.block_on(driver::drive(plan)) {
                Ok(true) => 0,
                Ok(false) => 1,
                Err(e) => {
                    eprintln!("chaos run failed: {e}");
                    2
                }
            }
        }
    };
    runtime.shutdown_timeout(Duration::from_secs(1));
    std::process::exit(code);
}
