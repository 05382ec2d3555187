//! The way over from the Java library RocketMQDedupListener on Redis: its keys, written as it
//! writes them (`RedisPersist`: `SET … CONSUMING NX PX`, `SET … CONSUMED EX`), on a real
//! redis-server.

use std::time::Duration;

use redis::AsyncCommands;
use rocketmq_dedup::record_key::{KeyParts, RecordKey};
use rocketmq_dedup::store::{
    ClaimOutcome, CommitOutcome, DedupStore, JavaKeys, OwnerToken, RedisStore,
};
use rocketmq_dedup_testkit::RedisServer;

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

fn key(tag: Option<&str>, key: &str) -> RecordKey {
    RecordKey::new(KeyParts {
        namespace: "repay-platform",
        topic: "Orders",
        tag,
        key,
        ..KeyParts::default()
    })
}

async fn java_client(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_java_librarys_keys_are_honoured_and_written() {
    let server = RedisServer::start().unwrap();
    let mut java = java_client(&server).await;
    // What a Java consumer left: one message processed, one in progress (the tag segment
    // only for a message with a tag).
    let () = java
        .set_ex(
            "MSGDEDUP:repay-platform:Orders:paid:o-1",
            "CONSUMED",
            24 * 3600,
        )
        .await
        .unwrap();
    let set: bool = redis::cmd("SET")
        .arg("MSGDEDUP:repay-platform:Orders:o-2")
        .arg("CONSUMING")
        .arg("NX")
        .arg("PX")
        .arg(60_000)
        .query_async::<Option<String>>(&mut java)
        .await
        .unwrap()
        .is_some();
    assert!(set);

    let plain = RedisStore::builder(server.url()).connect().await.unwrap();
    let store = JavaKeys::new(plain.clone());
    let keys = [key(Some("paid"), "o-1"), key(None, "o-2"), key(None, "o-3")];
    // Without the Java keys, both of the Java consumer's messages would run again.
    assert_eq!(
        plain
            .claim(&keys[..2], OwnerToken::random(), MINUTE)
            .await
            .unwrap(),
        [ClaimOutcome::Claimed, ClaimOutcome::Claimed]
    );
    plain
        .release(&keys[..2], OwnerToken::random())
        .await
        .unwrap();

    let token = OwnerToken::random();
    let fresh = [
        key(Some("paid"), "o-1x"),
        key(None, "o-2x"),
        key(None, "o-3"),
    ];
    let () = java
        .set_ex("MSGDEDUP:repay-platform:Orders:paid:o-1x", "CONSUMED", 3600)
        .await
        .unwrap();
    let () = java
        .pset_ex("MSGDEDUP:repay-platform:Orders:o-2x", "CONSUMING", 60_000)
        .await
        .unwrap();
    assert_eq!(
        store.claim(&fresh, token, MINUTE).await.unwrap(),
        [
            ClaimOutcome::Consumed,
            ClaimOutcome::InFlight,
            ClaimOutcome::Claimed
        ]
    );
    // A Java consumer now sees the Rust claim as in progress (its setConsumingIfNX fails and
    // its get answers CONSUMING) ...
    let java_key = "MSGDEDUP:repay-platform:Orders:o-3";
    assert_eq!(
        java.get::<_, Option<String>>(java_key)
            .await
            .unwrap()
            .as_deref(),
        Some("CONSUMING")
    );
    let pttl: i64 = java.pttl(java_key).await.unwrap();
    assert!(pttl > 0 && pttl <= 60_000, "{pttl}");
    // ... and, once committed, as consumed, for the record TTL.
    assert_eq!(
        store.commit(&fresh[2..], token, HOUR).await.unwrap(),
        [CommitOutcome::Committed]
    );
    assert_eq!(
        java.get::<_, Option<String>>(java_key)
            .await
            .unwrap()
            .as_deref(),
        Some("CONSUMED")
    );
    let pttl: i64 = java.pttl(java_key).await.unwrap();
    assert!(pttl > 3_500_000 && pttl <= 3_600_000, "{pttl}");

    // A claim that loses in the Rust store leaves no Java claim behind.
    let other = OwnerToken::random();
    let held = [key(None, "o-4")];
    store.claim(&held, token, MINUTE).await.unwrap();
    let () = java
        .del("MSGDEDUP:repay-platform:Orders:o-4")
        .await
        .unwrap();
    assert_eq!(
        store.claim(&held, other, MINUTE).await.unwrap(),
        [ClaimOutcome::InFlight]
    );
    assert!(!java
        .exists::<_, bool>("MSGDEDUP:repay-platform:Orders:o-4")
        .await
        .unwrap());
    // A release deletes the Java claim with the Rust one.
    let released = [key(None, "o-5")];
    store.claim(&released, token, MINUTE).await.unwrap();
    assert_eq!(store.release(&released, token).await.unwrap(), [true]);
    assert!(!java
        .exists::<_, bool>("MSGDEDUP:repay-platform:Orders:o-5")
        .await
        .unwrap());
}

/// A claim again with the same token (a listener's retried claim) after the token's Java key
/// went (it expires a moment before the Rust claim, and a stale release deletes it) writes a
/// Java key that ends with the Rust claim, not a fresh TTL later: once the claim expires the
/// key is free for the next claim, in Rust and Java alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_again_never_makes_the_java_key_outlive_the_claim() {
    let server = RedisServer::start().unwrap();
    let store = JavaKeys::new(RedisStore::builder(server.url()).connect().await.unwrap());
    let mut java = java_client(&server).await;
    let k = [key(None, "o-9")];
    let (holder, stale) = (OwnerToken::random(), OwnerToken::random());
    let claim_ttl = Duration::from_millis(600);
    assert_eq!(
        store.claim(&k, holder, claim_ttl).await.unwrap(),
        [ClaimOutcome::Claimed]
    );
    // A release by a token whose claim is long gone deletes the Java key (the Java claim goes
    // first; the Rust release then finds another owner).
    assert_eq!(store.release(&k, stale).await.unwrap(), [false]);
    let java_key = "MSGDEDUP:repay-platform:Orders:o-9";
    assert!(!java.exists::<_, bool>(java_key).await.unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The holder's claim again: the Rust claim keeps its TTL (the contract), about 300 ms.
    assert_eq!(
        store.claim(&k, holder, MINUTE).await.unwrap(),
        [ClaimOutcome::Claimed]
    );
    let java_ttl: i64 = java.pttl(java_key).await.unwrap();
    assert!(
        (1..=600).contains(&java_ttl),
        "the Java key ends with the Rust claim it stands for, not a minute later: {java_ttl} ms"
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        store.claim(&k, OwnerToken::random(), MINUTE).await.unwrap(),
        [ClaimOutcome::Claimed],
        "the claim expired: the key is free"
    );
}
