//! The transactional inbox on real MariaDB and PostgreSQL servers: the effect (a row in a
//! `payments` table written by the handler in the inbox transaction) and the dedup record
//! commit together or not at all, whatever the handler does, and a copy meeting another
//! consumer's transaction waits at most the lock wait.
//!
//! The same cases run on both databases (`inbox_suite!`); only the SQL of the test tables
//! differs (`Sql`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rocketmq_dedup::inbox::InboxHandler;
use rocketmq_dedup::testing::message;
use rocketmq_dedup::{DedupKey, HandlerError, KeyError, KeyStrategy};
use rocketmq_model::common::message::message_ext::MessageExt;

/// The test tables' SQL in one database's syntax.
trait Sql {
    const CREATE: &'static [&'static str];
    const INSERT_PAYMENT: &'static str;
    const COUNT_PAYMENTS: &'static str;
    const COUNT_RECORDS: &'static str;
    const ADD_TO_ACCOUNT: &'static str;
    const ACCOUNT: &'static str;
}

/// What the test handler does, per message key (`KEYS`).
#[derive(Default)]
struct Script {
    /// Runs that write the payment and then fail.
    fail: HashMap<String, usize>,
    /// Runs that write the payment and then panic.
    panic: HashMap<String, usize>,
    /// How long the handler keeps its transaction open after writing.
    hold: HashMap<String, Duration>,
    /// How long the handler waits before writing (its record is already claimed).
    hold_before_write: HashMap<String, Duration>,
    /// A file the handler creates whenever it starts holding (for a crash test's parent).
    ready_file: Option<std::path::PathBuf>,
    /// Accounts to add 1 to, in this order, a moment apart (for deadlocks).
    accounts: HashMap<String, Vec<i64>>,
}

/// Writes a payment row per message in the inbox transaction; deduplicates by `KEYS`.
#[derive(Default)]
struct Payments {
    script: Mutex<Script>,
    runs: AtomicUsize,
}

impl Payments {
    fn runs(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }

    fn hold(&self, key: &str, before_write: bool) -> Duration {
        let script = self.script.lock().unwrap();
        let holds = match before_write {
            true => &script.hold_before_write,
            false => &script.hold,
        };
        let hold = holds.get(key).copied().unwrap_or_default();
        if let (false, Some(file)) = (hold.is_zero(), &script.ready_file) {
            std::fs::write(file, b"ready").unwrap();
        }
        hold
    }

    fn next(&self, key: &str) -> (bool, bool, Vec<i64>) {
        let mut script = self.script.lock().unwrap();
        let take = |m: &mut HashMap<String, usize>| match m.get_mut(key) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        };
        let fail = take(&mut script.fail);
        let panic = take(&mut script.panic);
        let accounts = script.accounts.get(key).cloned().unwrap_or_default();
        (fail, panic, accounts)
    }
}

macro_rules! payments_handler {
    ($db:ty, $sql:ty) => {
        impl InboxHandler<$db> for Payments {
            async fn handle(
                &self,
                msg: &MessageExt,
                tx: &mut sqlx::Transaction<'static, $db>,
            ) -> Result<(), HandlerError> {
                self.runs.fetch_add(1, Ordering::SeqCst);
                let key = msg.property("KEYS").unwrap_or_default().to_owned();
                let (fail, panic, accounts) = self.next(&key);
                tokio::time::sleep(self.hold(&key, true)).await;
                for (i, account) in accounts.iter().enumerate() {
                    if i > 0 {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                    sqlx::query(<$sql>::ADD_TO_ACCOUNT)
                        .bind(*account)
                        .execute(&mut **tx)
                        .await?;
                }
                // PostgreSQL text holds no NUL: the payment row spells it out.
                sqlx::query(<$sql>::INSERT_PAYMENT)
                    .bind(key.replace('\0', "\\0"))
                    .execute(&mut **tx)
                    .await?;
                tokio::time::sleep(self.hold(&key, false)).await;
                if panic {
                    panic!("handler bug after writing {key}");
                }
                if fail {
                    return Err(format!("declined {key} after writing").into());
                }
                Ok(())
            }

            fn dedup_key(&self, msg: &MessageExt) -> Result<DedupKey, KeyError> {
                KeyStrategy::Keys.derive(msg)
            }
        }
    };
}

struct MySqlSyntax;
impl Sql for MySqlSyntax {
    const CREATE: &'static [&'static str] = &[
        "CREATE TABLE payments (id BIGINT AUTO_INCREMENT PRIMARY KEY, order_key TEXT CHARACTER SET utf8mb4 NOT NULL)",
        "CREATE TABLE accounts (id BIGINT PRIMARY KEY, n BIGINT NOT NULL)",
        "INSERT INTO accounts VALUES (1, 0), (2, 0)",
    ];
    const INSERT_PAYMENT: &'static str = "INSERT INTO payments (order_key) VALUES (?)";
    const COUNT_PAYMENTS: &'static str = "SELECT COUNT(*) FROM payments WHERE order_key = ?";
    const COUNT_RECORDS: &'static str =
        "SELECT COUNT(*) FROM t_rocketmq_dedup WHERE msg_uniq_key = ? AND status = 'CONSUMED'";
    const ADD_TO_ACCOUNT: &'static str = "UPDATE accounts SET n = n + 1 WHERE id = ?";
    const ACCOUNT: &'static str = "SELECT n FROM accounts WHERE id = ?";
}

struct PostgresSyntax;
impl Sql for PostgresSyntax {
    const CREATE: &'static [&'static str] = &[
        "CREATE TABLE payments (id BIGSERIAL PRIMARY KEY, order_key TEXT NOT NULL)",
        "CREATE TABLE accounts (id BIGINT PRIMARY KEY, n BIGINT NOT NULL)",
        "INSERT INTO accounts VALUES (1, 0), (2, 0)",
    ];
    const INSERT_PAYMENT: &'static str = "INSERT INTO payments (order_key) VALUES ($1)";
    const COUNT_PAYMENTS: &'static str = "SELECT COUNT(*) FROM payments WHERE order_key = $1";
    const COUNT_RECORDS: &'static str =
        "SELECT COUNT(*) FROM t_rocketmq_dedup WHERE msg_uniq_key = $1 AND status = 'CONSUMED'";
    const ADD_TO_ACCOUNT: &'static str = "UPDATE accounts SET n = n + 1 WHERE id = $1";
    const ACCOUNT: &'static str = "SELECT n FROM accounts WHERE id = $1";
}

payments_handler!(sqlx::MySql, MySqlSyntax);
payments_handler!(sqlx::Postgres, PostgresSyntax);

fn msg(key: &str) -> MessageExt {
    message("Orders")
        .uniq_key(&format!("u-{key}"))
        .keys(key)
        .build()
}

macro_rules! inbox_suite {
    ($name:ident, $db:ty, $sql:ty, $server:ty, $inbox:ty) => {
        mod $name {
            use super::*;
            use rocketmq_client_rust::{ConsumeConcurrentlyStatus, ConsumeOrderlyStatus};
            use rocketmq_dedup::{Decision, DedupConcurrentListener, DedupOrderlyListener, Event};
            use ConsumeConcurrentlyStatus::{ConsumeSuccess, ReconsumeLater};

            struct Env {
                server: $server,
                pool: sqlx::Pool<$db>,
                inbox: $inbox,
            }

            async fn env() -> Env {
                let server = <$server>::start_local().expect("the database starts");
                let pool = sqlx::Pool::<$db>::connect(server.url()).await.unwrap();
                let inbox = <$inbox>::builder(pool.clone())
                    .lock_wait(Duration::from_secs(1))
                    .connect()
                    .await
                    .unwrap();
                inbox.migrate().await.unwrap();
                for statement in <$sql>::CREATE {
                    sqlx::query(*statement).execute(&pool).await.unwrap();
                }
                Env {
                    server,
                    pool,
                    inbox,
                }
            }

            impl Env {
                fn listener(&self, payments: &Arc<Payments>) -> DedupConcurrentListener {
                    DedupConcurrentListener::inbox(payments.clone(), self.inbox.clone())
                        .namespace("group")
                        .build()
                        .unwrap()
                }

                async fn count(&self, sql: &'static str, key: &str) -> i64 {
                    sqlx::query_scalar(sql)
                        .bind(key)
                        .fetch_one(&self.pool)
                        .await
                        .unwrap()
                }

                /// (payment rows, CONSUMED records) of `key`.
                async fn state(&self, key: &str) -> (i64, i64) {
                    let payments = self.count(<$sql>::COUNT_PAYMENTS, key).await;
                    let records = sqlx::query_scalar(<$sql>::COUNT_RECORDS)
                        .bind(key.as_bytes())
                        .fetch_one(&self.pool)
                        .await
                        .unwrap();
                    (payments, records)
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn the_effect_and_its_record_commit_once_and_copies_are_acked() {
                let env = env().await;
                let payments = Arc::new(Payments::default());
                let listener = env.listener(&payments);
                assert_eq!(
                    listener.consume(&[&msg("o-1"), &msg("o-2")]).await,
                    ConsumeSuccess
                );
                assert_eq!(listener.consume(&[&msg("o-1")]).await, ConsumeSuccess);
                assert_eq!(payments.runs(), 2, "the copy did not run");
                assert_eq!(env.state("o-1").await, (1, 1));
                assert_eq!(listener.stats().decisions(Decision::Processed), 2);
                assert_eq!(listener.stats().decisions(Decision::Duplicate), 1);
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_failing_or_panicking_handler_leaves_neither_effect_nor_record() {
                let env = env().await;
                let payments = Arc::new(Payments::default());
                {
                    let mut script = payments.script.lock().unwrap();
                    script.fail.insert("o-1".into(), 1);
                    script.panic.insert("o-2".into(), 1);
                }
                let listener = env.listener(&payments);
                for key in ["o-1", "o-2"] {
                    assert_eq!(listener.consume(&[&msg(key)]).await, ReconsumeLater);
                    assert_eq!(env.state(key).await, (0, 0), "{key}: rolled back");
                    assert_eq!(listener.consume(&[&msg(key)]).await, ConsumeSuccess);
                    assert_eq!(env.state(key).await, (1, 1), "{key}: once, on the retry");
                }
                let stats = listener.stats();
                assert_eq!(stats.decisions(Decision::HandlerFailed), 1);
                assert_eq!(stats.decisions(Decision::HandlerPanicked), 1);
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_copy_meeting_another_consumers_transaction_waits_at_most_the_lock_wait() {
                let env = env().await;
                let payments = Arc::new(Payments::default());
                payments
                    .script
                    .lock()
                    .unwrap()
                    .hold
                    .insert("o-1".into(), Duration::from_secs(4));
                // Two consumers: two listeners, so no same-process wait between them.
                let (first, second) = (env.listener(&payments), env.listener(&payments));
                let running = tokio::spawn(async move { first.consume(&[&msg("o-1")]).await });
                tokio::time::sleep(Duration::from_millis(500)).await;
                let started = std::time::Instant::now();
                assert_eq!(second.consume(&[&msg("o-1")]).await, ReconsumeLater);
                let waited = started.elapsed();
                assert!(waited < Duration::from_millis(2500), "waited {waited:?}");
                assert_eq!(payments.runs(), 1, "the copy did not run");
                assert_eq!(second.stats().decisions(Decision::DeferredInFlight), 1);
                assert_eq!(running.await.unwrap(), ConsumeSuccess);
                assert_eq!(second.consume(&[&msg("o-1")]).await, ConsumeSuccess);
                assert_eq!(second.stats().decisions(Decision::Duplicate), 1);
                assert_eq!(env.state("o-1").await, (1, 1));
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn the_orderly_listener_suspends_on_a_held_record_and_keeps_order() {
                let env = env().await;
                let payments = Arc::new(Payments::default());
                payments
                    .script
                    .lock()
                    .unwrap()
                    .hold
                    .insert("o-2".into(), Duration::from_secs(4));
                let other = env.listener(&payments);
                let running = tokio::spawn(async move { other.consume(&[&msg("o-2")]).await });
                tokio::time::sleep(Duration::from_millis(500)).await;
                let orderly = DedupOrderlyListener::inbox(payments.clone(), env.inbox.clone())
                    .namespace("group")
                    .build()
                    .unwrap();
                let batch = [msg("o-1"), msg("o-2"), msg("o-3")];
                let refs: Vec<&MessageExt> = batch.iter().collect();
                assert_eq!(
                    orderly.consume(&refs).await,
                    ConsumeOrderlyStatus::SuspendCurrentQueueAMoment
                );
                assert_eq!(env.state("o-1").await, (1, 1), "o-1 ran");
                assert_eq!(env.state("o-3").await, (0, 0), "o-3 waits behind o-2");
                assert_eq!(orderly.stats().decisions(Decision::Postponed), 1);
                assert_eq!(running.await.unwrap(), ConsumeSuccess);
                assert_eq!(orderly.consume(&refs).await, ConsumeOrderlyStatus::Success);
                for key in ["o-1", "o-2", "o-3"] {
                    assert_eq!(env.state(key).await, (1, 1), "{key}");
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn an_expired_record_is_taken_over() {
                let env = env().await;
                let payments = Arc::new(Payments::default());
                let listener = DedupConcurrentListener::inbox(payments.clone(), env.inbox.clone())
                    .namespace("group")
                    .processing_ttl(Duration::from_millis(100))
                    .record_ttl(Duration::from_millis(300))
                    .build()
                    .unwrap();
                assert_eq!(listener.consume(&[&msg("o-1")]).await, ConsumeSuccess);
                assert_eq!(listener.consume(&[&msg("o-1")]).await, ConsumeSuccess);
                assert_eq!(payments.runs(), 1);
                tokio::time::sleep(Duration::from_millis(500)).await;
                assert_eq!(listener.consume(&[&msg("o-1")]).await, ConsumeSuccess);
                assert_eq!(payments.runs(), 2, "recognised for the record TTL only");
                assert_eq!(env.state("o-1").await.1, 1, "one record, taken over");
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn long_and_odd_keys_are_kept_apart_and_recognised() {
                let env = env().await;
                let payments = Arc::new(Payments::default());
                let listener = env.listener(&payments);
                let long = "k".repeat(5000);
                let keys = [
                    "a:b",
                    "a%3Ab",
                    "заказ-🔑",
                    "#x",
                    "a b",
                    long.as_str(),
                    "nul\0byte",
                ];
                for key in keys {
                    assert_eq!(
                        listener.consume(&[&msg(key)]).await,
                        ConsumeSuccess,
                        "{key:.20}"
                    );
                    assert_eq!(
                        listener.consume(&[&msg(key)]).await,
                        ConsumeSuccess,
                        "{key:.20}"
                    );
                }
                assert_eq!(
                    payments.runs(),
                    keys.len(),
                    "each once, none taken for another"
                );
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_handler_that_deadlocks_runs_again_and_takes_effect_once() {
                let env = env().await;
                let payments = Arc::new(Payments::default());
                {
                    let mut script = payments.script.lock().unwrap();
                    script.accounts.insert("x".into(), vec![1, 2]);
                    script.accounts.insert("y".into(), vec![2, 1]);
                }
                let (a, b) = (env.listener(&payments), env.listener(&payments));
                let x = tokio::spawn(async move { (a.consume(&[&msg("x")]).await, a) });
                let y = tokio::spawn(async move { (b.consume(&[&msg("y")]).await, b) });
                let ((x, a), (y, b)) = (x.await.unwrap(), y.await.unwrap());
                assert_eq!((x, y), (ConsumeSuccess, ConsumeSuccess));
                let retried = a.stats().events(Event::TransactionRetried)
                    + b.stats().events(Event::TransactionRetried);
                assert!(retried >= 1, "the victim ran again");
                for account in [1i64, 2] {
                    let n: i64 = sqlx::query_scalar(<$sql>::ACCOUNT)
                        .bind(account)
                        .fetch_one(&env.pool)
                        .await
                        .unwrap();
                    assert_eq!(n, 2, "account {account}: one effect per message");
                }
                assert_eq!(env.state("x").await, (1, 1));
                assert_eq!(env.state("y").await, (1, 1));
            }

            /// Where the crash child is killed.
            const PHASES: [&str; 3] = ["claimed", "written", "committed"];

            /// Run by [`sigkill_anywhere_leaves_the_effect_and_its_record_both_or_neither`]
            /// as a child process: processes one message and stops at the phase it is told.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[ignore = "a child process of the crash test"]
            async fn crash_child() {
                let Ok(spec) = std::env::var("INBOX_CRASH_CHILD") else {
                    return;
                };
                let [url, phase, ready] =
                    <[&str; 3]>::try_from(spec.split('|').collect::<Vec<_>>()).unwrap();
                let pool = sqlx::Pool::<$db>::connect(url).await.unwrap();
                let inbox = <$inbox>::builder(pool).connect().await.unwrap();
                let payments = Arc::new(Payments::default());
                {
                    let mut script = payments.script.lock().unwrap();
                    script.ready_file = Some(ready.into());
                    let forever = Duration::from_secs(3600);
                    match phase {
                        "claimed" => script.hold_before_write.insert("crash".into(), forever),
                        "written" => script.hold.insert("crash".into(), forever),
                        _ => None,
                    };
                }
                let listener = DedupConcurrentListener::inbox(payments, inbox)
                    .namespace("group")
                    .build()
                    .unwrap();
                assert_eq!(listener.consume(&[&msg("crash")]).await, ConsumeSuccess);
                // Committed; killed before RocketMQ could hear of it.
                std::fs::write(ready, b"ready").unwrap();
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sigkill_anywhere_leaves_the_effect_and_its_record_both_or_neither() {
                let env = env().await;
                for phase in PHASES {
                    sqlx::query("DELETE FROM payments")
                        .execute(&env.pool)
                        .await
                        .unwrap();
                    sqlx::query("DELETE FROM t_rocketmq_dedup")
                        .execute(&env.pool)
                        .await
                        .unwrap();
                    let dir = tempfile::tempdir().unwrap();
                    let ready = dir.path().join("ready");
                    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
                        .args([
                            "--exact",
                            concat!(stringify!($name), "::crash_child"),
                            "--ignored",
                            "--nocapture",
                        ])
                        .env(
                            "INBOX_CRASH_CHILD",
                            format!("{}|{phase}|{}", env.server.url(), ready.display()),
                        )
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .spawn()
                        .unwrap();
                    let deadline = std::time::Instant::now() + Duration::from_secs(60);
                    while !ready.exists() && std::time::Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    assert!(ready.exists(), "{phase}: the child got there");
                    child.kill().unwrap();
                    child.wait().unwrap();
                    let expected = if phase == "committed" { (1, 1) } else { (0, 0) };
                    // The server rolls the dead client's transaction back once it sees the
                    // connection gone.
                    let mut state = env.state("crash").await;
                    for _ in 0..50 {
                        if state == expected {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        state = env.state("crash").await;
                    }
                    assert_eq!(
                        state, expected,
                        "{phase}: (effects, records) after the kill"
                    );
                    // Redelivered: processed now, or a duplicate if it had committed.
                    let payments = Arc::new(Payments::default());
                    let listener = env.listener(&payments);
                    let mut answer = ReconsumeLater;
                    for _ in 0..20 {
                        answer = listener.consume(&[&msg("crash")]).await;
                        if answer == ConsumeSuccess {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    assert_eq!(answer, ConsumeSuccess, "{phase}");
                    assert_eq!(env.state("crash").await, (1, 1), "{phase}: exactly once");
                    let ran = usize::from(phase != "committed");
                    assert_eq!(
                        payments.runs(),
                        ran,
                        "{phase}: the redelivered copy ran {ran} times"
                    );
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_database_that_is_down_fails_closed_and_nothing_is_lost() {
                let mut env = env().await;
                let payments = Arc::new(Payments::default());
                let listener = DedupConcurrentListener::inbox(payments.clone(), env.inbox.clone())
                    .namespace("group")
                    .store_timeout(Duration::from_millis(800))
                    .build()
                    .unwrap();
                env.server.kill();
                assert_eq!(listener.consume(&[&msg("o-1")]).await, ReconsumeLater);
                assert_eq!(payments.runs(), 0);
                assert_eq!(listener.stats().decisions(Decision::StoreUnavailable), 1);
                assert!(listener.stats().events(Event::StoreError) >= 1);
                env.server.restart().unwrap();
                let mut answer = ReconsumeLater;
                for _ in 0..40 {
                    answer = listener.consume(&[&msg("o-1")]).await;
                    if answer == ConsumeSuccess {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                assert_eq!(answer, ConsumeSuccess, "{}", listener.stats().summary());
                assert_eq!(env.state("o-1").await, (1, 1));
            }
        }
    };
}

inbox_suite!(
    mariadb,
    sqlx::MySql,
    MySqlSyntax,
    rocketmq_dedup_testkit::MariaDbServer,
    rocketmq_dedup::sql::mysql::MySqlInbox
);
inbox_suite!(
    postgres,
    sqlx::Postgres,
    PostgresSyntax,
    rocketmq_dedup_testkit::PostgresServer,
    rocketmq_dedup::sql::postgres::PostgresInbox
);

/// A database that refuses writes: the store's calls fail with [`StoreError::ReadOnly`], and
/// an inbox listener acks nothing.
async fn read_only_is_a_typed_error_and_nothing_is_acked(
    store: &dyn rocketmq_dedup::DedupStore,
    listener: rocketmq_dedup::DedupConcurrentListener,
) {
    use rocketmq_dedup::store::{contract::fresh_keys, OwnerToken};
    use rocketmq_dedup::{Decision, Event, StoreError, StoreOperation};
    let keys = fresh_keys(2);
    let err = store
        .claim(&keys, OwnerToken::random(), Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::ReadOnly {
                operation: StoreOperation::Claim
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.kind(), "read_only");
    let status = listener.consume(&[&msg("o-1")]).await;
    assert_eq!(
        status,
        rocketmq_client_rust::ConsumeConcurrentlyStatus::ReconsumeLater
    );
    let stats = listener.stats();
    assert_eq!(stats.decisions(Decision::StoreUnavailable), 1);
    assert_eq!(stats.messages_acked(), 0);
    assert!(stats.events(Event::StoreError) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_mariadb_is_a_typed_error() {
    use rocketmq_dedup::sql::mysql::{MySqlInbox, MySqlStore};
    let server = rocketmq_dedup_testkit::MariaDbServer::start_local().unwrap();
    let store = MySqlStore::builder(server.url()).connect().await.unwrap();
    store.migrate().await.unwrap();
    let inbox = MySqlInbox::builder(store.pool().clone())
        .connect()
        .await
        .unwrap();
    let payments = Arc::new(Payments::default());
    let listener = rocketmq_dedup::DedupConcurrentListener::inbox(payments, inbox)
        .namespace("group")
        .build()
        .unwrap();
    server.execute_as_root("SET GLOBAL read_only = 1").unwrap();
    read_only_is_a_typed_error_and_nothing_is_acked(&store, listener).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_postgres_is_a_typed_error() {
    use rocketmq_dedup::sql::postgres::{PostgresInbox, PostgresStore};
    let server = rocketmq_dedup_testkit::PostgresServer::start_local().unwrap();
    let setup = PostgresStore::builder(server.url())
        .connect()
        .await
        .unwrap();
    setup.migrate().await.unwrap();
    sqlx::query("ALTER DATABASE postgres SET default_transaction_read_only = on")
        .execute(setup.pool())
        .await
        .unwrap();
    // New sessions are read-only.
    let store = PostgresStore::builder(server.url())
        .connect()
        .await
        .unwrap();
    let inbox = PostgresInbox::builder(store.pool().clone())
        .connect()
        .await
        .unwrap();
    let payments = Arc::new(Payments::default());
    let listener = rocketmq_dedup::DedupConcurrentListener::inbox(payments, inbox)
        .namespace("group")
        .build()
        .unwrap();
    read_only_is_a_typed_error_and_nothing_is_acked(&store, listener).await;
}
