//! The rocketmq-dedup benchmark: in one run, against one local broker and one pre-loaded
//! backlog, the consume throughput and per-call decision latency of
//!
//! - a plain listener (no dedup): the ceiling;
//! - `DedupConcurrentListener` with the in-memory store;
//! - `DedupConcurrentListener` with the Redis store;
//! - the Java reference's algorithm (RocketMQDedupListener over Redis): the peer to beat;
//!
//! each with a trivial handler and one that takes 1 ms, at batch sizes 1 and 32, over a backlog
//! with 0% and 50% duplicates; then Redis round trips per batch, Redis bytes per CONSUMED record
//! (ours and the reference's layout), the memory store's bytes per record, and consumer RSS;
//! the machine's CPU per message in each scenario (every process: broker, Redis, consumer),
//! and the listener's own CPU per message without a broker (`engine`, memory store).
//! It prints a table, then one `ratio <name> = <x> (target <op> <y>) PASS|FAIL` line per
//! target, and writes the same as JSON (`--json`). Every scenario runs in a fresh process.
//!
//! ```text
//! cargo run --release -p rocketmq-dedup-bench -- --quick --json bench-quick.json   # ~2 min
//! cargo run --release -p rocketmq-dedup-bench -- --full --json bench-full.json     # medians of 3
//! cargo run --release -p rocketmq-dedup-bench -- --quick --listeners plain,redis,redis-mux
//! ```
//!
//! Numbers are ratios measured in one run on a shared, noisy machine; they are not assertions.

mod chart;
mod consume;
mod engine;
mod hot_path;
mod measure;
mod reference;
mod scale;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use rocketmq_dedup_testkit::{
    unique_name, ClientEnv, MariaDbServer, RedisCluster, RedisOptions, RedisServer, RocketMqStack,
    StackOptions,
};
use rocketmq_model::common::message::message_single::Message;
use rocketmq_model::common::message::MessageTrait;

#[derive(Debug, Parser)]
#[command(about = "rocketmq-dedup benchmark")]
struct Cli {
    /// Small backlog, one repetition (about two minutes).
    #[arg(long, conflicts_with = "full")]
    quick: bool,
    /// Larger backlog, medians of three repetitions.
    #[arg(long)]
    full: bool,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Only these listeners (comma-separated; default: all). Ratios that need a listener left
    /// out print as not measured.
    #[arg(long, value_delimiter = ',')]
    listeners: Vec<Kind>,
    /// Messages per backlog instead of the mode's (3 000 quick, 20 000 full): a longer run
    /// to profile one scenario.
    #[arg(long)]
    backlog: Option<usize>,
    /// Repetitions instead of the mode's (1 quick, 3 full); every scenario runs once per
    /// repetition, the repetitions one after another (interleaved).
    #[arg(long)]
    reps: Option<usize>,
    /// Only these scenarios (comma-separated `<duplicates %>:<batch>:<handler>`, e.g.
    /// `0:1:trivial,0:32:trivial`; default: all): more repetitions of the few that matter to a
    /// question in the same time. Ratios that need a scenario left out print as not measured.
    #[arg(long, value_delimiter = ',')]
    only: Vec<ScenarioId>,
    /// The bench binary of an earlier commit: listener `previous` is its `redis` listener,
    /// run against the same broker and backlog, interleaved with this one's
    /// (`redis_vs_previous_commit_*`).
    #[arg(long)]
    previous_bench: Option<std::path::PathBuf>,
    #[command(subcommand)]
    role: Option<Role>,
}

#[derive(Debug, Subcommand)]
enum Role {
    /// One scenario (started by the run itself).
    #[command(hide = true)]
    Consume(consume::Scenario),
    /// Memory store bytes per record (started by the run itself).
    #[command(hide = true)]
    MemoryStore {
        #[arg(long)]
        records: usize,
    },
    /// The listener's own CPU per message without a broker (memory store, trivial handler,
    /// one thread), at batch 1 and 32.
    Engine {
        /// Messages per batch size.
        #[arg(long, default_value_t = 200_000)]
        messages: usize,
    },
    /// The batch-1 hot path without a broker: our threads call each listener with one fresh
    /// message at a time against a local Redis server; interleaved rounds, the median and
    /// range of each listener's throughput over the floor's in the same round.
    HotPath {
        /// Listeners to measure (floor, reference, memory and the redis kinds).
        #[arg(long, value_delimiter = ',', default_value = "floor,redis,reference")]
        kinds: Vec<Kind>,
        #[arg(long, default_value = "trivial")]
        work: Work,
        #[arg(long, default_value_t = 4)]
        threads: usize,
        /// Messages per listener and round.
        #[arg(long, default_value_t = 40_000)]
        messages: usize,
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Messages per listener call.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// The Redis kinds' `commit_linger` in microseconds, instead of the store's default.
        #[arg(long)]
        commit_linger_us: Option<u64>,
    },
    /// Redis memory per CONSUMED record (`used_memory`) in the store's layout and the one-key
    /// layouts, claims a second against a loaded and an empty Redis, and a projection.
    RedisMemory {
        #[arg(long, default_value_t = 1_000_000)]
        records: usize,
    },
    /// The records hash at scale: the slowest commit against a hash of `fields` fields, and
    /// memory per live record after a burst of 20 times `rate`.
    RedisScale {
        #[arg(long, default_value_t = 1_000_000)]
        fields: u64,
        #[arg(long, default_value_t = 12_000)]
        commits: usize,
        #[arg(long, default_value_t = 500)]
        rate: u64,
        #[arg(long, default_value_t = 8)]
        record_ttl_s: u64,
        /// Repetitions, one after another; the ratio lines print the median and the range.
        #[arg(long, default_value_t = 3)]
        reps: usize,
    },
    /// Draws the SVG chart of a JSON report written earlier (beside it, `.svg`).
    Chart {
        /// The JSON report.
        json: std::path::PathBuf,
    },
}

/// The listener under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Kind {
    Plain,
    /// One blocking `SET NX PX` per message on the consume thread's own connection: the least
    /// a dedup with one round trip per message costs ([`reference::FloorListener`]).
    Floor,
    /// The floor plus the previous message's commit script in the same pipeline: the least a
    /// correct one-round-trip dedup costs (hot-path only; [`reference::FloorWithCommit`]).
    #[value(name = "floor-commit")]
    FloorWithCommit,
    Memory,
    Redis,
    /// The Java library's algorithm as Java runs it ([`reference::ReferenceListener`]).
    Reference,
    /// The MySQL store (MariaDB here).
    Mysql,
    /// The MySQL transactional inbox.
    Inbox,
    /// The Redis store on a Redis Cluster of 3 masters.
    Cluster,
    /// The Redis store with `ack_before_commit(false)`: the commit on the ack path (the
    /// default before it moved off it), for the ablation.
    #[value(name = "redis-sync")]
    RedisSyncCommit,
    /// The Redis store with `near_cache(0)`: every copy asks Redis, for the ablation.
    #[value(name = "redis-nonc")]
    RedisNoNearCache,
    /// The Redis store with `consume_thread_connections(0)`: every call through the
    /// multiplexed connection, for the ablation.
    #[value(name = "redis-mux")]
    RedisMultiplexed,
    /// The Redis store with `commit_linger(ZERO)`: every background commit sends its own
    /// pipeline instead of riding the next claim's, for the ablation.
    #[value(name = "redis-nolinger")]
    RedisNoLinger,
    /// The Redis store with `script_claims(true)`: a claim is a Lua script that reads and
    /// writes at once (no claim left a moment on a CONSUMED record), for the ablation.
    #[value(name = "redis-script")]
    RedisScriptClaims,
    /// The Redis store wrapped in `JavaKeys`: the Java library's keys honoured and written
    /// beside the records (a rolling migration from RocketMQDedupListener).
    #[value(name = "redis-java-keys")]
    RedisJavaKeys,
    /// The `redis` listener of the bench binary `--previous-bench` names (an earlier commit).
    Previous,
}

impl Kind {
    /// Every listener, in the order the run measures them.
    pub const ALL: [Kind; 16] = [
        Kind::Plain,
        Kind::Floor,
        Kind::FloorWithCommit,
        Kind::Memory,
        Kind::Redis,
        Kind::Reference,
        Kind::Mysql,
        Kind::Inbox,
        Kind::Cluster,
        Kind::RedisSyncCommit,
        Kind::RedisNoNearCache,
        Kind::RedisMultiplexed,
        Kind::RedisNoLinger,
        Kind::RedisScriptClaims,
        Kind::RedisJavaKeys,
        Kind::Previous,
    ];

    /// Whether this is a dedup listener of this library (its handler is async or blocking);
    /// the others run every work in its blocking form.
    pub fn is_dedup_listener(self) -> bool {
        !matches!(
            self,
            Kind::Plain | Kind::Floor | Kind::FloorWithCommit | Kind::Reference
        )
    }
}

/// What the handler does per message, and how it is written: an async handler (for the dedup
/// listeners `impl DedupHandler`; for the listeners without a handler trait, the same future
/// driven to completion on the consume thread) or a blocking closure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Work {
    /// Nothing, in an async handler.
    Trivial,
    /// Nothing, in a blocking closure.
    #[value(name = "trivial-blocking")]
    TrivialBlocking,
    /// Blocks its thread for 1 ms (a synchronous database call), in a blocking closure.
    Sleep1ms,
    /// Awaits a 1 ms Tokio timer (an async database call), in an async handler.
    #[value(name = "async1ms")]
    Async1ms,
    /// About 20 us of CPU work (a loop), in a blocking closure.
    Cpu,
}

impl Work {
    /// The work a listener without a handler trait runs for this one: the same, but a
    /// trivial handler is trivial however it is written.
    pub fn blocking_form(self) -> Work {
        match self {
            Work::TrivialBlocking => Work::Trivial,
            other => other,
        }
    }

    /// Whether a dedup listener's handler is a blocking closure.
    pub fn is_blocking(self) -> bool {
        matches!(self, Work::TrivialBlocking | Work::Sleep1ms | Work::Cpu)
    }

    /// The work of a blocking closure, on the calling thread.
    pub fn run_blocking(self) {
        match self {
            Work::Sleep1ms => std::thread::sleep(Duration::from_millis(1)),
            Work::Cpu => cpu_loop(),
            _ => {}
        }
    }

    /// The work of an async handler.
    pub async fn run_async(self) {
        match self {
            Work::Async1ms | Work::Sleep1ms => tokio::time::sleep(Duration::from_millis(1)).await,
            Work::Cpu => cpu_loop(),
            _ => {}
        }
    }

    /// The work as a listener without a handler trait runs it on its consume thread: a
    /// blocking closure called, an async handler's future driven on `runtime` (inside
    /// `block_in_place` where the thread is in a runtime already, as the dedup listeners do).
    pub fn run_on_thread(self, runtime: &tokio::runtime::Handle) {
        match self {
            Work::Async1ms => match tokio::runtime::Handle::try_current() {
                Ok(_) => tokio::task::block_in_place(|| runtime.block_on(self.run_async())),
                Err(_) => runtime.block_on(self.run_async()),
            },
            other => other.run_blocking(),
        }
    }
}

/// About 20 us of arithmetic on this machine (a fixed count of steps, not a clock).
fn cpu_loop() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..20_000u64 {
        x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i));
    }
    std::hint::black_box(x);
}

/// Peak resident set size of this process, in KiB.
pub fn peak_rss_kb() -> u64 {
    proc_status("VmHWM:")
}

/// CPU time this process has used so far, user and system, summed over its threads.
pub fn cpu_time() -> Duration {
    // SAFETY: `getrusage` writes the struct it is given and nothing else.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Duration::from_micros(us(usage.ru_utime) + us(usage.ru_stime))
}

/// The whole machine's CPU time: the time every thread of every process (kernel threads
/// included) has run, summed from `/proc/<pid>/task/<tid>/schedstat` (nanoseconds, where
/// `/proc/stat` counts 10 ms ticks, too coarse for a scenario of a tenth of a second).
/// Threads that end between two readings drop out; in a scenario no thread that matters does.
#[derive(Debug, Clone, Copy)]
pub struct MachineCpu {
    /// Time the threads ran.
    pub busy: Duration,
    /// When it was read.
    pub at: std::time::Instant,
}

impl MachineCpu {
    /// The sum now.
    pub fn now() -> Self {
        let mut ns: u64 = 0;
        let tasks = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .bytes()
                    .all(|b| b.is_ascii_digit())
            })
            .flat_map(|process| {
                std::fs::read_dir(process.path().join("task"))
                    .into_iter()
                    .flatten()
                    .flatten()
            });
        for task in tasks {
            if let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) {
                ns += stat
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
        MachineCpu {
            busy: Duration::from_nanos(ns),
            at: std::time::Instant::now(),
        }
    }

    /// What ran between `earlier` and `self`.
    pub fn since(self, earlier: MachineCpu) -> MachineCpu {
        MachineCpu {
            busy: self.busy.saturating_sub(earlier.busy),
            at: self.at,
        }
    }

    /// The share of the cores' time that was busy between `earlier` and `self` (0 to 1).
    pub fn busy_share(self, earlier: MachineCpu) -> f64 {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let wall = self.at.duration_since(earlier.at).as_secs_f64();
        self.busy.saturating_sub(earlier.busy).as_secs_f64() / (wall * cores).max(1e-9)
    }
}

/// Resident set size of this process now, in KiB.
pub fn rss_kb() -> u64 {
    proc_status("VmRSS:")
}

/// The number in a field of `/proc/self/status` (KiB for the memory fields, a count for
/// `Threads:`); 0 when it cannot be read.
pub fn proc_status(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    rocketmq_dedup_stack::serve_if_requested();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    match cli.role {
        Some(Role::Consume(scenario)) => {
            let result = runtime.block_on(consume::run(scenario))?;
            println!("RESULT {result}");
        }
        Some(Role::HotPath {
            kinds,
            work,
            threads,
            messages,
            rounds,
            batch,
            commit_linger_us,
        }) => runtime.block_on(hot_path_report(
            &kinds,
            work,
            (threads, messages, rounds, batch),
            commit_linger_us.map(Duration::from_micros),
        ))?,
        Some(Role::RedisScale {
            fields,
            commits,
            rate,
            record_ttl_s,
            reps,
        }) => runtime.block_on(async {
            let redis = rocketmq_dedup_testkit::RedisServer::start()?;
            let (mut slowest, mut healed) = (Vec::new(), Vec::new());
            for _ in 0..reps.max(1) {
                let commit = scale::slowest_commit(&redis, fields, commits).await?;
                commit.print();
                slowest.push(commit.slowest_ms);
                let burst = scale::burst(&redis, rate, Duration::from_secs(record_ttl_s)).await?;
                burst.print();
                healed.push(burst.healed_bytes / burst.steady_bytes);
            }
            scale::print_ratio("redis_slowest_commit_ms_1e6_fields", slowest, "<=", 2.0);
            scale::print_ratio("redis_bytes_after_burst_vs_steady", healed, "<=", 1.2);
            Ok::<(), anyhow::Error>(())
        })?,
        Some(Role::RedisMemory { records }) => runtime.block_on(async {
            let redis = rocketmq_dedup_testkit::RedisServer::start()?;
            measure::redis_bytes_per_record(&redis, records)
                .await?
                .print();
            Ok::<(), anyhow::Error>(())
        })?,
        Some(Role::Chart { json }) => {
            let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json)?)?;
            let chart = json.with_extension("svg");
            std::fs::write(&chart, chart::from_report(&report))?;
            println!("wrote {}", chart.display());
        }
        Some(Role::Engine { messages }) => {
            let us = engine::cpu_us_per_message(messages, &[1, 32])?;
            println!(
                "RESULT {}",
                serde_json::json!({ "batch_1_us": us[0], "batch_32_us": us[1] })
            );
        }
        Some(Role::MemoryStore { records }) => {
            let bytes = runtime.block_on(measure::memory_store_bytes_per_record(records));
            println!(
                "RESULT {}",
                serde_json::json!({ "bytes_per_record": bytes })
            );
        }
        None => {
            let listeners = match cli.listeners.is_empty() {
                true => Kind::ALL.to_vec(),
                false => cli.listeners,
            };
            let plan = Plan {
                full: cli.full,
                backlog: cli.backlog,
                reps: cli.reps,
                listeners,
                only: cli.only,
                previous: cli.previous_bench,
            };
            runtime.block_on(drive(plan, cli.json))?
        }
    }
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

/// Runs [`hot_path::measure`] on a local Redis server and prints each listener's rounds.
async fn hot_path_report(
    kinds: &[Kind],
    work: Work,
    plan: (usize, usize, usize, usize),
    commit_linger: Option<Duration>,
) -> anyhow::Result<()> {
    // `REDIS_URL` names a server to use instead (to look at its command stats).
    let redis = RedisServer::start()?;
    let results = hot_path::measure(redis.url(), kinds, work, plan, commit_linger).await?;
    let floor = results
        .iter()
        .find(|(k, _)| *k == Kind::Floor)
        .map(|(_, r)| r.clone());
    for (kind, rounds) in &results {
        let mut tput: Vec<f64> = rounds.iter().map(|r| r.msgs_per_s).collect();
        let mut cpu: Vec<f64> = rounds.iter().map(|r| r.cpu_us_per_msg).collect();
        let mut server_cpu: Vec<f64> = rounds.iter().map(|r| r.server_cpu_us_per_msg).collect();
        tput.sort_by(f64::total_cmp);
        cpu.sort_by(f64::total_cmp);
        server_cpu.sort_by(f64::total_cmp);
        let mut line = format!(
            "hot-path {:<15} {} msg/s median {:>8.0} ({:.0}..{:.0}), cpu us/msg consumer {:.1} redis-server {:.1}",
            name(*kind),
            work_name(work),
            tput[tput.len() / 2],
            tput[0],
            tput[tput.len() - 1],
            cpu[cpu.len() / 2],
            server_cpu[server_cpu.len() / 2]
        );
        if let Some(floor) = &floor {
            let mut ratios: Vec<f64> = rounds
                .iter()
                .zip(floor)
                .map(|(r, f)| r.msgs_per_s / f.msgs_per_s)
                .collect();
            ratios.sort_by(f64::total_cmp);
            line += &format!(
                ", vs floor {:.3} ({:.3}..{:.3})",
                ratios[ratios.len() / 2],
                ratios[0],
                ratios[ratios.len() - 1]
            );
        }
        println!("{line}");
    }
    Ok(())
}

/// Runs this program in `args`' role and parses its `RESULT` line.
fn child(args: &[String]) -> anyhow::Result<serde_json::Value> {
    child_of(&std::env::current_exe()?, args)
}

/// Runs the bench program `exe` in `args`' role and parses its `RESULT` line.
fn child_of(exe: &std::path::Path, args: &[String]) -> anyhow::Result<serde_json::Value> {
    let out = Command::new(exe)
        .args(args)
        .env("RUST_LOG", "error")
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().find_map(|l| l.strip_prefix("RESULT "));
    match line {
        Some(json) => Ok(serde_json::from_str(json)?),
        None => anyhow::bail!(
            "scenario {:?} failed: {}",
            args,
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or_default()
        ),
    }
}

/// Sends `n` messages to `topic`: with `duplicates`, every second message is a resend of the
/// one before with its UNIQ_KEY (a producer retry).
async fn preload(
    client: &ClientEnv,
    namesrv: &str,
    topic: &str,
    n: usize,
    duplicates: bool,
) -> anyhow::Result<()> {
    let producer = std::sync::Arc::new(client.producer(namesrv).await?);
    let first = rocketmq_dedup_testkit::send_with_retry(
        &producer,
        &message(topic, 0),
        Duration::from_secs(30),
    )
    .await?;
    let mut last_uniq = first.msg_id.map(|m| m.to_string()).unwrap_or_default();
    // Pairs go in order; the pairs themselves are sent 32 at a time.
    let mut i = 1;
    while i < n {
        let mut sends = Vec::new();
        for _ in 0..32 {
            if i >= n {
                break;
            }
            let mut msg = message(topic, i);
            if duplicates && i % 2 == 1 {
                msg.put_property("UNIQ_KEY".into(), last_uniq.as_str().into());
            }
            let producer = producer.clone();
            sends.push(async move {
                rocketmq_dedup_testkit::send_with_retry(&producer, &msg, Duration::from_secs(30))
                    .await
            });
            i += 1;
        }
        for result in futures::future::join_all(sends).await {
            if let Some(uniq) = result?.msg_id {
                last_uniq = uniq.to_string();
            }
        }
    }
    Ok(())
}

fn message(topic: &str, i: usize) -> Message {
    Message::builder()
        .topic(topic)
        .tags("TagA")
        .body_slice(format!(r#"{{"orderId":"o-{i}","amountCents":{i}}}"#).as_bytes())
        .build_unchecked()
}

type Key = (u8, u32, Work, Kind); // (duplicates %, batch, work, kind)

/// The handlers measured at each duplicate share and batch size: every form at the default
/// batch size 1; at 32 an async 1 ms handler would run the batch's handlers concurrently (a
/// different workload from plain's), so only the blocking one; duplicates with the trivial
/// handler only.
fn works(dup: u8, batch: u32) -> &'static [Work] {
    match (dup, batch) {
        (0, 1) => &[
            Work::Trivial,
            Work::TrivialBlocking,
            Work::Sleep1ms,
            Work::Async1ms,
            Work::Cpu,
        ],
        (0, _) => &[Work::Trivial, Work::TrivialBlocking, Work::Sleep1ms],
        _ => &[Work::Trivial],
    }
}

/// The backlogs' shares of duplicates, in percent.
const DUPLICATE_SHARES: [u8; 2] = [0, 50];

/// The batch sizes measured: RocketMQ's default and a large one.
const BATCH_SIZES: [u32; 2] = [1, 32];

/// A scenario of the run as `--only` names it: `<duplicates %>:<batch>:<handler>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ScenarioId {
    dup: u8,
    batch: u32,
    work: Work,
}

impl std::str::FromStr for ScenarioId {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let usage = "<duplicates %>:<batch>:<handler>, e.g. 0:1:trivial";
        let mut parts = text.splitn(3, ':');
        let (Some(dup), Some(batch), Some(work)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("{text:?} is not {usage}"));
        };
        let id = ScenarioId {
            dup: dup
                .parse()
                .map_err(|_| format!("{dup:?} is not a share: {usage}"))?,
            batch: batch
                .parse()
                .map_err(|_| format!("{batch:?} is not a batch size: {usage}"))?,
            work: Work::from_str(work, true)?,
        };
        let measured = DUPLICATE_SHARES.contains(&id.dup) && BATCH_SIZES.contains(&id.batch);
        match measured && works(id.dup, id.batch).contains(&id.work) {
            true => Ok(id),
            false => Err(format!(
                "{text:?} is not a scenario of the run (0 or 50% duplicates, batch 1 or 32; \
                 at 50% and at batch 32 not every handler)"
            )),
        }
    }
}

/// What a run measures.
struct Plan {
    full: bool,
    /// Messages per backlog; the mode's when `None`.
    backlog: Option<usize>,
    /// Repetitions; the mode's when `None`.
    reps: Option<usize>,
    listeners: Vec<Kind>,
    /// Only these scenarios; every one when empty.
    only: Vec<ScenarioId>,
    /// The bench binary whose `redis` listener is `previous`.
    previous: Option<std::path::PathBuf>,
}

async fn drive(plan: Plan, json: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let Plan {
        full,
        backlog,
        reps,
        listeners,
        only,
        previous,
    } = plan;
    let listeners = &listeners[..];
    let (mode_backlog, mode_reps) = if full { (20_000, 3) } else { (3_000, 1) };
    let (backlog, reps) = (backlog.unwrap_or(mode_backlog), reps.unwrap_or(mode_reps));
    let exe = std::env::current_exe()?;
    std::env::remove_var("ROCKETMQ_NAMESRV_ADDR");
    std::env::remove_var("REDIS_URL");
    let stack = RocketMqStack::start(StackOptions::new(&exe))?;
    let redis = RedisServer::start_local(RedisOptions::default())?;
    let cluster = RedisCluster::start_local(3, 0)?;
    let mariadb = MariaDbServer::start_local()?;
    let mysql = rocketmq_dedup::sql::mysql::MySqlStore::builder(mariadb.url())
        .connect()
        .await?;
    mysql.migrate().await?;
    let namesrv = stack.namesrv_addr();
    let client = ClientEnv::new("bench-producer")?;
    let (fresh_topic, dup_topic) = (unique_name("BenchFresh"), unique_name("BenchDup"));
    eprintln!(
        "bench: pre-loading {backlog} messages into each of two topics (0% and 50% duplicates)"
    );
    preload(&client, &namesrv, &fresh_topic, backlog, false).await?;
    preload(&client, &namesrv, &dup_topic, backlog, true).await?;
    client.shutdown().await;

    let mut results: BTreeMap<Key, Vec<serde_json::Value>> = BTreeMap::new();
    for rep in 0..reps {
        for dup in DUPLICATE_SHARES {
            for batch in BATCH_SIZES {
                for &work in works(dup, batch) {
                    let id = ScenarioId { dup, batch, work };
                    if !only.is_empty() && !only.contains(&id) {
                        continue;
                    }
                    // Every other repetition runs the listeners in the reverse order, so
                    // that neither of a pair always comes first after another scenario.
                    let in_order: Vec<Kind> = match rep % 2 {
                        0 => listeners.to_vec(),
                        _ => listeners.iter().rev().copied().collect(),
                    };
                    for kind in in_order {
                        if !kind.is_dedup_listener() && work != work.blocking_form() {
                            continue; // the same run as its blocking form's
                        }
                        // The earlier commit's `redis` listener, from its own binary.
                        let (program, kind_arg) = match (kind, &previous) {
                            (Kind::Previous, None) => continue,
                            (Kind::Previous, Some(bin)) => (bin.clone(), name(Kind::Redis)),
                            _ => (exe.clone(), name(kind)),
                        };
                        let _ = redis.command(&["FLUSHALL"]);
                        for port in cluster.running_ports() {
                            let _ = cluster.command(port, &["FLUSHALL"]);
                        }
                        sqlx::query("DELETE FROM t_rocketmq_dedup")
                            .execute(mysql.pool())
                            .await?;
                        let topic = if dup == 0 { &fresh_topic } else { &dup_topic };
                        let args: Vec<String> = [
                            "consume",
                            "--kind",
                            kind_arg,
                            "--work",
                            work_name(work),
                            "--batch",
                            &batch.to_string(),
                            "--namesrv",
                            &namesrv,
                            "--redis",
                            redis.url(),
                            "--mysql",
                            mariadb.url(),
                            "--cluster",
                            cluster.url(),
                            "--topic",
                            topic,
                            "--group",
                            &unique_name("bench"),
                            "--expect",
                            &backlog.to_string(),
                        ]
                        .iter()
                        .map(|s| s.to_string())
                        .collect();
                        let result = child_of(&program, &args)?;
                        eprintln!(
                            "bench: rep {} dup {dup:>2}% batch {batch:>2} {:<8} {:<9} {:>8.0} msg/s",
                            rep + 1,
                            work_name(work),
                            name(kind),
                            result["msgs_per_s"].as_f64().unwrap_or(0.0)
                        );
                        results
                            .entry((dup, batch, work, kind))
                            .or_default()
                            .push(result);
                    }
                }
            }
        }
    }

    let memory_store = child(&[
        "memory-store".into(),
        "--records".into(),
        (if full { 1_000_000 } else { 300_000 }).to_string(),
    ])?;
    let engine = child(&[
        "engine".into(),
        "--messages".into(),
        (if full { 200_000 } else { 50_000 }).to_string(),
    ])?;
    let trips = measure::round_trips_per_batch(redis.url()).await?;
    let cluster_trips = measure::round_trips_per_batch(cluster.url()).await?;
    // 10^7 records in full mode, 10^6 in quick mode (10^5 in a debug build, which CI runs only
    // to prove the bench works: the load is the client's CPU there).
    let records = match (full, cfg!(debug_assertions)) {
        (true, _) => 10_000_000,
        (false, false) => 1_000_000,
        (false, true) => 100_000,
    };
    let bytes = measure::redis_bytes_per_record(&redis, records).await?;
    // 10^6 fields in every mode (the figure's name says so); fewer commits in quick mode.
    let slowest_commit =
        scale::slowest_commit(&redis, 1_000_000, if full { 12_000 } else { 2_000 }).await?;
    let burst = match full {
        true => scale::burst(&redis, 1_000, Duration::from_secs(16)).await?,
        false => scale::burst(&redis, 1_000, Duration::from_secs(8)).await?,
    };
    let report = measure::Report {
        backlog,
        reps,
        scenarios: results,
        engine_us: (
            engine["batch_1_us"].as_f64().unwrap_or(f64::NAN),
            engine["batch_32_us"].as_f64().unwrap_or(f64::NAN),
        ),
        memory_store_bytes_per_record: memory_store["bytes_per_record"]
            .as_f64()
            .unwrap_or(f64::NAN),
        round_trips: trips,
        cluster_round_trips: cluster_trips,
        redis_bytes: bytes,
        slowest_commit,
        burst,
    };
    let json_report = report.print();
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_string_pretty(&json_report)?)?;
        let chart = path.with_extension("svg");
        std::fs::write(&chart, chart::from_report(&json_report))?;
        eprintln!("bench: wrote {} and {}", path.display(), chart.display());
    }
    drop(stack);
    Ok(())
}

pub fn name(kind: Kind) -> &'static str {
    match kind {
        Kind::Plain => "plain",
        Kind::Floor => "floor",
        Kind::FloorWithCommit => "floor-commit",
        Kind::Memory => "memory",
        Kind::Redis => "redis",
        Kind::Reference => "reference",
        Kind::Mysql => "mysql",
        Kind::Inbox => "inbox",
        Kind::Cluster => "cluster",
        Kind::RedisSyncCommit => "redis-sync",
        Kind::RedisNoNearCache => "redis-nonc",
        Kind::RedisMultiplexed => "redis-mux",
        Kind::RedisNoLinger => "redis-nolinger",
        Kind::RedisScriptClaims => "redis-script",
        Kind::RedisJavaKeys => "redis-java-keys",
        Kind::Previous => "previous",
    }
}

pub fn work_name(work: Work) -> &'static str {
    match work {
        Work::Trivial => "trivial",
        Work::TrivialBlocking => "trivial-blocking",
        Work::Sleep1ms => "sleep1ms",
        Work::Async1ms => "async1ms",
        Work::Cpu => "cpu",
    }
}

#[cfg(test)]
mod tests {
    use super::{ScenarioId, Work};

    #[test]
    fn only_names_scenarios_as_share_batch_and_handler() {
        let id: ScenarioId = "0:32:trivial".parse().unwrap();
        assert_eq!(
            id,
            ScenarioId {
                dup: 0,
                batch: 32,
                work: Work::Trivial
            }
        );
        let id: ScenarioId = "0:1:trivial-blocking".parse().unwrap();
        assert_eq!(id.work, Work::TrivialBlocking);
    }

    #[test]
    fn only_refuses_what_the_run_does_not_measure() {
        for text in [
            "0:1",
            "x:1:trivial",
            "0:1:nothing",
            "50:1:cpu",
            "0:32:async1ms",
            "10:1:trivial",
            "0:8:trivial",
        ] {
            assert!(text.parse::<ScenarioId>().is_err(), "{text} was accepted");
        }
    }
}
