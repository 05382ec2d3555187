//! Behaviour of the Redis store beyond the shared contract: its record format, AUTH, a
//! flushed script cache, unreadable records and a server that goes away and comes back.

#[path = "support/redis_keys.rs"]
mod redis_keys;

use std::time::Duration;

use redis_keys::keys_matching;
use rocketmq_dedup::record_key::{KeyParts, RecordKey};
use rocketmq_dedup::store::admin::{RecordAdmin, RecordState};
use rocketmq_dedup::store::contract::{commit_detached_awaited, fresh_keys, LONG};
use rocketmq_dedup::store::{
    ClaimOutcome, CommitOutcome, DedupStore, DetachedCommit, OwnerToken, RedisStore,
};
use rocketmq_dedup::testing::RedisStoreProbe;
use rocketmq_dedup::StoreError;
use rocketmq_dedup_testkit::{RedisOptions, RedisServer};

fn local(options: RedisOptions) -> RedisServer {
    RedisServer::start_local(options).expect("redis-server starts")
}

/// What the store's operator view says of `key`.
async fn state(store: &RedisStore, key: &RecordKey) -> RecordState {
    store.inspect(key).await.unwrap()
}

/// A number a server answered (`:n`).
fn number(answer: &str) -> i64 {
    answer.trim().trim_start_matches(':').parse().unwrap()
}

#[tokio::test]
async fn records_use_the_documented_layout_and_values() {
    let server = local(RedisOptions::default());
    let store = RedisStore::builder(server.url()).connect().await.unwrap();
    let key = RecordKey::new(KeyParts {
        prefix: "dedup",
        namespace: "group",
        topic: "Orders",
        tag: Some("paid"),
        key: "o:1",
    });
    let token = OwnerToken::from_u64(0xabc).unwrap();
    store
        .claim(std::slice::from_ref(&key), token, LONG)
        .await
        .unwrap();
    let group = "dedup:group:Orders:paid:";
    let claim = store.claim_key(&key).unwrap();
    assert!(
        claim.starts_with(&format!("{group}{{")) && claim.ends_with("}o%3A1"),
        "{claim}"
    );
    let mut expected = vec![format!("{group}{{layout}}"), claim.clone()];
    expected.sort();
    assert_eq!(
        keys_matching(&server, "dedup:*"),
        expected,
        "the group's layout and the claim"
    );
    assert!(server.command(&["GET", &claim]).unwrap().contains("cabc"));
    let layout = server
        .command(&["GET", &format!("{group}{{layout}}")])
        .unwrap();
    // A 24 h record TTL: 3 h units; 1 000 records a second: 524 288 shards.
    assert!(layout.contains("w=10800000 s=524288"), "{layout:?}");

    let record_ttl = Duration::from_secs(24 * 3600);
    store
        .commit(std::slice::from_ref(&key), token, record_ttl)
        .await
        .unwrap();
    let hashes = keys_matching(&server, &format!("{group}{{*}}:*"));
    assert_eq!(hashes.len(), 1, "{hashes:?}");
    let records = &hashes[0];
    let tag = &claim[group.len()..=claim.find('}').unwrap()];
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert_eq!(*records, format!("{group}{tag}:r"));
    assert_eq!(
        number(&server.command(&["EXISTS", &claim]).unwrap()),
        0,
        "claim gone"
    );
    // The meta field, first, and the record's (the sweep state comes with the first pass).
    assert_eq!(number(&server.command(&["HLEN", records]).unwrap()), 2);
    let all = server.command(&["HGETALL", records]).unwrap();
    // The meta field: the unit width and shard count. The record's stamp: the unit after the
    // one its day ends in, modulo 128 (the server's clock; ours is the same machine's).
    let dead_from = (now_ms + 86_400_000) / 10_800_000 + 1;
    let expected = "*4\r\n$0\r\n\r\n$15\r\n10800000,524288\r\n$12\r\n";
    assert!(all.starts_with(expected), "{all:?}");
    assert!(
        all.ends_with(&format!("\r\n{}\r\n", dead_from % 128)),
        "{all:?}"
    );
    assert!(server
        .command(&["OBJECT", "ENCODING", records])
        .unwrap()
        .contains("listpack"));
    // The hash expires when its last record stops being live (set relative to the server's
    // clock, so within a few ms of the unit's start).
    let expires_at = number(&server.command(&["PEXPIRETIME", records]).unwrap()) as u64;
    assert!(
        expires_at.abs_diff(dead_from * 10_800_000) < 50,
        "{expires_at} against {}",
        dead_from * 10_800_000
    );
    assert!(matches!(
        state(&store, &key).await,
        RecordState::Consumed { .. }
    ));

    // A record kept an hour, under two units: in its claim key, as `1`, for the hour.
    let short = RecordKey::new(KeyParts {
        prefix: "dedup",
        namespace: "group",
        topic: "Orders",
        tag: Some("paid"),
        key: "o:2",
    });
    store
        .claim(std::slice::from_ref(&short), token, LONG)
        .await
        .unwrap();
    store
        .commit(
            std::slice::from_ref(&short),
            token,
            Duration::from_secs(3600),
        )
        .await
        .unwrap();
    let claim = store.claim_key(&short).unwrap();
    assert_eq!(server.command(&["GET", &claim]).unwrap(), "$1\r\n1\r\n");
    let left = number(&server.command(&["PTTL", &claim]).unwrap());
    assert!((3_590_000..=3_600_000).contains(&left), "{left}");
    assert_eq!(
        number(&server.command(&["HLEN", records]).unwrap()),
        2,
        "not in the records hash"
    );
}

/// A record in a records hash is live for its TTL and less than a unit more (a unit is an
/// eighth of the store's record TTL, 250 ms at the least), and the hash's first commit of a
/// later unit sweeps it away. (Values that are not stamps, and the sweep's bounds, are in
/// `redis_records_hash.rs`.)
#[tokio::test]
async fn hashed_records_stop_being_live_after_their_ttl_and_are_swept() {
    let server = local(RedisOptions::default());
    let ttl = Duration::from_secs(2);
    // 250 ms units, one shard: every record of the group in one hash.
    let store = RedisStore::builder(server.url())
        .record_ttl(ttl)
        .expected_rate(0)
        .connect()
        .await
        .unwrap();
    let keys = fresh_keys(3);
    let token = OwnerToken::random();
    store.claim(&keys, token, LONG).await.unwrap();
    let committed_at = std::time::Instant::now();
    assert_eq!(
        store.commit(&keys[..1], token, ttl).await.unwrap(),
        [CommitOutcome::Committed]
    );
    let records = keys_matching(&server, "contract:group:Topic::{*}:r");
    assert_eq!(records.len(), 1, "{records:?}");
    let hlen = || number(&server.command(&["HLEN", &records[0]]).unwrap());
    let other = OwnerToken::random();
    assert_eq!(
        store.claim(&keys[..1], other, LONG).await.unwrap(),
        [ClaimOutcome::Consumed]
    );
    match state(&store, &keys[0]).await {
        RecordState::Consumed { ttl_left } => assert!(
            ttl_left > Duration::from_millis(2_000) && ttl_left <= Duration::from_millis(2_500),
            "{ttl_left:?}"
        ),
        other => panic!("{other:?}"),
    }
    // A second record a second later keeps the hash.
    tokio::time::sleep(Duration::from_secs(1)).await;
    store.commit(&keys[1..2], token, ttl).await.unwrap();
    assert_eq!(hlen(), 4, "two records, the meta field and the sweep state");
    // Kept 2 s and less than a unit more: gone by 2.25 s.
    tokio::time::sleep(Duration::from_millis(2_300).saturating_sub(committed_at.elapsed())).await;
    assert_eq!(state(&store, &keys[0]).await, RecordState::Absent);
    assert_eq!(hlen(), 4, "the dead field is still there");
    assert_eq!(
        store.claim(&keys[..1], other, LONG).await.unwrap(),
        [ClaimOutcome::Claimed]
    );
    store.release(&keys[..1], other).await.unwrap();
    // The next commit into the hash sweeps the dead field away, and only that one.
    store.commit(&keys[2..], token, ttl).await.unwrap();
    assert_eq!(
        hlen(),
        4,
        "two live records, the meta field and the sweep state"
    );
    assert!(matches!(
        state(&store, &keys[1]).await,
        RecordState::Consumed { .. }
    ));
    // The hash expires with its last record.
    tokio::time::sleep(Duration::from_millis(2_600)).await;
    assert!(keys_matching(&server, "contract:group:Topic::{*}:r").is_empty());
}

#[tokio::test]
async fn auth_is_required_and_used() {
    let server = local(RedisOptions {
        password: Some("s3cret-pw".into()),
        ..Default::default()
    });
    let store = RedisStore::builder(server.url()).connect().await.unwrap();
    let keys = fresh_keys(1);
    assert_eq!(
        store
            .claim(&keys, OwnerToken::random(), LONG)
            .await
            .unwrap(),
        [ClaimOutcome::Claimed]
    );

    let wrong = format!("redis://:wrong@127.0.0.1:{}", server.port());
    let err = RedisStore::builder(wrong).connect().await.unwrap_err();
    assert!(matches!(err, StoreError::AuthFailed { .. }), "{err:?}");
    assert!(
        !format!("{err:?} {err}").contains("wrong@"),
        "the URL's password is not in the error"
    );
    let anonymous = format!("redis://127.0.0.1:{}", server.port());
    let err = RedisStore::builder(anonymous).connect().await.unwrap_err();
    assert!(
        matches!(err, StoreError::AuthFailed { .. }),
        "a client without the password is refused: {err:?}"
    );
}

#[tokio::test]
async fn a_flushed_script_cache_is_reloaded() {
    let server = local(RedisOptions::default());
    let store = RedisStore::builder(server.url()).connect().await.unwrap();
    let keys = fresh_keys(3);
    let token = OwnerToken::random();
    store.claim(&keys, token, LONG).await.unwrap();
    assert!(server
        .command(&["SCRIPT", "FLUSH"])
        .unwrap()
        .starts_with("+OK"));
    assert_eq!(
        store.commit(&keys, token, LONG).await.unwrap(),
        [CommitOutcome::Committed; 3]
    );
}

/// A record TTL (a multiple of 8 s, so 8 units of whole seconds) whose records, committed
/// now, carry a stamp of 70 to 120: a stamp a claim judging by no clock at all (unit 0) would
/// read dead. The unit is a minute or more, so the stamp stays for the test.
fn ttl_whose_stamp_reads_dead_at_unit_zero() -> Duration {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    (60u64..)
        .map(|unit_s| unit_s * 1000)
        // The stamp of a record committed now: the unit it stops being live in (8 on).
        .find(|unit_ms| (70..=120).contains(&((now_ms / unit_ms + 9) % 128)))
        .map(|unit_ms| Duration::from_millis(8 * unit_ms))
        .unwrap()
}

/// A CONSUMED record reads CONSUMED while the server's script cache is flushed again and
/// again: every commit that meets the empty cache marks the store's reading of the server's
/// clock stale, and the claims already under way on other tasks still judge by that reading.
/// (Before, they found no reading and judged by unit 0: a restart of Redis under load let
/// about one record in a thousand be processed twice, which the chaos run caught.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_read_consumed_while_the_script_cache_is_flushed() {
    let server = local(RedisOptions::default());
    let ttl = ttl_whose_stamp_reads_dead_at_unit_zero();
    let store = RedisStore::builder(server.url())
        .record_ttl(ttl)
        .connect()
        .await
        .unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(3);
    let flusher = {
        let url = server.url().to_owned();
        tokio::spawn(async move {
            let client = redis::Client::open(url).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            let mut flushes = 0u32;
            while std::time::Instant::now() < until {
                let _: () = redis::cmd("SCRIPT")
                    .arg("FLUSH")
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                flushes += 1;
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            flushes
        })
    };
    let mut consumers = Vec::new();
    for _ in 0..4 {
        let store = store.clone();
        consumers.push(tokio::spawn(async move {
            let (mut rounds, mut wrong) = (0u32, Vec::new());
            while std::time::Instant::now() < until {
                let keys = fresh_keys(1);
                let token = OwnerToken::random();
                assert_eq!(
                    store.claim(&keys, token, LONG).await.unwrap(),
                    [ClaimOutcome::Claimed]
                );
                match store.commit(&keys, token, ttl).await {
                    Ok(outcomes) => assert_eq!(outcomes, [CommitOutcome::Committed]),
                    // Flushed again between the reload and the retry: a typed error, and a
                    // record whose state is not known (not watched).
                    Err(StoreError::Backend { .. }) => continue,
                    Err(e) => panic!("{e:?}"),
                }
                let again = store
                    .claim(&keys, OwnerToken::random(), LONG)
                    .await
                    .unwrap();
                if again != [ClaimOutcome::Consumed] {
                    wrong.push(again[0]);
                }
                rounds += 1;
            }
            (rounds, wrong)
        }));
    }
    let flushes = flusher.await.unwrap();
    let mut rounds = 0;
    for consumer in consumers {
        let (n, wrong) = consumer.await.unwrap();
        assert!(
            wrong.is_empty(),
            "{} CONSUMED records read otherwise after their commits (first: {:?}) of {n}",
            wrong.len(),
            wrong.first()
        );
        rounds += n;
    }
    assert!(
        flushes > 100 && rounds > 100,
        "{flushes} flushes, {rounds} rounds"
    );
}

#[tokio::test]
async fn an_unreadable_record_is_a_typed_error() {
    let server = local(RedisOptions::default());
    let store = RedisStore::builder(server.url()).connect().await.unwrap();
    let keys = fresh_keys(1);
    let token = OwnerToken::random();
    store.claim(&keys, token, LONG).await.unwrap();
    let claim = store.claim_key(&keys[0]).unwrap();
    server.command(&["SET", &claim, "garbage"]).unwrap();
    let err = store
        .claim(&keys, OwnerToken::random(), LONG)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::CorruptRecord { .. }), "{err}");
    assert!(!err.is_retryable());
    assert!(
        store.inspect(&keys[0]).await.is_err(),
        "the operator's view says so too"
    );
}

#[tokio::test]
async fn a_stopped_server_fails_fast_and_a_restarted_one_is_used_again() {
    let mut server = local(RedisOptions {
        appendonly: true,
        ..Default::default()
    });
    let store = RedisStore::builder(server.url())
        .response_timeout(Duration::from_millis(500))
        .connect()
        .await
        .unwrap();
    let keys = fresh_keys(2);
    let token = OwnerToken::random();
    store.claim(&keys[..1], token, LONG).await.unwrap();
    store.commit(&keys[..1], token, LONG).await.unwrap();

    server.kill();
    let started = std::time::Instant::now();
    let err = store.claim(&keys[1..], token, LONG).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "failed after {:?}",
        started.elapsed()
    );

    server.restart().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let answer = loop {
        match store.claim(&keys, OwnerToken::random(), LONG).await {
            Ok(answer) => break answer,
            Err(e) if std::time::Instant::now() > deadline => panic!("no reconnect: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    // The committed record survived the restart (append-only file); the other key is new.
    assert_eq!(answer, [ClaimOutcome::Consumed, ClaimOutcome::Claimed]);
}

#[tokio::test]
async fn tls_with_auth_works_and_the_password_is_never_printed() {
    let server = local(RedisOptions {
        password: Some("tls-s3cret".into()),
        tls: true,
        ..Default::default()
    });
    assert!(server.url().starts_with("rediss://"), "served over TLS");
    let ca = server.tls_ca_pem().unwrap();
    let builder = RedisStore::builder(server.url()).tls_root_certificate(ca);
    assert!(
        !format!("{builder:?}").contains("tls-s3cret"),
        "Debug hides the URL"
    );
    let store = builder.connect().await.unwrap();
    let keys = fresh_keys(2);
    let token = OwnerToken::random();
    assert_eq!(
        store.claim(&keys, token, LONG).await.unwrap(),
        [ClaimOutcome::Claimed; 2]
    );
    assert_eq!(
        store.commit(&keys, token, LONG).await.unwrap(),
        [CommitOutcome::Committed; 2]
    );
    assert!(matches!(
        state(&store, &keys[0]).await,
        RecordState::Consumed { .. }
    ));

    // Without the CA, the self-signed chain is refused.
    let err = RedisStore::builder(server.url())
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::TlsFailed { .. }), "{err:?}");
    assert!(!format!("{err:?} {err}").contains("tls-s3cret"));
}

#[tokio::test]
async fn a_listener_batch_costs_two_round_trips_fresh_and_one_as_duplicates() {
    use rocketmq_dedup::testing::message;
    let server = local(RedisOptions::default());
    let store = RedisStore::builder(server.url()).connect().await.unwrap();
    let counter = store.clone();
    let consumer = |store: RedisStore| {
        rocketmq_dedup::DedupConcurrentListener::builder(rocketmq_dedup::handler_fn(
            |_: &rocketmq_model::common::message::message_ext::MessageExt| Ok(()),
        ))
        .namespace("group")
        .store(store)
        .build()
        .unwrap()
    };
    let listener = consumer(store.clone());
    let batch: Vec<_> = (0..32)
        .map(|i| message("T").uniq_key(&format!("k{i}")).build())
        .collect();
    let refs: Vec<_> = batch.iter().collect();
    listener.consume(&refs).await;
    // The commit is written after the ack (the default): wait for it to land.
    listener.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        counter.round_trips(),
        3,
        "the group's layout (read once per store), claim + commit for 32 fresh messages"
    );
    // The same consumer knows them: its near-cache answers.
    listener.consume(&refs).await;
    assert_eq!(
        counter.round_trips(),
        3,
        "no round trip for its own duplicates"
    );
    // Another consumer asks Redis once for the batch.
    let other = consumer(store);
    other.consume(&refs).await;
    assert_eq!(
        counter.round_trips(),
        5,
        "one claim for 32 duplicates, and the release of the claims it made on them (a \
         current-thread runtime has no blocking lane whose next pipeline would carry it)"
    );
    assert_eq!(
        other.stats().decisions(rocketmq_dedup::Decision::Duplicate),
        32
    );
}

/// A listener on Redis writes the record key an operator builds from the message's parts.
#[tokio::test]
async fn the_listener_writes_the_record_key_an_operator_builds() {
    use rocketmq_dedup::testing::message;
    let server = local(RedisOptions::default());
    let store = RedisStore::builder(server.url()).connect().await.unwrap();
    let listener = rocketmq_dedup::DedupConcurrentListener::builder(rocketmq_dedup::handler_fn(
        |_: &rocketmq_model::common::message::message_ext::MessageExt| Ok(()),
    ))
    .namespace("group")
    .store(store.clone())
    .build()
    .unwrap();
    listener
        .consume(&[&message("Orders").uniq_key("U-0").build()])
        .await;
    listener.shutdown(Duration::from_secs(5)).await;
    let of = |namespace, key| {
        RecordKey::new(KeyParts {
            namespace,
            topic: "Orders",
            key,
            ..KeyParts::default()
        })
    };
    let found = state(&store, &of("group", "U-0")).await;
    assert!(matches!(found, RecordState::Consumed { .. }), "{found:?}");
    assert_eq!(
        state(&store, &of("other", "U-0")).await,
        RecordState::Absent
    );
    assert_eq!(
        state(&store, &of("group", "U-1")).await,
        RecordState::Absent
    );
}

/// `n` keys of about 420 bytes, like the record keys of long topics, tags and namespaces.
fn long_keys(n: usize) -> Vec<RecordKey> {
    let run = fastrand::u64(..);
    let (namespace, topic, tag) = ("n".repeat(128), "t".repeat(128), "g".repeat(128));
    (0..n)
        .map(|i| {
            let key = format!("{run:x}-{i:04}");
            RecordKey::new(KeyParts {
                prefix: "dedup",
                namespace: &namespace,
                topic: &topic,
                tag: Some(&tag),
                key: &key,
            })
        })
        .collect()
}

/// Blocks the server for about `ms` milliseconds (a busy Lua script), so that what other
/// connections send meanwhile queues up behind it.
const BLOCK_SERVER: &str = "local s = redis.call('TIME') \
    repeat local n = redis.call('TIME') \
    until (n[1] - s[1]) * 1000000 + (n[2] - s[2]) > tonumber(ARGV[1]) * 1000 \
    return 1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emptied_script_cache_never_makes_a_batch_answer_twice() {
    let server = local(RedisOptions::default());
    let store = RedisStore::builder(server.url()).connect().await.unwrap();
    let blocker = RedisStore::builder(server.url()).connect().await.unwrap();
    let loader = RedisStore::builder(server.url()).connect().await.unwrap();
    let commit_script = RedisStore::script_source(rocketmq_dedup::StoreOperation::Commit).unwrap();
    let mut failed = Vec::new();
    for attempt in 0..20 {
        let keys = long_keys(3000);
        assert!(keys[0].as_str().len() > 400);
        let token = OwnerToken::random();
        let claims = store.claim(&keys, token, LONG).await.unwrap();
        assert!(claims.iter().all(|c| *c == ClaimOutcome::Claimed));
        // What a restart does to the script cache.
        server.command(&["SCRIPT", "FLUSH"]).unwrap();
        // The server is busy for 150 ms; meanwhile this commit's pipeline (1.3 MB) and another
        // consumer's load of the same script queue up. Once free, the server reads the
        // pipeline in 16 KiB pieces and the load in between: the first commands meet an empty
        // cache, the later ones a loaded one.
        let block = {
            let mut conn = blocker.connection();
            tokio::spawn(async move {
                let _: Result<i64, _> = redis::cmd("EVAL")
                    .arg(BLOCK_SERVER)
                    .arg(0)
                    .arg(150)
                    .query_async(&mut conn)
                    .await;
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let commit = {
            let (store, keys) = (store.clone(), keys.clone());
            tokio::spawn(async move { store.commit(&keys, token, LONG).await })
        };
        tokio::time::sleep(Duration::from_millis(30)).await;
        let mut conn = loader.connection();
        let _: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(commit_script)
            .query_async(&mut conn)
            .await
            .unwrap();
        let commits = commit.await.unwrap().unwrap();
        block.await.unwrap();
        let twice = commits
            .iter()
            .filter(|c| **c != CommitOutcome::Committed)
            .count();
        if twice > 0 {
            failed.push((attempt, twice));
        }
    }
    assert_eq!(
        failed,
        vec![],
        "(attempt, keys of 3000 answered as run twice)"
    );
}

/// The model-based check (`store::model`) while the server is paused past the response
/// timeout and SIGKILLed and restarted (append-only file, fsync always): every answer stays
/// one a correct store could give. A call that failed may have run; a paused server runs
/// what it received once it resumes, hence the grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_holds_through_pauses_and_a_restart() {
    use rocketmq_dedup::store::model::{check_store, ModelOptions};
    use std::sync::{Arc, Mutex};
    let server = Arc::new(Mutex::new(local(RedisOptions {
        appendonly: true,
        ..Default::default()
    })));
    let url = server.lock().unwrap().url().to_owned();
    let store = RedisStore::builder(url)
        .response_timeout(Duration::from_millis(150))
        .connect_timeout(Duration::from_millis(300))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .connect()
        .await
        .unwrap();
    let began = std::time::Instant::now();
    let chaos = {
        let server = server.clone();
        tokio::task::spawn_blocking(move || {
            let pause = |ms| {
                std::thread::sleep(Duration::from_millis(300));
                server.lock().unwrap().pause();
                std::thread::sleep(Duration::from_millis(ms));
                server.lock().unwrap().resume();
            };
            pause(400);
            std::thread::sleep(Duration::from_millis(300));
            let mut s = server.lock().unwrap();
            s.kill();
            s.restart().unwrap();
            drop(s);
            pause(300);
            began.elapsed()
        })
    };
    let options = ModelOptions {
        ops_per_worker: 1_000,
        failed_call_grace: Duration::from_millis(500),
        ..ModelOptions::from_env()
    };
    let report = check_store(Arc::new(store), &options).await;
    let chaos_took = chaos.await.unwrap();
    println!("{report}");
    assert!(
        report.duration > chaos_took,
        "the workload outlasted the faults: {report}"
    );
    assert!(report.failed_calls > 0, "the faults were felt: {report}");
    assert!(report.passed(), "{report}");
}

#[tokio::test]
async fn connect_failures_say_what_went_wrong() {
    let port = rocketmq_dedup_testkit::free_port().unwrap();
    let cases = [
        (format!("redis://127.0.0.1:{port}"), "unreachable"),
        (format!("redis+cluster://127.0.0.1:{port}"), "unreachable"),
        (
            "redis+sentinel://:pw@127.0.0.1:1/mymaster/x".to_owned(),
            "bad_url",
        ),
        ("http://127.0.0.1:6379".to_owned(), "bad_url"),
        ("127.0.0.1:6379".to_owned(), "bad_url"),
    ];
    for (url, kind) in cases {
        let err = RedisStore::builder(&url)
            .connect_timeout(Duration::from_millis(500))
            .connect()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), kind, "{url}: {err:?}");
        assert!(!err.to_string().contains(":pw@"), "{url}: {err}");
    }
    let Err(err) = rocketmq_dedup::connect("ftp://x").await else {
        panic!("ftp:// is no store URL");
    };
    assert!(err.to_string().contains("redis+cluster://"), "{err}");
}

/// A batch of 32 fresh keys on a 3-master Cluster: one pipeline per master, not per key, and
/// every command answered (keys spread over all three masters).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_batches_cost_one_round_trip_per_master() {
    let cluster = rocketmq_dedup_testkit::RedisCluster::start_local(3, 0).unwrap();
    let store = RedisStore::builder(cluster.url()).connect().await.unwrap();
    let keys = fresh_keys(32);
    let token = OwnerToken::random();
    // The group's layout is read once, by its first call.
    store.claim(&fresh_keys(1), token, LONG).await.unwrap();
    let before = store.round_trips();
    let claims = store.claim(&keys, token, LONG).await.unwrap();
    assert_eq!(claims, vec![ClaimOutcome::Claimed; 32]);
    assert_eq!(store.round_trips() - before, 3, "one pipeline per master");
    let before = store.round_trips();
    let commits = store.commit(&keys, token, LONG).await.unwrap();
    assert_eq!(commits, vec![CommitOutcome::Committed; 32]);
    assert_eq!(store.round_trips() - before, 3);
    let masters: std::collections::HashSet<u16> = keys
        .iter()
        .map(|k| cluster.master_of(&store.claim_key(k).unwrap()).unwrap())
        .collect();
    assert_eq!(masters.len(), 3, "the batch touched every master");
    let again = store
        .claim(&keys, OwnerToken::random(), LONG)
        .await
        .unwrap();
    assert_eq!(again, vec![ClaimOutcome::Consumed; 32]);
}

/// `CLUSTER SETSLOT … NODE` moves a slot to another master behind the store's back: the
/// commands sent to the old owner answer MOVED (they did not run) and are followed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_follows_a_slot_that_moved() {
    let cluster = rocketmq_dedup_testkit::RedisCluster::start_local(2, 0).unwrap();
    let store = RedisStore::builder(cluster.url()).connect().await.unwrap();
    let keys = fresh_keys(16);
    // Learn the group's layout first (its key may be in the slot about to move).
    store
        .claim(&fresh_keys(1), OwnerToken::random(), LONG)
        .await
        .unwrap();
    let claim_key = store.claim_key(&keys[0]).unwrap();
    let key = claim_key.as_str();
    let from = cluster.master_of(key).unwrap();
    let to = *cluster
        .running_ports()
        .iter()
        .find(|p| **p != from)
        .unwrap();
    let slot = cluster.command(from, &["CLUSTER", "KEYSLOT", key]).unwrap();
    let slot = slot.trim().trim_start_matches(':').to_owned();
    let to_id = cluster.command(to, &["CLUSTER", "MYID"]).unwrap();
    let to_id = to_id.lines().nth(1).unwrap().to_owned();
    let from_id = cluster.command(from, &["CLUSTER", "MYID"]).unwrap();
    let from_id = from_id.lines().nth(1).unwrap().to_owned();
    // The documented migration of an (empty) slot: importing, migrating, then the owner.
    for (port, args) in [
        (to, ["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]),
        (from, ["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]),
        (to, ["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]),
        (from, ["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]),
    ] {
        let answer = cluster.command(port, &args).unwrap();
        assert!(answer.starts_with("+OK"), "{answer}");
    }
    let token = OwnerToken::random();
    let claims = store.claim(&keys, token, LONG).await.unwrap();
    assert_eq!(claims, vec![ClaimOutcome::Claimed; 16]);
    assert_eq!(cluster.master_of(key).unwrap(), to);
    assert_eq!(
        cluster.command(to, &["EXISTS", key]).unwrap().trim(),
        ":1",
        "the moved key's claim is on its new master"
    );
}

/// `wait_for_replicas`: commits wait for the replica; asking for more replicas than exist
/// fails the commit with a clear error (the record is CONSUMED on the master meanwhile).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_replicas_makes_commits_wait_and_fails_when_too_few_acknowledge() {
    let deployment = rocketmq_dedup_testkit::RedisSentinel::start_local().unwrap();
    let keys = fresh_keys(4);
    let token = OwnerToken::random();
    let one = RedisStore::builder(deployment.url())
        .wait_for_replicas(1, Duration::from_millis(500))
        .connect()
        .await
        .unwrap();
    one.claim(&keys, token, LONG).await.unwrap();
    assert_eq!(
        one.commit(&keys, token, LONG).await.unwrap(),
        vec![CommitOutcome::Committed; 4]
    );
    let two = RedisStore::builder(deployment.url())
        .wait_for_replicas(2, Duration::from_millis(100))
        .connect()
        .await
        .unwrap();
    let more = fresh_keys(2);
    two.claim(&more, token, LONG).await.unwrap();
    let err = two.commit(&more, token, LONG).await.unwrap_err();
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(chain.contains("1 of 2"), "{chain}");
    // The commit ran on the master; only its durability on two replicas is missing.
    assert!(matches!(
        two.inspect(&more[0]).await.unwrap(),
        RecordState::Consumed { .. }
    ));
}

/// The client calls the listener on threads of its own. Calls made there use the store's
/// blocking connections (one more client on the server, and the same round trips); a server
/// that goes away fails them fast, and after a restart they work again.
#[test]
fn consume_threads_use_blocking_connections_and_survive_a_restart() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use rocketmq_client_rust::{
        ConsumeConcurrentlyContext, ConsumeConcurrentlyStatus, MessageListenerConcurrently,
    };
    use rocketmq_dedup::testing::message;
    use rocketmq_dedup::DedupConcurrentListener;
    use rocketmq_model::common::message::message_ext::MessageExt;
    use rocketmq_model::common::message::message_queue::MessageQueue;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut server = local(RedisOptions {
        appendonly: true,
        ..Default::default()
    });
    let runs = Arc::new(AtomicUsize::new(0));
    let (store, listener) = rt.block_on(async {
        let store = RedisStore::builder(server.url())
            .response_timeout(Duration::from_millis(500))
            .connect()
            .await
            .unwrap();
        let counted = Arc::clone(&runs);
        let listener =
            DedupConcurrentListener::builder(rocketmq_dedup::handler_fn(move |_: &MessageExt| {
                counted.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }))
            .namespace("group")
            .ack_before_commit(false)
            .store(store.clone())
            .build()
            .unwrap();
        (store, listener)
    });
    // As the client does: one long-lived consume thread, here a blocking-lane thread of the
    // runtime that takes every message. (A `spawn_blocking` per message may land on a fresh
    // thread: the pool's last thread is not always idle again when the next task comes.)
    type Consumed = (ConsumeConcurrentlyStatus, Duration);
    let (to_consume, messages) =
        std::sync::mpsc::channel::<(String, std::sync::mpsc::Sender<Consumed>)>();
    let consume_thread = {
        let l = listener.clone();
        rt.spawn_blocking(move || {
            for (id, reply) in messages {
                let msg = message("T").uniq_key(&id).build();
                let started = std::time::Instant::now();
                let context = ConsumeConcurrentlyContext::new(MessageQueue::default());
                let status = l.consume_message(&[&msg], &context).unwrap();
                let _ = reply.send((status, started.elapsed()));
            }
        })
    };
    let consume = |id: &str| {
        let (reply, answer) = std::sync::mpsc::channel();
        to_consume.send((id.to_owned(), reply)).unwrap();
        answer.recv().unwrap()
    };
    let clients = |server: &RedisServer| {
        server
            .command(&["CLIENT", "LIST"])
            .unwrap()
            .matches("id=")
            .count()
    };

    let before = (clients(&server), store.round_trips());
    assert_eq!(consume("a").0, ConsumeConcurrentlyStatus::ConsumeSuccess);
    assert_eq!(
        (clients(&server), store.round_trips()),
        (before.0 + 1, before.1 + 3),
        "a blocking connection was opened for the consume thread; the group's layout (read once), claim + commit"
    );
    assert_eq!(consume("b").0, ConsumeConcurrentlyStatus::ConsumeSuccess);
    assert_eq!(clients(&server), before.0 + 1, "and used again");

    server.kill();
    for id in ["c", "d"] {
        let (status, took) = consume(id);
        assert_eq!(status, ConsumeConcurrentlyStatus::ReconsumeLater, "{id}");
        assert!(took < Duration::from_secs(5), "{id} failed after {took:?}");
    }

    server.restart().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while consume("c").0 != ConsumeConcurrentlyStatus::ConsumeSuccess {
        assert!(std::time::Instant::now() < deadline, "no reconnect");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A copy of "a", committed before the kill, does not run.
    assert_eq!(consume("a").0, ConsumeConcurrentlyStatus::ConsumeSuccess);
    assert_eq!(runs.load(Ordering::SeqCst), 3, "a, b and c ran once each");
    drop(to_consume);
    rt.block_on(consume_thread).unwrap();
    rt.block_on(listener.shutdown(Duration::from_secs(5)));
}

/// A detached commit on a thread that may block waits in that thread's slot and goes in front
/// of its next pipeline: the claim that carries it costs the only round trip, and sees the key
/// CONSUMED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detached_commit_rides_its_threads_next_claim() {
    let server = local(RedisOptions::default());
    let (store, keys, first) = one_claim_lingering(&server, Duration::from_secs(30)).await;
    let (a, b) = (keys[0].clone(), fresh_keys(1).remove(0));
    let (committed, answer) = detached(&store, &keys, first);
    assert!(committed.is_none(), "carried, not given back");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let found = state(&store, &a).await;
    assert!(matches!(found, RecordState::Consuming { .. }), "{found:?}");

    let before = store.round_trips();
    assert_eq!(
        store
            .claim(&[b, a.clone()], OwnerToken::random(), LONG)
            .await
            .unwrap(),
        [ClaimOutcome::Claimed, ClaimOutcome::Consumed],
        "the carried commit ran before the claim of the same key"
    );
    assert_eq!(store.round_trips() - before, 1, "one pipeline carried both");
    let committed = tokio::time::timeout(Duration::from_secs(5), answer)
        .await
        .expect("the claim's answer finished the commit")
        .unwrap();
    assert_eq!(committed.unwrap(), [CommitOutcome::Committed]);
    assert!(matches!(
        state(&store, &a).await,
        RecordState::Consumed { .. }
    ));
}

/// Only the thread that left a commit carries it: another thread's claim does not (no queue
/// is shared between threads), and the sweeper sends it after the linger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_threads_claim_does_not_carry_a_commit() {
    let server = local(RedisOptions::default());
    let linger = Duration::from_millis(500);
    let (store, keys, token) = one_claim_lingering(&server, linger).await;
    let started = std::time::Instant::now();
    let (_, answer) = detached(&store, &keys, token);
    let (other, runtime) = (store.clone(), tokio::runtime::Handle::current());
    let claimed = std::thread::spawn(move || {
        runtime.block_on(other.claim(&fresh_keys(1), OwnerToken::random(), LONG))
    })
    .join()
    .unwrap();
    assert_eq!(claimed.unwrap(), [ClaimOutcome::Claimed]);
    let found = state(&store, &keys[0]).await;
    assert!(matches!(found, RecordState::Consuming { .. }), "{found:?}");
    let committed = answer.await.unwrap().unwrap();
    assert_eq!(committed, [CommitOutcome::Committed]);
    assert!(started.elapsed() >= linger, "sent by the sweeper");
}

/// With no call of its thread to carry it, a detached commit leaves by itself after the linger
/// (the store's sweeper sends it); with a zero linger it is given back and sent at once. A
/// commit awaited through `commit` never waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_nothing_carries_leaves_after_the_linger() {
    let server = local(RedisOptions::default());
    for linger in [Duration::from_millis(300), Duration::ZERO] {
        let (store, keys, token) = one_claim_lingering(&server, linger).await;
        let (before, started) = (store.round_trips(), std::time::Instant::now());
        assert_eq!(
            commit_detached_awaited(&store, &keys, token, LONG)
                .await
                .unwrap(),
            [CommitOutcome::Committed]
        );
        assert!(
            started.elapsed() >= linger,
            "{linger:?}: waited for a carrier"
        );
        assert_eq!(
            store.round_trips() - before,
            1,
            "{linger:?}: its own pipeline"
        );
        let found = state(&store, &keys[0]).await;
        assert!(matches!(found, RecordState::Consumed { .. }), "{linger:?}");
    }
    let linger = Duration::from_secs(30);
    let (store, keys, token) = one_claim_lingering(&server, linger).await;
    let started = std::time::Instant::now();
    assert_eq!(
        store.commit(&keys, token, LONG).await.unwrap(),
        [CommitOutcome::Committed]
    );
    assert!(
        started.elapsed() < linger,
        "an awaited commit leaves at once"
    );
}

/// A detached commit carried by a pipeline that fails gets the failure at once (the listener
/// retries it), not after its linger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_carried_by_a_failed_pipeline_fails_with_it() {
    let mut server = local(RedisOptions::default());
    let (store, keys, token) = one_claim_lingering(&server, Duration::from_secs(30)).await;
    let (_, answer) = detached(&store, &keys, token);
    server.kill();
    assert!(store.claim(&fresh_keys(1), token, LONG).await.is_err());
    let carried = tokio::time::timeout(Duration::from_secs(10), answer)
        .await
        .expect("the commit got the carrier's failure")
        .unwrap();
    assert!(
        matches!(
            carried,
            Err(StoreError::Backend { .. }) | Err(StoreError::Timeout { .. })
        ),
        "{carried:?}"
    );
}

/// A commit left by a thread that ends before anything carried it is sent anyway: it is
/// written, and its outcome still comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_left_by_a_thread_that_ends_is_sent() {
    let server = local(RedisOptions::default());
    let (store, keys, token) = one_claim_lingering(&server, Duration::from_secs(30)).await;
    let runtime = tokio::runtime::Handle::current();
    let (carried, answer) = {
        let (store, keys) = (store.clone(), keys.clone());
        std::thread::spawn(move || {
            let _entered = runtime.enter();
            let (given_back, answer) = detached(&store, &keys, token);
            (given_back.is_none(), answer)
        })
        .join()
        .unwrap()
    };
    assert!(carried, "the thread's slot took it");
    let committed = tokio::time::timeout(Duration::from_secs(10), answer)
        .await
        .expect("sent when its thread ended")
        .unwrap();
    assert_eq!(committed.unwrap(), [CommitOutcome::Committed]);
    assert!(matches!(
        state(&store, &keys[0]).await,
        RecordState::Consumed { .. }
    ));
}

/// Hands `store` the detached commit of `keys` for `token`: what the store gave back (`None`:
/// it took it), and where its outcome comes.
fn detached(
    store: &RedisStore,
    keys: &[RecordKey],
    token: OwnerToken,
) -> (
    Option<DetachedCommit>,
    tokio::sync::oneshot::Receiver<Result<Vec<CommitOutcome>, StoreError>>,
) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let commit = DetachedCommit::new(keys.to_vec(), token, LONG, move |_, result| {
        let _ = tx.send(result);
    });
    (store.commit_detached(commit), rx)
}

/// A store whose background commits linger `linger`, and a fresh key it claimed for a token.
async fn one_claim_lingering(
    server: &RedisServer,
    linger: Duration,
) -> (RedisStore, Vec<RecordKey>, OwnerToken) {
    let store = RedisStore::builder(server.url())
        .commit_linger(linger)
        .connect()
        .await
        .unwrap();
    let (keys, token) = (fresh_keys(1), OwnerToken::random());
    store.claim(&keys, token, LONG).await.unwrap();
    (store, keys, token)
}

/// After a restart, each connection fails at most the call it had in flight, and the store
/// answers correctly within a second: two consume threads (blocking connections) and a task on
/// the multiplexed connection call the store all the time while the server is killed, down for
/// a second, and started again; two more consume threads are idle while it is down (their
/// connections died with the server, and nothing of theirs was in flight): they see no
/// failure at all.
#[test]
fn the_store_is_back_within_a_second_of_a_restart() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut server = local(RedisOptions {
        appendonly: true,
        ..Default::default()
    });
    let store = rt.block_on(async {
        RedisStore::builder(server.url())
            .response_timeout(Duration::from_millis(500))
            .connect_timeout(Duration::from_millis(300))
            .connect()
            .await
            .unwrap()
    });
    let stop = Arc::new(AtomicBool::new(false));
    // The idle threads wait while this is set.
    let quiet = Arc::new(AtomicBool::new(false));
    // (caller, when the call started, whether it failed) for every call.
    let calls: Arc<Mutex<Vec<(usize, Instant, bool)>>> = Arc::default();
    let mut threads = Vec::new();
    for caller in 0..4 {
        let idle_when_quiet = caller >= 2;
        let (store, stop, quiet, calls, handle) = (
            store.clone(),
            stop.clone(),
            quiet.clone(),
            calls.clone(),
            rt.handle().clone(),
        );
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if idle_when_quiet && quiet.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                let keys = fresh_keys(1);
                let token = OwnerToken::random();
                let started = Instant::now();
                let ok = handle.block_on(async {
                    store.claim(&keys, token, LONG).await.is_ok()
                        && store.commit(&keys, token, LONG).await.is_ok()
                });
                calls.lock().unwrap().push((caller, started, !ok));
                std::thread::sleep(Duration::from_millis(5));
            }
        }));
    }
    let multiplexed = {
        let (store, stop, calls) = (store.clone(), stop.clone(), calls.clone());
        rt.spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let started = Instant::now();
                let ok = store
                    .renew(&fresh_keys(1), OwnerToken::random(), LONG)
                    .await
                    .is_ok();
                calls.lock().unwrap().push((4, started, !ok));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    quiet.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(100));
    server.kill();
    std::thread::sleep(Duration::from_secs(1));
    server.restart().unwrap();
    let up = Instant::now();
    std::thread::sleep(Duration::from_millis(200));
    quiet.store(false, Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::SeqCst);
    for thread in threads {
        thread.join().unwrap();
    }
    rt.block_on(multiplexed).unwrap();
    let calls = calls.lock().unwrap();
    for caller in 0..5 {
        let mine: Vec<&(usize, Instant, bool)> = calls.iter().filter(|c| c.0 == caller).collect();
        let failed_after_up: Vec<u128> = mine
            .iter()
            .filter(|c| c.2 && c.1 >= up)
            .map(|c| c.1.duration_since(up).as_millis())
            .collect();
        let allowed = match caller {
            2 | 3 => 0,
            _ => 1,
        };
        assert!(
            failed_after_up.len() <= allowed && failed_after_up.iter().all(|&ms| ms < 1_000),
            "caller {caller}: calls that failed after the server was up, at (ms): {failed_after_up:?}"
        );
        let answered_late = mine
            .iter()
            .filter(|c| !c.2 && c.1 >= up + Duration::from_secs(1))
            .count();
        assert!(
            answered_late > 10,
            "caller {caller}: {answered_late} calls answered"
        );
    }
}
