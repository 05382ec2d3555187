//! One scenario, in a process of its own: consume the whole backlog with one kind of listener
//! and report throughput, per-call latency, peak RSS and Redis round trips as one JSON line.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rocketmq_client_rust::{
    ClientResult, ConsumeConcurrentlyContext, ConsumeConcurrentlyStatus,
    MessageListenerConcurrently,
};
use rocketmq_dedup::sql::mysql::{MySqlInbox, MySqlStore};
use rocketmq_dedup::store::{MemoryStore, RedisStore};
use rocketmq_dedup::testing::RedisStoreProbe;
use rocketmq_dedup::{handler_fn, DedupConcurrentListener, DedupHandler, HandlerError};
use rocketmq_dedup_testkit::{ClientEnv, ConsumerSpec};
use rocketmq_model::common::message::message_ext::MessageExt;

use crate::reference::{FloorListener, ReferenceListener};
use crate::{Kind, Work};

/// Times each listener call and counts acked messages.
struct Timed {
    inner: Box<dyn MessageListenerConcurrently>,
    first_call: OnceLock<Mark>,
    calls_us: Mutex<Vec<u32>>,
    acked: AtomicU64,
    expect: u64,
    /// When the last message was acked.
    done_at: OnceLock<Mark>,
    /// Asks the standalone Redis server for its CPU time at the two marks.
    redis_info: Mutex<Option<redis::Connection>>,
}

/// A moment of the run: its time, the CPU time the process had used by then, the CPU time
/// the whole machine had been busy by then (every process: broker, Redis, consumer), and the
/// Redis server's own.
#[derive(Debug, Clone, Copy)]
struct Mark {
    at: Instant,
    cpu: Duration,
    machine: crate::MachineCpu,
    redis_server: Option<Duration>,
}

impl Mark {
    /// The start of the span. The slow readings (every thread's schedstat, a Redis round
    /// trip) are taken first, so the consumer's time and CPU start after them.
    fn start(redis_info: &Mutex<Option<redis::Connection>>) -> Self {
        let redis_server = redis_server_cpu(redis_info);
        let machine = crate::MachineCpu::now();
        let cpu = crate::cpu_time();
        Mark {
            at: Instant::now(),
            cpu,
            machine,
            redis_server,
        }
    }

    /// The end of the span: its time and CPU first, then the slow readings.
    fn end(redis_info: &Mutex<Option<redis::Connection>>) -> Self {
        let at = Instant::now();
        let cpu = crate::cpu_time();
        Mark {
            at,
            cpu,
            machine: crate::MachineCpu::now(),
            redis_server: redis_server_cpu(redis_info),
        }
    }
}

/// The CPU time the Redis server reports it has used (`INFO cpu`), user and system.
fn redis_server_cpu(redis_info: &Mutex<Option<redis::Connection>>) -> Option<Duration> {
    let mut conn = redis_info.lock().unwrap_or_else(|p| p.into_inner());
    let info: String = redis::cmd("INFO").arg("cpu").query(conn.as_mut()?).ok()?;
    let seconds = crate::measure::cpu_seconds_in_info(&info).ok()?;
    Some(Duration::from_secs_f64(seconds))
}

impl MessageListenerConcurrently for Timed {
    fn consume_message(
        &self,
        msgs: &[&MessageExt],
        context: &ConsumeConcurrentlyContext,
    ) -> ClientResult<ConsumeConcurrentlyStatus> {
        // The other consume threads wait for the first mark, so no message goes before it.
        self.first_call
            .get_or_init(|| Mark::start(&self.redis_info));
        let started = Instant::now();
        let status = self.inner.consume_message(msgs, context)?;
        let took = started.elapsed().as_micros().min(u32::MAX as u128) as u32;
        self.calls_us.lock().unwrap().push(took);
        if status == ConsumeConcurrentlyStatus::ConsumeSuccess {
            let acked =
                self.acked.fetch_add(msgs.len() as u64, Ordering::SeqCst) + msgs.len() as u64;
            if acked >= self.expect && self.done_at.get().is_none() {
                let _ = self.done_at.set(Mark::end(&self.redis_info));
            }
        }
        Ok(status)
    }
}

/// The async handler of the dedup listeners: the same work as the plain listener's, awaited
/// where it waits.
struct AsyncWork(Work);

impl DedupHandler for AsyncWork {
    async fn handle(&self, _msg: &MessageExt) -> Result<(), HandlerError> {
        self.0.run_async().await;
        Ok(())
    }
}

/// The inbox listener's handler: the same work, in the inbox transaction (it writes nothing
/// of its own, so the figure is the cost of the record and the transaction).
struct WorkInbox(Work);

impl rocketmq_dedup::inbox::InboxHandler<sqlx::MySql> for WorkInbox {
    async fn handle(
        &self,
        _msg: &MessageExt,
        _tx: &mut sqlx::Transaction<'static, sqlx::MySql>,
    ) -> Result<(), HandlerError> {
        match self.0.is_blocking() {
            true => self.0.run_blocking(),
            false => self.0.run_async().await,
        }
        Ok(())
    }
}

/// The plain listener: the work, no dedup.
struct Plain(Work, tokio::runtime::Handle);

impl MessageListenerConcurrently for Plain {
    fn consume_message(
        &self,
        msgs: &[&MessageExt],
        _: &ConsumeConcurrentlyContext,
    ) -> ClientResult<ConsumeConcurrentlyStatus> {
        for _ in msgs {
            self.0.run_on_thread(&self.1);
        }
        Ok(ConsumeConcurrentlyStatus::ConsumeSuccess)
    }
}

/// One scenario's settings (its command line).
#[derive(Debug, clap::Args)]
pub struct Scenario {
    #[arg(long)]
    pub kind: Kind,
    #[arg(long)]
    pub work: Work,
    #[arg(long)]
    pub batch: u32,
    #[arg(long)]
    pub namesrv: String,
    #[arg(long)]
    pub redis: String,
    /// The MySQL / MariaDB server (its table already made).
    #[arg(long)]
    pub mysql: String,
    /// The Redis Cluster (`redis+cluster://…`).
    #[arg(long)]
    pub cluster: String,
    #[arg(long)]
    pub topic: String,
    #[arg(long)]
    pub group: String,
    /// Messages to ack before the scenario ends.
    #[arg(long)]
    pub expect: u64,
}

pub async fn run(s: Scenario) -> anyhow::Result<serde_json::Value> {
    let round_trips = Arc::new(AtomicU64::new(0));
    let redis_store = match s.kind {
        Kind::Redis
        | Kind::RedisSyncCommit
        | Kind::RedisNoNearCache
        | Kind::RedisMultiplexed
        | Kind::RedisNoLinger
        | Kind::RedisScriptClaims
        | Kind::RedisJavaKeys => Some(
            RedisStore::builder(s.redis.as_str())
                .script_claims(s.kind == Kind::RedisScriptClaims)
                .consume_thread_connections(match s.kind {
                    Kind::RedisMultiplexed => 0,
                    _ => 16, // the store's default
                })
                .commit_linger(match s.kind {
                    Kind::RedisNoLinger => Duration::ZERO,
                    _ => Duration::from_millis(5), // the store's default
                })
                .connect()
                .await?,
        ),
        Kind::Cluster => Some(RedisStore::builder(s.cluster.as_str()).connect().await?),
        _ => None,
    };
    let near_cache = match s.kind {
        Kind::RedisNoNearCache => 0,
        _ => 10_000,
    };
    let dedup = |store: Arc<dyn rocketmq_dedup::DedupStore>| {
        let listener: Box<dyn MessageListenerConcurrently> = match s.work.is_blocking() {
            true => {
                let work = s.work;
                Box::new(
                    DedupConcurrentListener::builder(handler_fn(move |_msg: &MessageExt| {
                        work.run_blocking();
                        Ok(())
                    }))
                    .namespace(s.group.as_str())
                    .shared_store(store)
                    .ack_before_commit(s.kind != Kind::RedisSyncCommit)
                    .near_cache(near_cache)
                    .build()?,
                )
            }
            false => Box::new(
                DedupConcurrentListener::builder(AsyncWork(s.work))
                    .namespace(s.group.as_str())
                    .shared_store(store)
                    .ack_before_commit(s.kind != Kind::RedisSyncCommit)
                    .near_cache(near_cache)
                    .build()?,
            ),
        };
        Ok::<_, rocketmq_dedup::ConfigError>(listener)
    };
    let client = ClientEnv::new("bench")?;
    let spec = ConsumerSpec::new(&s.namesrv, &s.group, &s.topic).batch(s.batch);
    let listener: Box<dyn MessageListenerConcurrently> = match s.kind {
        Kind::Plain => Box::new(Plain(s.work, tokio::runtime::Handle::current())),
        Kind::Memory => dedup(Arc::new(MemoryStore::new()))?,
        Kind::Redis
        | Kind::Cluster
        | Kind::RedisSyncCommit
        | Kind::RedisNoNearCache
        | Kind::RedisMultiplexed
        | Kind::RedisNoLinger
        | Kind::RedisScriptClaims => dedup(Arc::new(redis_store.clone().expect("redis store")))?,
        Kind::RedisJavaKeys => dedup(Arc::new(rocketmq_dedup::store::JavaKeys::new(
            redis_store.clone().expect("redis store"),
        )))?,
        Kind::Previous => {
            anyhow::bail!("listener previous runs in the bench binary --previous-bench names")
        }
        Kind::Mysql => {
            let store = MySqlStore::builder(s.mysql.as_str()).connect().await?;
            dedup(Arc::new(store))?
        }
        Kind::Inbox => {
            let pool = sqlx::MySqlPool::connect(&s.mysql).await?;
            let inbox = MySqlInbox::builder(pool).connect().await?;
            Box::new(
                DedupConcurrentListener::inbox(WorkInbox(s.work), inbox)
                    .namespace(s.group.as_str())
                    .build()?,
            )
        }
        Kind::Reference => Box::new(ReferenceListener {
            client: redis::Client::open(s.redis.as_str())?,
            app: s.group.clone(),
            work: s.work,
            runtime: tokio::runtime::Handle::current(),
            round_trips: round_trips.clone(),
        }),
        Kind::FloorWithCommit => Box::new(crate::reference::FloorWithCommit {
            client: redis::Client::open(s.redis.as_str())?,
            work: s.work,
            runtime: tokio::runtime::Handle::current(),
            round_trips: round_trips.clone(),
        }),
        Kind::Floor => Box::new(FloorListener {
            client: redis::Client::open(s.redis.as_str())?,
            work: s.work,
            runtime: tokio::runtime::Handle::current(),
            round_trips: round_trips.clone(),
        }),
    };
    let timed = Arc::new(Timed {
        inner: listener,
        first_call: OnceLock::new(),
        calls_us: Mutex::new(Vec::new()),
        acked: AtomicU64::new(0),
        expect: s.expect,
        done_at: OnceLock::new(),
        redis_info: Mutex::new(
            redis::Client::open(s.redis.as_str())
                .and_then(|c| c.get_connection())
                .ok(),
        ),
    });
    let mut consumer = client
        .consumer(&spec, SharedListener(timed.clone()))
        .await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    while timed.done_at.get().is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rocketmq_client_rust::MQPushConsumer::shutdown(&mut consumer).await;
    client.shutdown().await;

    let (first, done) = (
        timed.first_call.get().copied(),
        timed.done_at.get().copied(),
    );
    let (first, done) = match (first, done) {
        (Some(first), Some(done)) => (first, done),
        _ => anyhow::bail!(
            "the backlog was not consumed: {} of {} acked",
            timed.acked.load(Ordering::SeqCst),
            s.expect
        ),
    };
    let mut calls = timed.calls_us.lock().unwrap().clone();
    calls.sort_unstable();
    let pct = |p: f64| {
        calls
            .get(((calls.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    let secs = done.at.duration_since(first.at).as_secs_f64();
    // The consumer's own CPU per message while it consumed (the broker, Redis and the
    // producer run in other processes): what the listener costs, less blurred by the noise of
    // a shared machine than wall time.
    let cpu = done.cpu.saturating_sub(first.cpu);
    let cpu_us_per_msg = cpu.as_secs_f64() * 1e6 / s.expect as f64;
    // The machine's: what bounds throughput when the cores are the bottleneck.
    let machine = done.machine.since(first.machine);
    let trips =
        redis_store.map(|r| r.round_trips()).unwrap_or(0) + round_trips.load(Ordering::Relaxed);
    Ok(serde_json::json!({
        "msgs_per_s": s.expect as f64 / secs.max(1e-6),
        "secs": secs,
        "calls": calls.len(),
        "p50_us": pct(0.50),
        "p99_us": pct(0.99),
        "cpu_us_per_msg": cpu_us_per_msg,
        "machine_cpu_us_per_msg": machine.busy.as_secs_f64() * 1e6 / s.expect as f64,
        "machine_busy_share": done.machine.busy_share(first.machine),
        "redis_server_cpu_us_per_msg": match (first.redis_server, done.redis_server) {
            (Some(before), Some(after)) => after.saturating_sub(before).as_secs_f64() * 1e6 / s.expect as f64,
            _ => f64::NAN,
        },
        "peak_rss_kb": crate::peak_rss_kb(),
        // What is resident at the end: heap and stacks, and mapped files (the binary's code).
        "rss_anon_kb": crate::proc_status("RssAnon:"),
        "rss_file_kb": crate::proc_status("RssFile:"),
        "threads": crate::proc_status("Threads:"),
        "redis_round_trips": trips,
    }))
}

/// Lets the consumer own a handle to the timed listener while the scenario reads it.
struct SharedListener<L>(Arc<L>);

impl<L: MessageListenerConcurrently> MessageListenerConcurrently for SharedListener<L> {
    fn consume_message(
        &self,
        msgs: &[&MessageExt],
        ctx: &ConsumeConcurrentlyContext,
    ) -> ClientResult<ConsumeConcurrentlyStatus> {
        self.0.consume_message(msgs, ctx)
    }
}
