//! The Redis store's sharded layout at its edges: servers whose listpack limits are tiny or
//! huge, a records hash that became a hashtable, and stores configured with another unit
//! width or record TTL than the one that laid a group out. Each still answers correctly; where
//! memory or the sweep will suffer, the store says so in a WARN.

#[path = "support/log_capture.rs"]
mod log_capture;
#[path = "support/redis_keys.rs"]
mod redis_keys;

use std::time::Duration;

use log_capture::Capture;
use redis_keys::keys_matching;

use rocketmq_dedup::record_key::RecordKey;
use rocketmq_dedup::record_key::RecordScope;
use rocketmq_dedup::store::admin::{RecordAdmin, RecordCounts, RecordState};
use rocketmq_dedup::store::contract::{fresh_keys, LONG};
use rocketmq_dedup::store::{ClaimOutcome, CommitOutcome, DedupStore, OwnerToken, RedisStore};
use rocketmq_dedup_testkit::{RedisOptions, RedisServer};

/// Captures this thread's logs (WARN and above) until the guard drops.
fn capture_warnings() -> (Capture, tracing::subscriber::DefaultGuard) {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    (capture, tracing::subscriber::set_default(subscriber))
}

/// Sets the server's `settings` (`CONFIG SET name value`), each answered OK.
fn config_set(server: &RedisServer, settings: &[(&str, &str)]) {
    for (name, value) in settings {
        let answer = server.command(&["CONFIG", "SET", name, value]).unwrap();
        assert!(answer.starts_with("+OK"), "{name} {value}: {answer}");
    }
}

/// A store on `server` whose new groups get one shard: every record of a group in one hash.
async fn one_shard_store(server: &RedisServer) -> RedisStore {
    RedisStore::builder(server.url())
        .expected_rate(0)
        .connect()
        .await
        .unwrap()
}

/// The listener's default record TTL: records go into the records hashes of a default store.
const DAY: Duration = Duration::from_secs(24 * 3600);

fn local() -> RedisServer {
    RedisServer::start_local(RedisOptions::default()).expect("redis-server starts")
}

/// Claims and commits `keys` on `store`, then checks that a second owner finds every one
/// CONSUMED and a fresh key claimable.
async fn commit_then_find_consumed(store: &RedisStore, keys: &[RecordKey]) {
    let token = OwnerToken::random();
    let claims = store.claim(keys, token, LONG).await.unwrap();
    assert!(
        claims.iter().all(|c| *c == ClaimOutcome::Claimed),
        "{claims:?}"
    );
    let commits = store.commit(keys, token, DAY).await.unwrap();
    assert!(
        commits.iter().all(|c| *c == CommitOutcome::Committed),
        "{commits:?}"
    );
    let again = store.claim(keys, OwnerToken::random(), LONG).await.unwrap();
    assert!(
        again.iter().all(|c| *c == ClaimOutcome::Consumed),
        "{again:?}"
    );
    let fresh = fresh_keys(1);
    assert_eq!(
        store
            .claim(&fresh, OwnerToken::random(), LONG)
            .await
            .unwrap(),
        [ClaimOutcome::Claimed]
    );
}

/// The encodings of the records hashes on `server`.
fn records_encodings(server: &RedisServer) -> Vec<String> {
    keys_matching(server, "contract:group:Topic::{*}:r")
        .iter()
        .map(|key| server.command(&["OBJECT", "ENCODING", key]).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_listpack_limits_answer_correctly_and_warn() {
    let server = local();
    config_set(
        &server,
        &[
            ("hash-max-listpack-entries", "4"),
            ("hash-max-listpack-value", "8"),
        ],
    );
    let (capture, _guard) = capture_warnings();
    // One shard: all 40 records in one records hash.
    let store = one_shard_store(&server).await;
    let logs = capture.text();
    assert!(logs.contains("WARN"), "{logs}");
    assert!(
        logs.contains("hash-max-listpack-value is 8 bytes"),
        "{logs}"
    );
    commit_then_find_consumed(&store, &fresh_keys(40)).await;
    let encodings = records_encodings(&server);
    assert!(
        !encodings.is_empty() && encodings.iter().all(|e| e.contains("hashtable")),
        "{encodings:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn few_listpack_entries_and_huge_limits_warn() {
    let server = local();
    config_set(&server, &[("hash-max-listpack-entries", "64")]);
    let (capture, guard) = capture_warnings();
    let store = RedisStore::builder(server.url()).connect().await.unwrap();
    let logs = capture.text();
    assert!(logs.contains("hash-max-listpack-entries is 64"), "{logs}");
    commit_then_find_consumed(&store, &fresh_keys(8)).await;
    drop(guard);

    let server = local();
    config_set(
        &server,
        &[
            ("hash-max-listpack-entries", "100000"),
            ("hash-max-listpack-value", "4096"),
        ],
    );
    let (capture, _guard) = capture_warnings();
    let store = one_shard_store(&server).await;
    commit_then_find_consumed(&store, &fresh_keys(600)).await;
    // No memory lost, but a sweep reads a listpack whole: one of 100 000 records would take
    // one script far too long.
    let logs = capture.text();
    assert!(
        logs.contains("hash-max-listpack-entries is 100000"),
        "{logs}"
    );
    assert!(logs.contains("reads whole"), "{logs}");
    let encodings = records_encodings(&server);
    assert!(
        encodings.iter().all(|e| e.contains("listpack")),
        "{encodings:?}"
    );
}

/// A records hash that outgrew the listpack limit (the rate was underestimated) is a
/// hashtable: its records, and those written after, are still found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_records_hash_converted_to_a_hashtable_still_answers() {
    let server = local();
    config_set(&server, &[("hash-max-listpack-entries", "300")]);
    let store = one_shard_store(&server).await;
    let before = fresh_keys(200);
    commit_then_find_consumed(&store, &before).await;
    assert!(records_encodings(&server)
        .iter()
        .all(|e| e.contains("listpack")));
    let after = fresh_keys(200);
    commit_then_find_consumed(&store, &after).await;
    assert!(records_encodings(&server)
        .iter()
        .all(|e| e.contains("hashtable")));
    let again = store
        .claim(&before, OwnerToken::random(), LONG)
        .await
        .unwrap();
    assert!(again.iter().all(|c| *c == ClaimOutcome::Consumed));
    let scope = RecordScope {
        prefix: "contract",
        namespace: "group",
        topic: Some("Topic"),
        tag: None,
    };
    // The claims the last claims made on CONSUMED records are released by the next pipeline
    // of their thread, or after the commit linger.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let counts: RecordCounts = store.counts(&scope).await.unwrap();
    // 402 claims were made; 400 committed; the two fresh keys of the checks stay CONSUMING.
    assert_eq!((counts.consumed, counts.consuming), (400, 2));
}

/// A store configured with another record TTL and rate (so another unit width and shard
/// count) uses the layout the group already has in Redis, with a WARN, and finds its records;
/// a commit that keeps records longer than the store's record TTL keeps them that long, up to
/// 60 units (7.5 of the first store's record TTLs), with a WARN past that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_configured_otherwise_find_each_others_records() {
    let server = local();
    let first = RedisStore::builder(server.url()).connect().await.unwrap();
    let keys = fresh_keys(20);
    let token = OwnerToken::random();
    first.claim(&keys, token, LONG).await.unwrap();
    first.commit(&keys, token, DAY).await.unwrap();

    let (capture, _guard) = capture_warnings();
    let other = RedisStore::builder(server.url())
        .record_ttl(Duration::from_secs(36 * 3600))
        .expected_rate(5)
        .connect()
        .await
        .unwrap();
    let found = other
        .claim(&keys, OwnerToken::random(), LONG)
        .await
        .unwrap();
    assert_eq!(found, vec![ClaimOutcome::Consumed; 20]);
    let logs = capture.text();
    assert!(logs.contains("configured otherwise"), "{logs}");
    // Its own commits land where the first store looks.
    let more = fresh_keys(5);
    let token = OwnerToken::random();
    other.claim(&more, token, LONG).await.unwrap();
    other
        .commit(&more, token, Duration::from_secs(3 * 24 * 3600))
        .await
        .unwrap();
    let seen = first
        .claim(&more, OwnerToken::random(), LONG)
        .await
        .unwrap();
    assert_eq!(seen, vec![ClaimOutcome::Consumed; 5]);
    for key in &more {
        match first.inspect(key).await.unwrap() {
            // Kept three days, and less than a unit (3 h) more.
            RecordState::Consumed { ttl_left } => {
                assert!(
                    ttl_left > Duration::from_secs(3 * 24 * 3600)
                        && ttl_left < Duration::from_secs(3 * 24 * 3600 + 3 * 3600 + 60),
                    "{ttl_left:?}"
                )
            }
            other => panic!("{other:?}"),
        }
    }
    // Ten days is more than the group's layout keeps a record: 60 units of 3 h (and less than
    // one more), with a WARN.
    assert!(!capture.text().contains("keeps records longer"));
    let longest = fresh_keys(1);
    other.claim(&longest, token, LONG).await.unwrap();
    other
        .commit(&longest, token, Duration::from_secs(10 * 24 * 3600))
        .await
        .unwrap();
    assert!(
        capture.text().contains("keeps records longer"),
        "{}",
        capture.text()
    );
    match first.inspect(&longest[0]).await.unwrap() {
        RecordState::Consumed { ttl_left } => assert!(
            ttl_left > Duration::from_secs(60 * 3 * 3600)
                && ttl_left <= Duration::from_secs(61 * 3 * 3600),
            "{ttl_left:?}"
        ),
        other => panic!("{other:?}"),
    }
    // The operator forgets one: both stores then let it run again.
    assert!(first.forget(&more[0]).await.unwrap());
    assert_eq!(
        other
            .claim(&more[..1], OwnerToken::random(), LONG)
            .await
            .unwrap(),
        [ClaimOutcome::Claimed]
    );
}
