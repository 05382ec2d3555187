//! One chaos consumer process: a push consumer whose dedup listener writes its effects to
//! the ledger (Redis store) or to the database in the inbox transaction, and records acks.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rocketmq_client_rust::{
    ClientResult, ConsumeConcurrentlyContext, ConsumeConcurrentlyStatus,
    MessageListenerConcurrently,
};
use rocketmq_dedup::inbox::InboxHandler;
use rocketmq_dedup::record_key::RecordKey;
use rocketmq_dedup::sql::mysql::MySqlInbox;
use rocketmq_dedup::sql::postgres::PostgresInbox;
use rocketmq_dedup::store::{CommitOutcome, RedisStore};
use rocketmq_dedup::{
    DedupConcurrentListener, DedupHandler, DedupKey, HandlerError, KeyError, KeyStrategy,
    StoreError,
};
use rocketmq_dedup_testkit::{ClientEnv, ConsumerSpec};
use rocketmq_model::common::message::message_ext::MessageExt;

use super::ledger::Ledger;

/// What keeps the dedup records (and, for an inbox, the effects).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// The Redis store; effects go to the ledger.
    Redis,
    /// The MySQL / MariaDB inbox; effects are rows in its transaction.
    Mysql,
    /// The PostgreSQL inbox; effects are rows in its transaction.
    Postgres,
}

/// The effects table of the inbox modes (no unique key: a duplicate effect is a second row).
pub const EFFECTS_TABLE: &str =
    "CREATE TABLE chaos_effects (order_id VARCHAR(64) NOT NULL, pid BIGINT NOT NULL)";

/// A consumer process's settings.
#[derive(Debug, Clone, clap::Args)]
pub struct ConsumerArgs {
    /// Name server address.
    #[arg(long)]
    pub namesrv: String,
    /// The store's URL (Redis, MySQL or PostgreSQL).
    #[arg(long)]
    pub store_url: String,
    /// What keeps the records.
    #[arg(long, value_enum)]
    pub backend: Backend,
    /// Topic.
    #[arg(long)]
    pub topic: String,
    /// Consumer group.
    #[arg(long)]
    pub group: String,
    /// The ledger file.
    #[arg(long)]
    pub ledger: PathBuf,
    /// Messages per listener call.
    #[arg(long)]
    pub batch: u32,
}

/// The order id in a message's JSON body.
pub fn order_id_of(msg: &MessageExt) -> String {
    serde_json::from_slice::<serde_json::Value>(msg.body_slice())
        .ok()
        .and_then(|v| v["orderId"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// The Redis mode's handler: the effect is a ledger line.
struct LedgerHandler {
    ledger: Arc<Ledger>,
    pid: u32,
}

impl DedupHandler for LedgerHandler {
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

/// The inbox modes' handler: the effect is a row written in the inbox transaction.
struct RowHandler {
    pid: u32,
}

macro_rules! row_handler {
    ($db:ty, $insert:literal) => {
        impl InboxHandler<$db> for RowHandler {
            async fn handle(
                &self,
                msg: &MessageExt,
                tx: &mut sqlx::Transaction<'static, $db>,
            ) -> Result<(), HandlerError> {
                let order = order_id_of(msg);
                if order.is_empty() {
                    return Err("order without orderId".into());
                }
                sqlx::query($insert)
                    .bind(order)
                    .bind(i64::from(self.pid))
                    .execute(&mut **tx)
                    .await?;
                Ok(())
            }

            fn dedup_key(&self, msg: &MessageExt) -> Result<DedupKey, KeyError> {
                KeyStrategy::json_pointer("/orderId").derive(msg)
            }
        }
    };
}
row_handler!(
    sqlx::MySql,
    "INSERT INTO chaos_effects (order_id, pid) VALUES (?, ?)"
);
row_handler!(
    sqlx::Postgres,
    "INSERT INTO chaos_effects (order_id, pid) VALUES ($1, $2)"
);

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

/// Retries `connect` until it succeeds: the store may be down while a consumer (re)starts.
async fn until_up<T, E, F: std::future::Future<Output = Result<T, E>>>(
    mut connect: impl FnMut() -> F,
) -> T {
    loop {
        match connect().await {
            Ok(value) => return value,
            Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
}

/// The process's listener.
async fn listener(
    args: &ConsumerArgs,
    ledger: &Arc<Ledger>,
    pid: u32,
) -> Result<DedupConcurrentListener, Box<dyn std::error::Error>> {
    let url = args.store_url.as_str();
    let group = args.group.as_str();
    let listener = match args.backend {
        Backend::Redis => {
            let store = until_up(|| {
                RedisStore::builder(url)
                    .response_timeout(Duration::from_millis(500))
                    .connect()
            })
            .await;
            let handler = LedgerHandler {
                ledger: ledger.clone(),
                pid,
            };
            DedupConcurrentListener::builder(Arc::new(handler))
                .namespace(group)
                .store(store)
                .processing_ttl(Duration::from_secs(5))
                .store_timeout(Duration::from_secs(1))
                .build()?
        }
        Backend::Mysql => {
            let pool = until_up(|| sqlx::MySqlPool::connect(url)).await;
            let inbox = until_up(|| MySqlInbox::builder(pool.clone()).connect()).await;
            DedupConcurrentListener::inbox(RowHandler { pid }, inbox)
                .namespace(group)
                .store_timeout(Duration::from_secs(2))
                .build()?
        }
        Backend::Postgres => {
            let pool = until_up(|| sqlx::PgPool::connect(url)).await;
            let inbox = until_up(|| PostgresInbox::builder(pool.clone()).connect()).await;
            DedupConcurrentListener::inbox(RowHandler { pid }, inbox)
                .namespace(group)
                .store_timeout(Duration::from_secs(2))
                .build()?
        }
    };
    Ok(listener)
}

/// Runs one consumer until SIGTERM.
pub async fn run(args: ConsumerArgs) -> Result<(), Box<dyn std::error::Error>> {
    let pid = std::process::id();
    let ledger = Arc::new(Ledger::open(&args.ledger)?);
    let listener = listener(&args, &ledger, pid).await?;
    let client = ClientEnv::new("chaos-consumer")?;
    let spec = ConsumerSpec::new(&args.namesrv, &args.group, &args.topic).batch(args.batch);
    let recorder = AckRecorder {
        inner: listener.clone(),
        ledger,
        pid,
    };
    let mut consumer = client.consumer(&spec, recorder).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    term.recv().await;
    consumer.shutdown().await;
    listener.shutdown(Duration::from_secs(5)).await;
    client.shutdown().await;
    eprintln!("chaos consumer {pid}: {}", listener.stats().summary());
    Ok(())
}
