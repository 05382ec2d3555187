//! The chaos run itself: a broker, a store server and three consumer processes; a paced
//! producer; faults at fixed fractions of the send time; and the verdict from the ledger.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rocketmq_dedup_testkit::process::ChildProcess;
use rocketmq_dedup_testkit::{
    send_with_retry, unique_name, ClientEnv, MariaDbServer, PostgresServer, RedisOptions,
    RedisServer, RocketMqStack, StackOptions,
};

use super::consumer::{Backend, EFFECTS_TABLE};
use super::ledger::{Effects, Report};
use super::produce::{produce, Sent};
use crate::orders;

type Error = Box<dyn std::error::Error>;

/// How big a run is.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Messages to send.
    pub messages: usize,
    /// Consumer SIGKILLs.
    pub kills: usize,
    /// Messages per listener call.
    pub batch: u32,
    /// What keeps the records.
    pub backend: Backend,
}

/// The store's server, owned by the run (it kills and restarts it).
enum StoreServer {
    Redis(RedisServer),
    MariaDb(MariaDbServer),
    Postgres(PostgresServer),
}

impl StoreServer {
    async fn start(backend: Backend) -> Result<Self, Error> {
        Ok(match backend {
            Backend::Redis => StoreServer::Redis(RedisServer::start_local(RedisOptions {
                appendonly: true,
                ..Default::default()
            })?),
            Backend::Mysql => {
                let server = MariaDbServer::start_local()?;
                let pool = sqlx::MySqlPool::connect(server.url()).await?;
                let inbox = rocketmq_dedup::sql::mysql::MySqlInbox::builder(pool.clone());
                inbox.connect().await?.migrate().await?;
                sqlx::query(EFFECTS_TABLE).execute(&pool).await?;
                StoreServer::MariaDb(server)
            }
            Backend::Postgres => {
                let server = PostgresServer::start_local()?;
                let pool = sqlx::PgPool::connect(server.url()).await?;
                let inbox = rocketmq_dedup::sql::postgres::PostgresInbox::builder(pool.clone());
                inbox.connect().await?.migrate().await?;
                sqlx::query(EFFECTS_TABLE).execute(&pool).await?;
                StoreServer::Postgres(server)
            }
        })
    }

    fn url(&self) -> &str {
        match self {
            StoreServer::Redis(s) => s.url(),
            StoreServer::MariaDb(s) => s.url(),
            StoreServer::Postgres(s) => s.url(),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            StoreServer::Redis(_) => "redis-server",
            StoreServer::MariaDb(_) => "mariadbd",
            StoreServer::Postgres(_) => "postgres",
        }
    }

    /// SIGKILLs the server, waits a moment, starts it again on the same data.
    async fn kill_and_restart(&mut self) -> Result<(), Error> {
        match self {
            StoreServer::Redis(s) => s.kill(),
            StoreServer::MariaDb(s) => s.kill(),
            StoreServer::Postgres(s) => s.kill(),
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
        tokio::task::block_in_place(|| match self {
            StoreServer::Redis(s) => s.restart(),
            StoreServer::MariaDb(s) => s.restart(),
            StoreServer::Postgres(s) => s.restart(),
        })?;
        Ok(())
    }

    /// The effects the database holds (inbox modes), or that they are in the ledger.
    async fn effects(&self) -> Result<Effects, Error> {
        let sql = "SELECT order_id, pid FROM chaos_effects";
        let rows: Vec<(String, i64)> = match self {
            StoreServer::Redis(_) => return Ok(Effects::InLedger),
            StoreServer::MariaDb(s) => {
                let pool = sqlx::MySqlPool::connect(s.url()).await?;
                sqlx::query_as(sql).fetch_all(&pool).await?
            }
            StoreServer::Postgres(s) => {
                let pool = sqlx::PgPool::connect(s.url()).await?;
                sqlx::query_as(sql).fetch_all(&pool).await?
            }
        };
        Ok(Effects::Listed(
            rows.into_iter().map(|(o, p)| (o, p as u32)).collect(),
        ))
    }
}

/// The consumer processes: started from this program, killed and restarted by the run.
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

#[derive(Debug, Clone, Copy)]
enum Fault {
    KillConsumer(usize),
    RestartStore,
    RestartBroker,
}

/// The faults, at fractions of the send time: `kills` consumer kills, the store restarted
/// (twice for Redis, once for a database), the broker once.
fn schedule(plan: Plan) -> Vec<(f64, Fault)> {
    let mut all = vec![
        (0.10, Fault::KillConsumer(0)),
        (0.20, Fault::RestartStore),
        (0.30, Fault::KillConsumer(1)),
        (0.45, Fault::RestartBroker),
        (0.55, Fault::KillConsumer(2)),
        (0.65, Fault::RestartStore),
        (0.75, Fault::KillConsumer(0)),
        (0.85, Fault::KillConsumer(1)),
        (0.95, Fault::KillConsumer(2)),
    ];
    if plan.backend != Backend::Redis {
        all.remove(5);
    }
    let mut kills = 0;
    all.retain(|(_, fault)| match fault {
        Fault::KillConsumer(_) => {
            kills += 1;
            kills <= plan.kills
        }
        _ => true,
    });
    all
}

fn log(started: Instant, what: &str) {
    println!("chaos [{:>6.1}s] {what}", started.elapsed().as_secs_f64());
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// Runs the chaos run; answers whether it passed.
pub async fn drive(plan: Plan) -> Result<bool, Error> {
    let started = Instant::now();
    let exe = std::env::current_exe()?;
    // This run must own (and kill) its broker and store.
    for var in [
        "ROCKETMQ_NAMESRV_ADDR",
        "REDIS_URL",
        "MYSQL_URL",
        "DATABASE_URL",
    ] {
        std::env::remove_var(var);
    }
    let mut stack = RocketMqStack::start(StackOptions::new(&exe))?;
    let mut store = StoreServer::start(plan.backend).await?;
    log(
        started,
        &format!(
            "name server, broker and {} started on 127.0.0.1",
            store.name()
        ),
    );
    let dir = tempfile::Builder::new().prefix("dedup-chaos-").tempdir()?;
    let ledger = dir.path().join("ledger");
    std::fs::write(&ledger, "")?;
    let (topic, group) = (unique_name("ChaosOrders"), unique_name("chaos-payments"));
    let namesrv = stack.namesrv_addr();

    // Create the topic before the consumers subscribe.
    let client = ClientEnv::new("chaos-producer")?;
    let producer = Arc::new(client.producer(&namesrv).await?);
    let warm_up = orders::order_message(&topic, "warm-up", 0);
    send_with_retry(&producer, &warm_up, Duration::from_secs(30)).await?;

    let args = [
        ("--namesrv", namesrv.as_str()),
        ("--store-url", store.url()),
        ("--topic", topic.as_str()),
        ("--group", group.as_str()),
        ("--batch", &plan.batch.to_string()),
        ("--backend", &format!("{:?}", plan.backend).to_lowercase()),
        ("--ledger", &ledger.display().to_string()),
    ];
    let mut consumers = Consumers {
        exe,
        args: args
            .iter()
            .flat_map(|(k, v)| [k.to_string(), v.to_string()])
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
        &format!(
            "3 consumers started; sending {} messages (20% duplicates)",
            plan.messages
        ),
    );
    let rate = if plan.messages > 20_000 {
        1_000.0
    } else {
        250.0
    };
    let sender = tokio::spawn(produce(producer.clone(), topic, plan.messages, rate));
    let send_time = Duration::from_secs_f64(plan.messages as f64 / rate);
    let outages = inject(
        plan,
        started,
        send_time,
        &mut consumers,
        &mut store,
        &mut stack,
    )
    .await?;
    let sent = sender.await?.map_err(|e| e.to_string())?;
    log(
        started,
        &format!(
            "sent {} messages ({} orders); waiting for every order",
            sent.messages, sent.unique
        ),
    );
    let report = settle(plan, &ledger, &consumers, &outages, &sent, &store).await?;
    for slot in &mut consumers.slots {
        slot.terminate(Duration::from_secs(10));
    }
    client.shutdown().await;
    let ok = verdict(plan, &report, &sent, &consumers, &outages, started);
    if !ok {
        println!("chaos: logs kept in {}", dir.keep().display());
    }
    drop(stack);
    Ok(ok)
}

/// Injects the faults on schedule; answers the store's outages (unix ms).
async fn inject(
    plan: Plan,
    started: Instant,
    send_time: Duration,
    consumers: &mut Consumers,
    store: &mut StoreServer,
    stack: &mut RocketMqStack,
) -> Result<Vec<(u128, u128)>, Error> {
    let mut outages = Vec::new();
    for (at, fault) in schedule(plan) {
        let due = started + send_time.mul_f64(at) + Duration::from_secs(3);
        tokio::time::sleep_until(due.into()).await;
        match fault {
            Fault::KillConsumer(slot) => {
                log(started, &format!("SIGKILL consumer {slot} and restart it"));
                consumers.kill_and_restart(slot)?;
            }
            Fault::RestartStore => {
                log(started, &format!("SIGKILL {} and restart it", store.name()));
                let from = unix_ms();
                store.kill_and_restart().await?;
                outages.push((from, unix_ms()));
            }
            Fault::RestartBroker => {
                log(started, "SIGKILL the broker and restart it");
                tokio::task::block_in_place(|| stack.restart_broker())?;
            }
        }
    }
    Ok(outages)
}

/// Waits (bounded) for every order to take effect, then for late redeliveries; answers the
/// report.
async fn settle(
    plan: Plan,
    ledger: &Path,
    consumers: &Consumers,
    outages: &[(u128, u128)],
    sent: &Sent,
    store: &StoreServer,
) -> Result<Report, Error> {
    let patience = Duration::from_secs(if plan.messages > 20_000 { 900 } else { 240 });
    let deadline = Instant::now() + patience;
    let read = || async {
        let effects = store.effects().await?;
        Ok::<_, Error>(Report::read(
            ledger,
            &consumers.killed,
            outages,
            &sent.orders,
            &effects,
        )?)
    };
    while !read().await?.missing.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    // Late redeliveries would show up now.
    tokio::time::sleep(Duration::from_secs(5)).await;
    read().await
}

/// Prints the result lines; answers whether the run passed. With Redis, only a consumer
/// killed between effect and commit may cause a duplicate effect; with an inbox, none may.
fn verdict(
    plan: Plan,
    report: &Report,
    sent: &Sent,
    consumers: &Consumers,
    outages: &[(u128, u128)],
    started: Instant,
) -> bool {
    println!(
        "chaos: store={:?} sent={} unique={} effects={} lost={} duplicate_effects={} in_flight_at_kills={} acked_while_store_down={}",
        plan.backend,
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
            let killed = if consumers.killed.contains(pid) {
                "(killed)"
            } else {
                ""
            };
            format!("{pid}{killed}:{n}")
        })
        .collect();
    by_process.sort();
    println!(
        "chaos: effects by consumer process: {}",
        by_process.join(" ")
    );
    println!(
        "chaos: consumer_kills={} store_restarts={} broker_restarts=1 duplicated_orders={:?} took={:.0}s",
        consumers.killed.len(),
        outages.len(),
        report.duplicated.iter().take(10).collect::<Vec<_>>(),
        started.elapsed().as_secs_f64()
    );
    let allowed = match plan.backend {
        Backend::Redis => report.in_flight_at_kills,
        Backend::Mysql | Backend::Postgres => 0,
    };
    let ok = report.missing.is_empty()
        && report.acked_while_store_down == 0
        && report.duplicate_effects <= allowed;
    if !ok {
        let missing: Vec<_> = report.missing.iter().take(10).collect();
        println!("chaos: FAILED (missing: {missing:?})");
    }
    ok
}
