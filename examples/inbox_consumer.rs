//! A payment consumer with exactly-once effects: its handler records each payment in a
//! `payments` table, inside the transaction in which the message's dedup record is written
//! (the transactional inbox).
//!
//! The record and the payment commit together or not at all: a handler error or panic, or
//! the process dying anywhere before the commit, leaves neither, and the message is processed
//! again; a copy of a committed message is acked without running. Caveat: only the database
//! writes made through the transaction are covered; anything else the handler does (an HTTP
//! call) may happen again.
//!
//! Run (with a name server and a database, e.g. `docker-compose up -d`; the tables are created
//! if missing):
//!
//! ```text
//! cargo run --example inbox_consumer -- --namesrv 127.0.0.1:9876 --topic Orders \
//!     --group payments --database mysql://app:secret@127.0.0.1:3306/shop
//! cargo run --example inbox_consumer -- --database postgres://app:secret@127.0.0.1:5432/shop
//! ```

#[path = "support/app.rs"]
mod app;

use std::time::Duration;

use clap::Parser;
use rocketmq_client_rust::MQPushConsumer;
use rocketmq_dedup::client::ConsumerRuntime;
use rocketmq_dedup::inbox::InboxHandler;
use rocketmq_dedup::sql::mysql::MySqlInbox;
use rocketmq_dedup::sql::postgres::PostgresInbox;
use rocketmq_dedup::{DedupConcurrentListener, DedupKey, HandlerError, KeyError, KeyStrategy};
use rocketmq_model::common::message::message_ext::MessageExt;
use sqlx::{MySql, Postgres, Transaction};

#[derive(Debug, Parser)]
struct Args {
    /// Name server address.
    #[arg(long, env = "ROCKETMQ_NAMESRV_ADDR", default_value = "127.0.0.1:9876")]
    namesrv: String,
    /// Topic.
    #[arg(long, env = "TOPIC", default_value = "Orders")]
    topic: String,
    /// Consumer group (also the dedup namespace).
    #[arg(long, env = "CONSUMER_GROUP", default_value = "order-payments")]
    group: String,
    /// The database: `mysql://…` (MySQL, MariaDB) or `postgres://…`.
    #[arg(long, env = "DATABASE_URL")]
    database: String,
    /// Exit after this many seconds without a message (default: run until Ctrl-C).
    #[arg(long)]
    idle_exit: Option<u64>,
}

/// Records a payment per order, once: the order id (`orderId` of the JSON body) is the
/// dedup key, and the `payments` row is written in the inbox transaction.
struct Payments;

/// What the handler needs of a message: its order and amount.
fn payment(msg: &MessageExt) -> Result<(String, i64), HandlerError> {
    let order: serde_json::Value = serde_json::from_slice(msg.body_slice())?;
    let id = order["orderId"].as_str().ok_or("order without orderId")?;
    Ok((id.to_owned(), order["amountCents"].as_i64().unwrap_or(0)))
}

impl InboxHandler<MySql> for Payments {
    async fn handle(
        &self,
        msg: &MessageExt,
        tx: &mut Transaction<'static, MySql>,
    ) -> Result<(), HandlerError> {
        let (order, cents) = payment(msg)?;
        sqlx::query("INSERT INTO payments (order_id, amount_cents) VALUES (?, ?)")
            .bind(&order)
            .bind(cents)
            .execute(&mut **tx)
            .await?;
        println!("effect: paid {order} ({cents} cents)");
        Ok(())
    }

    fn dedup_key(&self, msg: &MessageExt) -> Result<DedupKey, KeyError> {
        KeyStrategy::json_pointer("/orderId").derive(msg)
    }
}

impl InboxHandler<Postgres> for Payments {
    async fn handle(
        &self,
        msg: &MessageExt,
        tx: &mut Transaction<'static, Postgres>,
    ) -> Result<(), HandlerError> {
        let (order, cents) = payment(msg)?;
        sqlx::query("INSERT INTO payments (order_id, amount_cents) VALUES ($1, $2)")
            .bind(&order)
            .bind(cents)
            .execute(&mut **tx)
            .await?;
        println!("effect: paid {order} ({cents} cents)");
        Ok(())
    }

    fn dedup_key(&self, msg: &MessageExt) -> Result<DedupKey, KeyError> {
        KeyStrategy::json_pointer("/orderId").derive(msg)
    }
}

const PAYMENTS: &str =
    "CREATE TABLE IF NOT EXISTS payments (order_id VARCHAR(64) NOT NULL, amount_cents BIGINT NOT NULL)";

/// The listener on the inbox the URL names; the dedup table and `payments` are created if
/// missing.
async fn listener(args: &Args) -> anyhow::Result<DedupConcurrentListener> {
    let group = args.group.as_str();
    if args.database.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(&args.database).await?;
        sqlx::query(PAYMENTS).execute(&pool).await?;
        let inbox = PostgresInbox::builder(pool).connect().await?;
        inbox.migrate().await?;
        Ok(DedupConcurrentListener::inbox(Payments, inbox)
            .namespace(group)
            .build()?)
    } else {
        let pool = sqlx::MySqlPool::connect(&args.database).await?;
        sqlx::query(PAYMENTS).execute(&pool).await?;
        let inbox = MySqlInbox::builder(pool).connect().await?;
        inbox.migrate().await?;
        Ok(DedupConcurrentListener::inbox(Payments, inbox)
            .namespace(group)
            .build()?)
    }
}

#[tokio::main]
/// Errors print as their message and cause chain (anyhow), once each.
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    app::init_logging();
    app::check_route(&args.namesrv, &args.topic).await?;
    let listener = listener(&args).await?;
    let runtime = ConsumerRuntime::new("inbox-consumer")?;
    let mut consumer = app::consumer_builder(&runtime, &args.namesrv, &args.group).build();
    consumer.subscribe(args.topic.as_str(), "*").await?;
    consumer.register_message_listener_concurrently(listener.clone());
    app::start(&mut consumer).await?;
    println!("consuming {} as {} with the inbox", args.topic, args.group);
    let stats = listener.stats().clone();
    app::run_until_stopped(&stats, args.idle_exit).await;
    consumer.shutdown().await;
    listener.shutdown(Duration::from_secs(5)).await;
    runtime.shutdown().await;
    println!("summary: {}", stats.summary());
    Ok(())
}
