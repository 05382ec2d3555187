//! `rocketmq-dedup`: what an operator of a dedup layer asks of its shared store.
//!
//! ```text
//! rocketmq-dedup --store redis://127.0.0.1:6379 --namespace payments --topic Orders status o-42
//! rocketmq-dedup --store … --namespace payments --topic Orders forget o-42 --yes
//! rocketmq-dedup --store … --namespace payments --topic Orders stats
//! rocketmq-dedup --store mysql://app:secret@127.0.0.1:3306/shop purge
//! ```
//!
//! The store URL (`--store` or `DEDUP_STORE_URL`) is any shared store's: `redis://`,
//! `rediss://`, `redis+cluster://`, `redis+sentinel://`, `mysql://`, `postgres://`. The key is
//! the dedup key (the message's UNIQ_KEY, or the business key the handler derives); the record
//! key is built from `--prefix`, `--namespace`, `--topic` and `--tag` as the listener builds
//! it. `stats` counts a namespace's records, or one topic's with `--topic`. `forget` deletes
//! the record so that the next copy of the message is processed again: it asks for `--yes`.
//!
//! Exit status: 0 done; 1 an error (printed with its causes: a wrong URL, an unreachable
//! server, refused credentials are told apart); 2 `forget` without `--yes`.

use std::error::Error as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use rocketmq_dedup::connect_admin;
use rocketmq_dedup::record_key::{KeyParts, RecordKey, RecordScope, DEFAULT_PREFIX};
use rocketmq_dedup::store::admin::{RecordAdmin, RecordState};

#[derive(Debug, Parser)]
#[command(
    name = "rocketmq-dedup",
    version,
    about = "Inspect and manage rocketmq-dedup's records in a shared store"
)]
struct Cli {
    /// The store: redis://…, rediss://…, redis+cluster://…, redis+sentinel://…, mysql://…, postgres://…
    #[arg(long, env = "DEDUP_STORE_URL", hide_env_values = true)]
    store: String,
    /// The listener's namespace (its consumer group, or an application name).
    #[arg(long, default_value = "")]
    namespace: String,
    /// The message's topic.
    #[arg(long, default_value = "")]
    topic: String,
    /// The message's tag, when the key strategy is tag-qualified.
    #[arg(long)]
    tag: Option<String>,
    /// The record-key prefix the listener uses.
    #[arg(long, default_value = DEFAULT_PREFIX)]
    prefix: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// A message's record: absent, CONSUMING (by which owner, time left) or CONSUMED (time left).
    Status {
        /// The dedup key.
        key: String,
    },
    /// Deletes a message's record, so that its next copy is processed again.
    Forget {
        /// The dedup key.
        key: String,
        /// Really delete it.
        #[arg(long)]
        yes: bool,
    },
    /// Records under the namespace (or the topic, with --topic) by state, and the server's memory.
    Stats,
    /// Deletes expired rows now (SQL stores; Redis expires records itself).
    Purge,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            let mut cause = e.source();
            while let Some(c) = cause {
                eprintln!("  caused by: {c}");
                cause = c.source();
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: &Cli) -> Result<ExitCode, rocketmq_dedup::StoreError> {
    let needs_key = matches!(cli.command, Command::Status { .. } | Command::Forget { .. });
    if needs_key && (cli.namespace.is_empty() || cli.topic.is_empty()) {
        eprintln!("error: status and forget need --namespace and --topic (they are part of the record key)");
        return Ok(ExitCode::FAILURE);
    }
    if matches!(cli.command, Command::Stats) && cli.namespace.is_empty() {
        eprintln!("error: stats needs --namespace");
        return Ok(ExitCode::FAILURE);
    }
    let store = connect_admin(&cli.store).await?;
    match &cli.command {
        Command::Status { key } => {
            let record = record_key(cli, key);
            println!("{}", describe(store.inspect(&record).await?));
        }
        Command::Forget { key, yes } => {
            let record = record_key(cli, key);
            let state = store.inspect(&record).await?;
            if !yes {
                println!("{}: {}", record.as_str(), describe(state));
                eprintln!("not deleted: pass --yes to delete this record (the next copy of the message will be processed again)");
                return Ok(ExitCode::from(2));
            }
            match store.forget(&record).await? {
                true => println!("forgotten (was {})", describe(state)),
                false => println!("no record to forget"),
            }
        }
        Command::Stats => stats(store.as_ref(), cli).await?,
        Command::Purge => match store.purge_expired().await? {
            Some(n) => println!("deleted {n} expired rows"),
            None => println!("nothing to purge: Redis expires records itself"),
        },
    }
    Ok(ExitCode::SUCCESS)
}

async fn stats(store: &dyn RecordAdmin, cli: &Cli) -> Result<(), rocketmq_dedup::StoreError> {
    let topic = (!cli.topic.is_empty()).then_some(cli.topic.as_str());
    let scope = RecordScope {
        prefix: &cli.prefix,
        namespace: &cli.namespace,
        topic,
        tag: topic.and(cli.tag.as_deref()),
    };
    let counts = store.counts(&scope).await?;
    let name = match topic {
        Some(topic) => format!("namespace {}, topic {topic}", cli.namespace),
        None => format!("namespace {}", cli.namespace),
    };
    println!(
        "{name}: CONSUMING {}, CONSUMED {}, expired (not yet purged) {}",
        counts.consuming, counts.consumed, counts.expired
    );
    if let Some(bytes) = counts.memory_bytes {
        println!("server memory in use: {bytes} bytes");
    }
    if let Some(oversized) = counts.oversized_shards.filter(|n| *n > 0) {
        println!(
            "records hashes beyond the listpack encoding: {oversized} (the group runs above the store's expected_rate: about four times the memory per record there, until the records die and sweeps shrink them; raise expected_rate for a new group, or hash-max-listpack-entries)"
        );
    }
    Ok(())
}

fn record_key(cli: &Cli, key: &str) -> RecordKey {
    RecordKey::new(KeyParts {
        prefix: &cli.prefix,
        namespace: &cli.namespace,
        topic: &cli.topic,
        tag: cli.tag.as_deref(),
        key,
    })
}

fn describe(state: RecordState) -> String {
    match state {
        RecordState::Absent => "absent (never processed, released, or expired)".to_owned(),
        RecordState::Consuming { owner, ttl_left } => {
            format!("CONSUMING by owner c{owner:x}, {} left", human(ttl_left))
        }
        RecordState::Consumed { ttl_left } => {
            format!("CONSUMED, recognised for {} more", human(ttl_left))
        }
    }
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{:.1} s", d.as_secs_f64()),
        60..=3599 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}
