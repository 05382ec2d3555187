//! The chaos run: three consumer processes of one group share a Redis dedup store while a
//! producer sends orders with 20% duplicates, and the run SIGKILLs and restarts consumers,
//! crashes and restarts Redis (append-only file, fsync always) twice and the broker once.
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
//! duplicate_effects > in_flight_at_kills.
//!
//! Run: `cargo run -p rocketmq-dedup-harness --bin chaos -- --quick` (5 000 messages, about a minute; CI runs it) or
//! `cargo run --release -p rocketmq-dedup-harness --bin chaos -- --full` (100 000 messages). It always starts its
//! own broker and Redis (it must kill them), ignoring `ROCKETMQ_NAMESRV_ADDR` and `REDIS_URL`.

#[path = "../../../../examples/support/orders.rs"]
mod orders;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use rocketmq_client_rust::{
    ClientResult, ConsumeConcurrentlyContext, ConsumeConcurrentlyStatus, DefaultMQProducer,
    MessageListenerConcurrently,
};
use rocketmq_dedup::record_key::RecordKey;
use rocketmq_dedup::store::{CommitOutcome, RedisStore};
use rocketmq_dedup::{
    DedupConcurrentListener, DedupHandler, DedupKey, HandlerError, KeyError, KeyStrategy,
    StoreError,
};
use rocketmq_dedup_testkit::process::ChildProcess;
use rocketmq_dedup_testkit::{
    send_with_retry, unique_name, ClientEnv, ConsumerSpec, RedisOptions, RedisServer,
    RocketMqStack, StackOptions,
};
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_model::common::message::MessageTrait;

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
    #[command(subcommand)]
    role: Option<Role>,
}

#[derive(Debug, Subcommand)]
enum Role {
    /// One consumer process (started by the run itself).
    #[command(hide = true)]
    Consumer {
        #[arg(long)]
        namesrv: String,
        #[arg(long)]
        redis: String,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        group: String,
        #[arg(long)]
        ledger: PathBuf,
        #[arg(long)]
        batch: u32,
    },
}

fn main() {
    rocketmq_dedup_stack::serve_if_requested();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let code = match cli.role {
        Some(Role::Consumer {
            namesrv,
            redis,
            topic,
            group,
            ledger,
            batch,
        }) => match runtime.block_on(consumer(namesrv, redis, topic, group, ledger, batch)) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("chaos consumer {}: {e}", std::process::id());
                2
            }
        },
        None => {
            let messages = cli
                .messages
                .unwrap_or(if cli.full { 100_000 } else { 5_000 });
            let kills = if cli.full { 6 } else { 4 };
            match runtime.block_on(drive(messages, kills, cli.batch)) {
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

// ---------------------------------------------------------------- the consumer process

/// Appends lines to the ledger; one `write` per line, in append mode, so processes interleave
/// whole lines.
struct Ledger(Mutex<std::fs::File>);

impl Ledger {
    fn open(path: &Path) -> std::io::Result<Self> {
        Ok(Ledger(Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        )))
    }

    fn line(&self, line: String) {
        let mut file = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // A lost ledger line would hide an effect: fail loudly rather than undercount.
        file.write_all(line.as_bytes()).expect("ledger write");
    }
}

fn order_id_of(msg: &MessageExt) -> String {
    serde_json::from_slice::<serde_json::Value>(msg.body_slice())
        .ok()
        .and_then(|v| v["orderId"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

struct ChaosHandler {
    ledger: Arc<Ledger>,
    pid: u32,
}

impl DedupHandler for ChaosHandler {
    async fn handle(&self, msg: &MessageExt) -> Result<(), HandlerError> {
        let order = order_id_of(msg);
        if order.is_empty() {
            return Err("order without orderId".into());
        }
        self.ledger.line(format!("E {} {order}\n", self.pid));
        Ok(())
    }

    fn dedup_key(&self, msg: &MessageExt) -> Result<DedupKey, KeyError> {
        KeyStrategy::json_pointer("/orderId").derive(msg)
    }

    fn on_settled(&self, key: &RecordKey, result: Result<CommitOutcome, &StoreError>) {
        let order = key.as_str().rsplit(':').next().unwrap_or_default();
        let outcome = match result {
            Ok(CommitOutcome::Committed) => "committed",
            Ok(CommitOutcome::AlreadyConsumed) => "already_consumed",
            Ok(CommitOutcome::Lost) => "lost",
            Err(_) => "failed",
        };
        self.ledger
            .line(format!("C {} {order} {outcome}\n", self.pid));
    }
}

/// Records every ack in the ledger, around the dedup listener.
struct AckRecorder {
    inner: DedupConcurrentListener,
    ledger: Arc<Ledger>,
    pid: u32,
}

impl MessageListenerConcurrently for AckRecorder {
    fn consume_message(
        &self,
        msgs: &[&MessageExt],
        context: &ConsumeConcurrentlyContext,
    ) -> ClientResult<ConsumeConcurrentlyStatus> {
        let status = self.inner.consume_message(msgs, context)?;
        if status == ConsumeConcurrentlyStatus::ConsumeSuccess {
            let now = unix_ms();
            for msg in msgs {
                self.ledger
                    .line(format!("A {} {} {now}\n", self.pid, order_id_of(msg)));
            }
        }
        Ok(status)
    }
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

async fn consumer(
    namesrv: String,
    redis: String,
    topic: String,
    group: String,
    ledger: PathBuf,
    batch: u32,
) -> Result<(), Box<dyn std::error::Error>> {
    let pid = std::process::id();
    let ledger = Arc::new(Ledger::open(&ledger)?);
    // Redis may be down while this process (re)starts: keep trying.
    let store = loop {
        match RedisStore::builder(redis.as_str())
            .response_timeout(Duration::from_millis(500))
            .connect()
            .await
        {
            Ok(store) => break store,
            Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    };
    let handler = Arc::new(ChaosHandler {
        ledger: ledger.clone(),
        pid,
    });
    let listener = DedupConcurrentListener::builder(handler)
        .namespace(group.as_str())
        .store(store)
        .processing_ttl(Duration::from_secs(5))
        .store_timeout(Duration::from_secs(1))
        .build()?;
    let client = ClientEnv::new("chaos-consumer")?;
    let spec = ConsumerSpec::new(&namesrv, &group, &topic).batch(batch);
    let recorder = AckRecorder {
        inner: listener.clone(),
        ledger,
        pid,
    };
    let mut consumer = client.consumer(&spec, recorder).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    term.recv().await;
    consumer.shutdown().await;
    client.shutdown().await;
    eprintln!("chaos consumer {pid}: {}", listener.stats().summary());
    Ok(())
}

// ---------------------------------------------------------------- the driver

struct Consumers {
    exe: PathBuf,
    args: Vec<String>,
    dir: PathBuf,
    slots: Vec<ChildProcess>,
    killed: HashSet<u32>,
    starts: usize,
}

impl Consumers {
    fn start(&mut self) -> std::io::Result<ChildProcess> {
        self.starts += 1;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("consumer").args(&self.args);
        cmd.env(
            "RUST_LOG",
            std::env::var("CHAOS_LOG").unwrap_or_else(|_| "error".into()),
        );
        ChildProcess::spawn(cmd, &self.dir.join(format!("consumer-{}.log", self.starts)))
    }

    fn kill_and_restart(&mut self, slot: usize) -> std::io::Result<()> {
        if let Some(pid) = self.slots[slot].id() {
            self.killed.insert(pid);
        }
        self.slots[slot].kill();
        std::thread::sleep(Duration::from_millis(500));
        self.slots[slot] = self.start()?;
        Ok(())
    }
}

fn log(started: Instant, what: &str) {
    println!("chaos [{:>6.1}s] {what}", started.elapsed().as_secs_f64());
}

async fn drive(
    messages: usize,
    kills: usize,
    batch: u32,
) -> Result<bool, Box<dyn std::error::Error>> {
    let started = Instant::now();
    let exe = std::env::current_exe()?;
    // This run must own (and kill) its broker and Redis.
    std::env::remove_var("ROCKETMQ_NAMESRV_ADDR");
    std::env::remove_var("REDIS_URL");
    log(
        started,
        "starting name server, broker and redis-server (appendonly, fsync always) on 127.0.0.1",
    );
    let mut stack = RocketMqStack::start(StackOptions::new(&exe))?;
    let mut redis = RedisServer::start_local(RedisOptions {
        appendonly: true,
        ..Default::default()
    })?;
    let dir = tempfile::Builder::new().prefix("dedup-chaos-").tempdir()?;
    let ledger_path = dir.path().join("ledger");
    std::fs::write(&ledger_path, "")?;
    let (topic, group) = (unique_name("ChaosOrders"), unique_name("chaos-payments"));
    let namesrv = stack.namesrv_addr();

    // Create the topic before the consumers subscribe.
    let client = ClientEnv::new("chaos-producer")?;
    let producer = Arc::new(client.producer(&namesrv).await?);
    send_with_retry(
        &producer,
        &orders::order_message(&topic, "warm-up", 0),
        Duration::from_secs(30),
    )
    .await?;

    let mut consumers = Consumers {
        exe: exe.clone(),
        args: [
            "--namesrv",
            &namesrv,
            "--redis",
            redis.url(),
            "--topic",
            &topic,
            "--group",
            &group,
            "--batch",
            &batch.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(["--ledger".to_owned(), ledger_path.display().to_string()])
        .collect(),
        dir: dir.path().to_owned(),
        slots: Vec::new(),
        killed: HashSet::new(),
        starts: 0,
    };
    for _ in 0..3 {
        let child = consumers.start()?;
        consumers.slots.push(child);
    }
    log(
        started,
        &format!("3 consumers started; sending {messages} messages (20% duplicates)"),
    );

    // The producer runs paced, so that the faults below land while messages flow.
    let rate = if messages > 20_000 { 1_000.0 } else { 250.0 };
    let send_time = Duration::from_secs_f64(messages as f64 / rate);
    let sender = tokio::spawn(produce(producer.clone(), topic.clone(), messages, rate));

    // Faults at fixed fractions of the send time.
    let mut schedule: Vec<(f64, Fault)> = vec![
        (0.10, Fault::KillConsumer(0)),
        (0.20, Fault::RestartRedis),
        (0.30, Fault::KillConsumer(1)),
        (0.45, Fault::RestartBroker),
        (0.55, Fault::KillConsumer(2)),
        (0.65, Fault::RestartRedis),
        (0.75, Fault::KillConsumer(0)),
        (0.85, Fault::KillConsumer(1)),
        (0.95, Fault::KillConsumer(2)),
    ];
    let mut consumer_kills = 0;
    schedule.retain(|(_, fault)| match fault {
        Fault::KillConsumer(_) => {
            consumer_kills += 1;
            consumer_kills <= kills
        }
        _ => true,
    });
    let mut down_windows: Vec<(u128, u128)> = Vec::new();
    for (at, fault) in schedule {
        let due = started + send_time.mul_f64(at) + Duration::from_secs(3);
        tokio::time::sleep_until(due.into()).await;
        match fault {
            Fault::KillConsumer(slot) => {
                log(started, &format!("SIGKILL consumer {slot} and restart it"));
                consumers.kill_and_restart(slot)?;
            }
            Fault::RestartRedis => {
                log(started, "SIGKILL redis-server and restart it");
                let from = unix_ms();
                redis.kill();
                tokio::time::sleep(Duration::from_millis(700)).await;
                redis.restart()?;
                down_windows.push((from, unix_ms()));
            }
            Fault::RestartBroker => {
                log(started, "SIGKILL the broker and restart it");
                tokio::task::block_in_place(|| stack.restart_broker())?;
            }
        }
    }
    let sent = sender.await?.map_err(|e| e.to_string())?;
    log(
        started,
        &format!(
            "sent {} messages ({} orders); waiting for every order",
            sent.messages, sent.unique
        ),
    );

    let patience = Duration::from_secs(if messages > 20_000 { 900 } else { 240 });
    let deadline = Instant::now() + patience;
    loop {
        let report = Report::read(&ledger_path, &consumers.killed, &down_windows, &sent.orders)?;
        if report.missing.is_empty() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    // Let late redeliveries show up, then stop the consumers gracefully.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for slot in &mut consumers.slots {
        slot.terminate(Duration::from_secs(10));
    }
    client.shutdown().await;

    let report = Report::read(&ledger_path, &consumers.killed, &down_windows, &sent.orders)?;
    println!(
        "chaos: sent={} unique={} effects={} lost={} duplicate_effects={} in_flight_at_kills={} acked_while_store_down={}",
        sent.messages,
        sent.unique,
        report.effects,
        report.missing.len(),
        report.duplicate_effects,
        report.in_flight_at_kills,
        report.acked_while_store_down
    );
    let mut by_process: Vec<String> = report
        .by_process
        .iter()
        .map(|(pid, n)| {
            format!(
                "{pid}{}:{n}",
                if consumers.killed.contains(pid) {
                    "(killed)"
                } else {
                    ""
                }
            )
        })
        .collect();
    by_process.sort();
    println!(
        "chaos: effects by consumer process: {}",
        by_process.join(" ")
    );
    println!(
        "chaos: consumer_kills={} redis_restarts={} broker_restarts=1 duplicated_orders={:?} took={:.0}s",
        consumers.killed.len(),
        down_windows.len(),
        report.duplicated.iter().take(10).collect::<Vec<_>>(),
        started.elapsed().as_secs_f64()
    );
    let ok = report.missing.is_empty()
        && report.acked_while_store_down == 0
        && report.duplicate_effects <= report.in_flight_at_kills;
    if !ok {
        println!(
            "chaos: FAILED (missing: {:?})",
            report.missing.iter().take(10).collect::<Vec<_>>()
        );
        println!("chaos: logs kept in {}", dir.keep().display());
    }
    drop(stack);
    Ok(ok)
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    KillConsumer(usize),
    RestartRedis,
    RestartBroker,
}

struct Sent {
    messages: usize,
    unique: usize,
    orders: HashSet<String>,
}

/// Sends `messages` at `rate` per second from 8 tasks; every 5th message repeats an earlier
/// order, alternately as a new message and as a resend with the same UNIQ_KEY.
async fn produce(
    producer: Arc<DefaultMQProducer>,
    topic: String,
    messages: usize,
    rate: f64,
) -> Result<Sent, Box<dyn std::error::Error + Send + Sync>> {
    const TASKS: usize = 8;
    let uniq_keys: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let (producer, topic, uniq_keys) = (producer.clone(), topic.clone(), uniq_keys.clone());
        tasks.push(tokio::spawn(async move {
            let mut sent = 0usize;
            for i in (task..messages).step_by(TASKS) {
                tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
                let (order, resend) = chaos_order(i);
                let mut msg = orders::order_message(&topic, &order, i as u64);
                if resend {
                    if let Some(uniq) = uniq_keys.lock().unwrap().get(&order) {
                        msg.put_property("UNIQ_KEY".into(), uniq.as_str().into());
                    }
                }
                let result = send_with_retry(&producer, &msg, Duration::from_secs(120)).await?;
                if let Some(uniq) = result.msg_id {
                    uniq_keys
                        .lock()
                        .unwrap()
                        .entry(order)
                        .or_insert_with(|| uniq.to_string());
                }
                sent += 1;
            }
            Ok::<usize, rocketmq_client_rust::ClientError>(sent)
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await??;
    }
    let orders: HashSet<String> = (0..messages).map(|i| chaos_order(i).0).collect();
    Ok(Sent {
        messages: total,
        unique: orders.len(),
        orders,
    })
}

/// The order of message `i`: every 5th message is a duplicate of an earlier order.
fn chaos_order(i: usize) -> (String, bool) {
    if i % 5 == 4 {
        let earlier = i - i / 5 - 1; // orders assigned so far, minus one
        let pick = (i / 5).wrapping_mul(7919) % (earlier + 1);
        (format!("o-{pick}"), (i / 5) % 2 == 1)
    } else {
        (format!("o-{}", i - i / 5), false)
    }
}

#[derive(Debug, Default)]
struct Report {
    effects: usize,
    duplicate_effects: usize,
    in_flight_at_kills: usize,
    acked_while_store_down: usize,
    missing: Vec<String>,
    duplicated: Vec<String>,
    /// Effects by consumer process id.
    by_process: HashMap<u32, usize>,
}

impl Report {
    fn read(
        ledger: &Path,
        killed: &HashSet<u32>,
        down: &[(u128, u128)],
        orders: &HashSet<String>,
    ) -> std::io::Result<Report> {
        let text = std::fs::read_to_string(ledger)?;
        let mut effects: HashMap<&str, usize> = HashMap::new();
        let mut unsettled: HashMap<(u32, &str), usize> = HashMap::new();
        let mut report = Report::default();
        for line in text.lines() {
            let parts: Vec<&str> = line.split(' ').collect();
            let pid: u32 = parts.get(1).and_then(|p| p.parse().ok()).unwrap_or(0);
            let order = parts.get(2).copied().unwrap_or_default();
            if !orders.contains(order) {
                continue; // the warm-up message
            }
            match parts[0] {
                "E" => {
                    *effects.entry(order).or_default() += 1;
                    *report.by_process.entry(pid).or_default() += 1;
                    *unsettled.entry((pid, order)).or_default() += 1;
                }
                "C" if parts.get(3) != Some(&"failed") => {
                    if let Some(n) = unsettled.get_mut(&(pid, order)) {
                        *n = n.saturating_sub(1);
                    }
                }
                "A" => {
                    let at: u128 = parts.get(3).and_then(|t| t.parse().ok()).unwrap_or(0);
                    let in_outage = down.iter().any(|(from, to)| (*from..=*to).contains(&at));
                    if in_outage && !effects.contains_key(order) {
                        report.acked_while_store_down += 1;
                    }
                }
                _ => {}
            }
        }
        report.effects = effects.values().sum();
        report.duplicate_effects = effects.values().map(|n| n.saturating_sub(1)).sum();
        report.duplicated = effects
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(o, _)| o.to_string())
            .collect();
        report.in_flight_at_kills = unsettled
            .iter()
            .filter(|((pid, _), _)| killed.contains(pid))
            .map(|(_, n)| *n)
            .sum();
        report.missing = orders
            .iter()
            .filter(|o| !effects.contains_key(o.as_str()))
            .cloned()
            .collect();
        report.missing.sort();
        Ok(report)
    }
}
