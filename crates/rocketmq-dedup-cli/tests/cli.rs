//! The operator CLI against real servers: a record's status, forget (only with --yes), stats,
//! purge, and errors people can read.

use std::process::{Command, Output};
use std::time::Duration;

use rocketmq_dedup::record_key::{KeyParts, RecordKey};
use rocketmq_dedup::sql::mysql::MySqlStore;
use rocketmq_dedup::sql::postgres::PostgresStore;
use rocketmq_dedup::store::{DedupStore, OwnerToken, RedisStore};
use rocketmq_dedup_testkit::{
    MariaDbServer, PostgresServer, RedisCluster, RedisOptions, RedisServer,
};

const LONG: Duration = Duration::from_secs(3600);

fn cli(store: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rocketmq-dedup"))
        .env_remove("DEDUP_STORE_URL")
        .arg("--store")
        .arg(store)
        .args(args)
        .output()
        .expect("the CLI runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The record key of `k` as a listener writes it.
fn key(k: &str) -> RecordKey {
    RecordKey::new(KeyParts {
        prefix: "dedup",
        namespace: "payments",
        topic: "Orders",
        tag: None,
        key: k,
    })
}

/// Puts one CONSUMED record (`done`) and one CONSUMING (`busy`) in `store`.
async fn two_records(store: &impl DedupStore) -> OwnerToken {
    let token = OwnerToken::random();
    let (done, busy) = (key("done"), key("busy"));
    store
        .claim(&[done.clone(), busy], token, LONG)
        .await
        .unwrap();
    store.commit(&[done], token, LONG).await.unwrap();
    token
}

/// status, forget without and with --yes, then status again: the same on every store, in the
/// store's layout (the CLI's default).
fn status_and_forget(url: &str, token: OwnerToken) {
    let at = ["--namespace", "payments", "--topic", "Orders"];
    let status = |k: &str| cli(url, &[&at[..], &["status", k]].concat());
    let out = status("done");
    assert!(out.status.success(), "{}", stderr(&out));
    // An hour (in Redis up to a unit more, an eighth of the store's record TTL, where a record
    // kept this long goes into the records hashes).
    assert!(
        stdout(&out).starts_with("CONSUMED, recognised for 59 min")
            || stdout(&out).starts_with("CONSUMED, recognised for 1 h"),
        "{}",
        stdout(&out)
    );
    let out = status("busy");
    assert!(
        stdout(&out).starts_with(&format!("CONSUMING by owner c{:x}", token.get())),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&status("never")).starts_with("absent"));

    let out = cli(url, &[&at[..], &["forget", "done"]].concat());
    assert_eq!(out.status.code(), Some(2), "forget asks for --yes");
    assert!(stderr(&out).contains("--yes"));
    assert!(
        stdout(&status("done")).starts_with("CONSUMED"),
        "still there"
    );
    let out = cli(url, &[&at[..], &["forget", "done", "--yes"]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("forgotten (was CONSUMED"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&status("done")).starts_with("absent"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_status_forget_stats_purge() {
    let server = RedisServer::start_local(RedisOptions::default()).unwrap();
    let store = RedisStore::builder(server.url())
        .record_ttl(LONG)
        .connect()
        .await
        .unwrap();
    let token = two_records(&store).await;
    let stats = |args: &[&str]| cli(server.url(), &[args, &["stats"]].concat());
    let at = ["--namespace", "payments", "--topic", "Orders"];
    let out = stats(&at);
    assert!(
        stdout(&out).contains("topic Orders: CONSUMING 1, CONSUMED 1"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stdout(&out).contains("server memory in use: "));
    for other in [
        ["--namespace", "shipping", "--topic", "Orders"],
        ["--namespace", "payments", "--topic", "Refunds"],
    ] {
        let out = stats(&other);
        assert!(
            stdout(&out).contains("CONSUMING 0, CONSUMED 0"),
            "{other:?}: {}",
            stdout(&out)
        );
    }
    // A namespace is counted too: its topics' claims and records hashes.
    let readable = RecordKey::new(KeyParts {
        prefix: "dedup",
        namespace: "payments",
        topic: "Refunds",
        tag: None,
        key: "r-1",
    });
    store.claim(&[readable], token, LONG).await.unwrap();
    let out = stats(&["--namespace", "payments"]);
    assert!(
        stdout(&out).contains("namespace payments: CONSUMING 2, CONSUMED 1"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    status_and_forget(server.url(), token);
    let purge = cli(server.url(), &["purge"]);
    assert!(stdout(&purge).contains("Redis expires records itself"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_status_forget_stats() {
    let cluster = RedisCluster::start_local(3, 0).unwrap();
    let store = RedisStore::builder(cluster.url())
        .record_ttl(LONG)
        .connect()
        .await
        .unwrap();
    let token = two_records(&store).await;
    // More records, spread over the masters.
    let many: Vec<RecordKey> = (0..30).map(|i| key(&format!("k{i}"))).collect();
    store.claim(&many, token, LONG).await.unwrap();
    store.commit(&many, token, LONG).await.unwrap();
    let stats = cli(
        cluster.url(),
        &["--namespace", "payments", "--topic", "Orders", "stats"],
    );
    assert!(
        stdout(&stats).contains("CONSUMING 1, CONSUMED 31"),
        "{}{}",
        stdout(&stats),
        stderr(&stats)
    );
    status_and_forget(cluster.url(), token);
}

/// The SQL stores: status, forget, stats with an expired row, purge.
async fn sql_case(url: &str, store: &impl DedupStore) {
    let token = two_records(store).await;
    // One record that has expired (and is not purged yet).
    store
        .claim(&[key("stale")], token, Duration::from_millis(1))
        .await
        .unwrap();
    // And one in another topic of the namespace.
    let refund = RecordKey::new(KeyParts {
        prefix: "dedup",
        namespace: "payments",
        topic: "Refunds",
        tag: None,
        key: "r-1",
    });
    store.claim(&[refund], token, LONG).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    for (args, expected) in [
        (
            &["--namespace", "payments"][..],
            "namespace payments: CONSUMING 2, CONSUMED 1, expired (not yet purged) 1",
        ),
        (
            &["--namespace", "payments", "--topic", "Orders"][..],
            "topic Orders: CONSUMING 1, CONSUMED 1, expired (not yet purged) 1",
        ),
        (
            &["--namespace", "payments", "--topic", "Refunds"][..],
            "topic Refunds: CONSUMING 1, CONSUMED 0, expired (not yet purged) 0",
        ),
    ] {
        let stats = cli(url, &[args, &["stats"]].concat());
        assert!(
            stdout(&stats).contains(expected),
            "{args:?}: {}{}",
            stdout(&stats),
            stderr(&stats)
        );
    }
    status_and_forget(url, token);
    let purge = cli(url, &["purge"]);
    assert!(
        stdout(&purge).contains("deleted 1 expired rows"),
        "{}",
        stdout(&purge)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_status_forget_stats_purge() {
    let server = MariaDbServer::start().unwrap();
    let store = MySqlStore::builder(server.url()).connect().await.unwrap();
    store.migrate().await.unwrap();
    sql_case(server.url(), &store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_status_forget_stats_purge() {
    let server = PostgresServer::start().unwrap();
    let store = PostgresStore::builder(server.url())
        .connect()
        .await
        .unwrap();
    store.migrate().await.unwrap();
    sql_case(server.url(), &store).await;
}

#[tokio::test]
async fn errors_say_what_is_wrong_once() {
    let port = rocketmq_dedup_testkit::free_port().unwrap();
    let refused = cli(&format!("redis://127.0.0.1:{port}"), &["purge"]);
    assert_eq!(refused.status.code(), Some(1));
    let text = stderr(&refused);
    assert!(text.starts_with("error: dedup store unreachable"), "{text}");
    assert_eq!(
        text.matches("Connection refused").count(),
        1,
        "the cause once: {text}"
    );

    let server = RedisServer::start_local(RedisOptions {
        password: Some("right-pw".into()),
        ..Default::default()
    })
    .unwrap();
    let wrong = cli(
        &format!("redis://:wrong-pw@127.0.0.1:{}", server.port()),
        &["purge"],
    );
    let text = stderr(&wrong);
    assert!(
        text.starts_with("error: dedup store refused the credentials"),
        "{text}"
    );
    assert!(!text.contains("wrong-pw"), "no password in errors: {text}");

    let bad = cli("http://127.0.0.1:1", &["purge"]);
    assert!(
        stderr(&bad).starts_with("error: bad dedup store URL"),
        "{}",
        stderr(&bad)
    );
    let memory = cli("memory://", &["purge"]);
    assert!(stderr(&memory).contains("in-memory store lives inside one process"));

    let no_topic = cli("redis://127.0.0.1:1", &["--namespace", "x", "status", "k"]);
    assert!(stderr(&no_topic).contains("need --namespace and --topic"));
}
