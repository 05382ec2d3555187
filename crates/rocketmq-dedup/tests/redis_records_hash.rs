//! The Redis store's records hash at scale: one clock, bounded work, nothing that one consumer,
//! one value or one operator slip can break. One test per finding of the review that asked for
//! it (consumers minutes off, an unbounded sweep, a hash that never shrank back, a value that
//! is not a stamp, a lost layout key, sweeps ping-ponging between clocks, an operator's view),
//! each on one redis-server, one valkey-server, a Redis Cluster and a Sentinel deployment.
//!
//! Consumers whose clocks are off run in processes of their own under libfaketime
//! (`support/skewed.rs`); every store here keeps its group in one shard, so that every
//! consumer's commits land in the same records hash.

#[path = "support/deployments.rs"]
#[macro_use]
mod deployments;
#[path = "support/log_capture.rs"]
mod log_capture;
#[path = "support/skewed.rs"]
mod skewed;

use std::time::{Duration, Instant};

use deployments::Servers;
use log_capture::Capture;
use redis::aio::ConnectionLike;
use rocketmq_dedup::record_key::{KeyParts, RecordKey, RecordScope};
use rocketmq_dedup::store::admin::{RecordAdmin, RecordState};
use rocketmq_dedup::store::{ClaimOutcome, CommitOutcome, DedupStore, OwnerToken, RedisStore};
use rocketmq_dedup::testing::RedisStoreProbe;
use skewed::{Role, SkewedConsumer};

/// The record TTL of the skew tests: 250 ms units.
const TTL: Duration = Duration::from_secs(2);
const UNIT: Duration = Duration::from_millis(250);
/// How far the test's clock and the server's may disagree about an instant (one machine).
const MARGIN: Duration = Duration::from_millis(40);
/// A processing TTL longer than any test.
const LONG: Duration = Duration::from_secs(600);

/// A store of `record_ttl` whose groups have one shard.
async fn one_shard_store(servers: &Servers, record_ttl: Duration) -> RedisStore {
    RedisStore::builder(servers.url())
        .record_ttl(record_ttl)
        .expected_rate(0)
        .connect()
        .await
        .unwrap()
}

/// `name`'s records of the skewed consumers' group.
fn records(name: &str, n: usize) -> Vec<RecordKey> {
    (0..n).map(|i| skewed::record(name, i)).collect()
}

/// The records hash of a one-shard group (`<prefix>:<namespace>:<topic>:<tag>:`, the tag
/// empty here): `<group>{0}:r`.
fn records_hash(group: &str) -> String {
    format!("{group}{{0}}:r")
}

/// The skewed consumers' records hash.
fn skewed_hash() -> String {
    records_hash(&format!("skew:group:{}::", skewed::TOPIC))
}

/// Sends `cmd` through the store's connection (routed by key on a Cluster, to the master
/// through Sentinel).
async fn raw<T: redis::FromRedisValue>(store: &RedisStore, cmd: &mut redis::Cmd) -> T {
    let mut conn = store.connection();
    let value = conn.req_packed_command(cmd).await.unwrap();
    redis::from_redis_value(value).unwrap()
}

/// Claims and commits `keys` with a fresh token; answers between which instants the commit
/// happened.
async fn commit(store: &RedisStore, keys: &[RecordKey], ttl: Duration) -> (Instant, Instant) {
    let token = OwnerToken::random();
    let claims = store.claim(keys, token, LONG).await.unwrap();
    assert!(
        claims.iter().all(|c| *c == ClaimOutcome::Claimed),
        "{claims:?}"
    );
    let lo = Instant::now();
    let commits = store.commit(keys, token, ttl).await.unwrap();
    let hi = Instant::now();
    assert!(
        commits.iter().all(|c| *c == CommitOutcome::Committed),
        "{commits:?}"
    );
    (lo, hi)
}

/// Records committed between two instants, to watch.
struct Watched {
    who: String,
    keys: Vec<RecordKey>,
    lo: Instant,
    hi: Instant,
}

/// Claims every watched record every 50 ms for `span` (releasing what it claims): a record
/// must read CONSUMED until its TTL has passed (counted from the earliest its commit can have
/// run) and claimable once its TTL and a unit have (from the latest). With `hash`, that records
/// hash must also live at least as long as the records that must still live. Answers what
/// went wrong.
async fn watch(
    store: &RedisStore,
    watched: &[Watched],
    span: Duration,
    hash: Option<&str>,
) -> Vec<String> {
    let began = Instant::now();
    let mut wrong = Vec::new();
    let mut rounds = 0;
    while began.elapsed() < span {
        let token = OwnerToken::random();
        for set in watched {
            let asked = Instant::now();
            let answers = store.claim(&set.keys, token, LONG).await.unwrap();
            let answered = Instant::now();
            let must_live = answered + MARGIN < set.lo + TTL;
            let must_be_dead = asked > set.hi + TTL + UNIT + MARGIN;
            let age = asked.duration_since(set.lo).as_millis();
            for answer in &answers {
                match answer {
                    ClaimOutcome::Claimed if must_live => {
                        wrong.push(format!("{}: a live record lost at {age} ms", set.who))
                    }
                    ClaimOutcome::Consumed if must_be_dead => {
                        wrong.push(format!("{}: a dead record read live at {age} ms", set.who))
                    }
                    ClaimOutcome::InFlight => {
                        wrong.push(format!("{}: read as in flight at {age} ms", set.who))
                    }
                    _ => {}
                }
            }
            if let (Some(hash), true) = (hash, must_live) {
                let left: i64 = raw(store, redis::cmd("PTTL").arg(hash)).await;
                let needed = (set.lo + TTL).saturating_duration_since(Instant::now());
                if left + (MARGIN.as_millis() as i64) < needed.as_millis() as i64 {
                    wrong.push(format!(
                        "{}: the hash expires in {left} ms, its records live {needed:?} more",
                        set.who
                    ));
                }
            }
            let claimed: Vec<RecordKey> = set
                .keys
                .iter()
                .zip(&answers)
                .filter(|(_, a)| **a == ClaimOutcome::Claimed)
                .map(|(k, _)| k.clone())
                .collect();
            if !claimed.is_empty() {
                store.release(&claimed, token).await.unwrap();
            }
        }
        rounds += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(rounds > 10, "the watch ran {rounds} rounds");
    wrong.dedup();
    wrong
}

/// Skewed committers in processes of their own (started at once), each committed its own
/// records.
fn committers(servers: &Servers, offsets_ms: &[i64], own: usize) -> Vec<(SkewedConsumer, Watched)> {
    let lo = Instant::now();
    let started: Vec<SkewedConsumer> = offsets_ms
        .iter()
        .map(|&offset| SkewedConsumer::spawn(servers.url(), offset, TTL, own, Role::Committer))
        .collect();
    started
        .into_iter()
        .map(|mut consumer| {
            let measured = consumer.measured_offset_ms();
            assert!(
                (measured - consumer.offset_ms).abs() < 1_000,
                "faketime put the consumer {measured} ms off, not {}",
                consumer.offset_ms
            );
            consumer.wait_for("COMMITTED");
            let watched = Watched {
                who: consumer.name.clone(),
                keys: consumer.records(own),
                lo,
                hi: Instant::now(),
            };
            (consumer, watched)
        })
        .collect()
}

/// What `committers` watch, beside `first`.
fn watched_with(first: Watched, committers: &[(SkewedConsumer, Watched)]) -> Vec<Watched> {
    let mut watched = vec![first];
    watched.extend(committers.iter().map(|(_, w)| Watched {
        who: w.who.clone(),
        keys: w.keys.clone(),
        lo: w.lo,
        hi: w.hi,
    }));
    watched
}

/// Commits 20 records of an accurate consumer (this process) into the skewed consumers'
/// records hash; answers them, and what each of `others` committed, to watch.
async fn accurate_beside(store: &RedisStore, others: &[(SkewedConsumer, Watched)]) -> Vec<Watched> {
    let keys = records("accurate", 20);
    let (lo, hi) = commit(store, &keys, TTL).await;
    let first = Watched {
        who: "accurate".into(),
        keys,
        lo,
        hi,
    };
    watched_with(first, others)
}

/// Stops the committers; each must have run without a failure.
fn stop(committers: Vec<(SkewedConsumer, Watched)>) {
    for (consumer, _) in committers {
        let name = consumer.name.clone();
        let (ok, rest) = consumer.finish();
        assert!(ok, "consumer {name} failed: {rest}");
    }
}

/// Finding 1: a committer whose clock is behind (30 s, 80 s: more than the TTL and a unit)
/// set the records hash's expiry from its clock, read by Redis's: the hash (and a neighbour's
/// live records) went at once. Now the expiry is the server's, relative, and only ever moved
/// later: an accurate consumer's records live their TTL, and the hash lives as long as they do.
async fn a_committer_behind_shortens_no_records_life(servers: Servers) {
    let store = one_shard_store(&servers, TTL).await;
    let behind = committers(&servers, &[-30_000, -80_000], 3);
    let watched = accurate_beside(&store, &behind).await;
    let wrong = watch(&store, &watched, TTL + UNIT * 3, Some(&skewed_hash())).await;
    assert_eq!(wrong, Vec::<String>::new());
    stop(behind);
}

/// Finding 2: a consumer 40 s ahead swept the hash by its clock and deleted records an
/// accurate consumer still saw live for 15–38 s. Now the sweep's "now" is the server's.
async fn a_committer_ahead_sweeps_away_no_live_record(servers: Servers) {
    let store = one_shard_store(&servers, TTL).await;
    // It commits (and so sweeps) every 20 ms while the records live.
    let ahead = committers(&servers, &[40_000], 3);
    let watched = accurate_beside(&store, &ahead).await;
    let wrong = watch(&store, &watched, TTL + UNIT * 3, None).await;
    assert_eq!(wrong, Vec::<String>::new());
    stop(ahead);
}

/// Finding 3, and the skew check: consumers at −10 min, −80 s, −1 unit, +1 unit, +40 s and
/// +10 min around one accurate consumer, all committing into one records hash, for as long as
/// it takes a dead record's stamp to come round (64 units after it died): 0 live records lost
/// and 0 dead records read live, of the accurate consumer and of each skewed one.
async fn skewed_consumers_lose_no_live_record_and_revive_no_dead_one(servers: Servers) {
    let store = one_shard_store(&servers, TTL).await;
    let unit = UNIT.as_millis() as i64;
    let skewed = committers(
        &servers,
        &[-600_000, -80_000, -unit, unit, 40_000, 600_000],
        5,
    );
    let watched = accurate_beside(&store, &skewed).await;
    // The stamps come round 64 units after a record died: watch until then and a little more.
    let span = TTL + UNIT * 66;
    let wrong = watch(&store, &watched, span, Some(&skewed_hash())).await;
    assert_eq!(wrong, Vec::<String>::new());
    stop(skewed);
}

/// The model-based check through the store's public API, with commits into the records hash
/// (2 s record TTL, 250 ms units), while two more model checks run on the same group in
/// processes 80 s behind and 40 s ahead: every answer of each is one a correct store gives.
async fn the_model_holds_beside_skewed_stores(servers: Servers) {
    use rocketmq_dedup::store::model::{check_store, ModelOptions};
    let skewed: Vec<SkewedConsumer> = [-80_000, 40_000]
        .into_iter()
        .map(|offset| SkewedConsumer::spawn(servers.url(), offset, TTL, 0, Role::Model))
        .collect();
    let store = RedisStore::builder(servers.url())
        .record_ttl(TTL)
        .expected_rate(0)
        .connect()
        .await
        .unwrap();
    let options = ModelOptions {
        // Many keys and few workers: under a loaded machine calls stretch, and fewer
        // overlapping calls per key keep the linearizability search small.
        workers: 8,
        keys: 24,
        ops_per_worker: 1_500,
        record_ttl: Some(TTL),
        record_ttl_slack: UNIT + skewed::STAMPED_LATE,
        claims_may_linger: true,
        ..ModelOptions::from_env()
    };
    let report = check_store(std::sync::Arc::new(store), &options).await;
    println!("{report}");
    assert!(report.passed(), "{report}");
    for consumer in skewed {
        let (ok, rest) = consumer.finish();
        assert!(ok, "a skewed model check failed: {rest}");
        assert!(rest.contains("0 keys in violation"), "{rest}");
    }
}

/// Builds, in one script, a records hash of `fields` dead records (stamps 5 units in the past)
/// whose sweep state says a pass is due (since 9 units ago), in `group`; answers the hash's
/// name.
async fn dead_hash(store: &RedisStore, group: &str, fields: u64) -> String {
    let hash = records_hash(group);
    let build = r"
local t = redis.call('TIME')
local unit = math.floor((tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)) / 250)
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], '', '250,1', '~', unit - 9)
local stamp = (unit - 5) % 128
local batch = {}
for i = 1, tonumber(ARGV[1]) do
  batch[#batch + 1] = string.format('%012d', i)
  batch[#batch + 1] = stamp
  if #batch == 2000 then
    redis.call('HSET', KEYS[1], unpack(batch))
    batch = {}
  end
end
if #batch > 0 then redis.call('HSET', KEYS[1], unpack(batch)) end
redis.call('PEXPIRE', KEYS[1], 600000)
return redis.call('HLEN', KEYS[1])
";
    let len: u64 = raw(
        store,
        redis::cmd("EVAL").arg(build).arg(1).arg(&hash).arg(fields),
    )
    .await;
    assert_eq!(len, fields + 2);
    hash
}

fn contract_keys(n: usize) -> Vec<RecordKey> {
    (0..n)
        .map(|_| {
            RecordKey::new(KeyParts {
                prefix: "bounded",
                namespace: "group",
                topic: "Topic",
                tag: None,
                key: &format!("{:x}", fastrand::u64(..)),
            })
        })
        .collect()
}

/// Finding 4: the sweep read and deleted a whole hash in one script (5.3 s for 10^6 fields,
/// other clients got BUSY). Now a commit takes one `HSCAN` step: against a hash of 100 000
/// dead records, one commit deletes about a hundred of them, and the next commits go on from
/// where it stopped until the pass is done.
async fn a_sweep_step_is_bounded_whatever_the_hash_size(servers: Servers) {
    let store = one_shard_store(&servers, TTL).await;
    let hash = dead_hash(&store, "bounded:group:Topic::", 100_000).await;
    let hlen = |store: &RedisStore| {
        let store = store.clone();
        let hash = hash.clone();
        async move { raw::<u64>(&store, redis::cmd("HLEN").arg(&hash)).await }
    };
    commit(&store, &contract_keys(1), TTL).await;
    let after_one = hlen(&store).await;
    let deleted = 100_002 + 1 - after_one;
    assert!(
        (1..=300).contains(&deleted),
        "one commit deleted {deleted} of 100 000 dead records"
    );
    // The pass goes on commit by commit (a commit of 16 keys takes 16 steps) and ends.
    let mut commits = 1;
    while hlen(&store).await > 2_000 {
        commit(&store, &contract_keys(16), TTL).await;
        commits += 16;
        assert!(commits < 10_000, "the sweep made no progress");
    }
    // Each step deleted about a hundred.
    assert!(commits > 500, "{commits} commits deleted 98 000 records");
}

/// Finding 5: a hash that became a hashtable in a burst (600 records, over the listpack's 512)
/// stayed one after its records died (3.8 times the memory of a listpack). Now the sweep pass
/// that leaves it with few records rewrites it: it is a listpack again, in a few units.
async fn a_hash_that_became_a_hashtable_returns_to_a_listpack(servers: Servers) {
    let store = one_shard_store(&servers, TTL).await;
    let hash = records_hash("bounded:group:Topic::");
    commit(&store, &contract_keys(600), TTL).await;
    let encoding = |store: &RedisStore| {
        let (store, hash) = (store.clone(), hash.clone());
        async move { raw::<String>(&store, redis::cmd("OBJECT").arg("ENCODING").arg(&hash)).await }
    };
    assert_eq!(encoding(&store).await, "hashtable");
    let bytes_as_hashtable: u64 = raw(&store, redis::cmd("MEMORY").arg("USAGE").arg(&hash)).await;
    // The operator sees it.
    let scope = RecordScope {
        prefix: "bounded",
        namespace: "group",
        topic: Some("Topic"),
        tag: None,
    };
    let oversized = |store: &RedisStore| {
        let store = store.clone();
        async move { store.counts(&scope).await.unwrap().oversized_shards }
    };
    assert_eq!(oversized(&store).await, Some(1));
    // Commits go on at the usual pace (a few a unit); the burst's records die, and the
    // sweep passes after that leave the hash a listpack again.
    let burst = Instant::now();
    while encoding(&store).await == "hashtable" {
        assert!(
            burst.elapsed() < TTL + UNIT * 16,
            "still a hashtable {:?} after the burst",
            burst.elapsed()
        );
        commit(&store, &contract_keys(1), TTL).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        burst.elapsed() > TTL,
        "a listpack again while the burst's records lived"
    );
    assert_eq!(oversized(&store).await, Some(0));
    let bytes: u64 = raw(&store, redis::cmd("MEMORY").arg("USAGE").arg(&hash)).await;
    let fields: u64 = raw(&store, redis::cmd("HLEN").arg(&hash)).await;
    assert!(
        bytes * 4 < bytes_as_hashtable && fields < 300,
        "{bytes} bytes for {fields} fields, {bytes_as_hashtable} as a hashtable"
    );
    // Its records are still found.
    let keys = contract_keys(3);
    commit(&store, &keys, TTL).await;
    assert_eq!(
        store
            .claim(&keys, OwnerToken::random(), LONG)
            .await
            .unwrap(),
        vec![ClaimOutcome::Consumed; 3]
    );
}

/// Captures this thread's WARN and ERROR lines until the guard drops.
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

/// Finding 6: one value that is not a stamp (`x`; Lua's `tonumber` also took `0x10`, `5.5`,
/// `-3`, which Rust refused) failed every commit to its shard, and their batches, until the
/// hash expired. Now such a value is a dead record, by one rule in Lua and Rust: claims find
/// it claimable, commits go on, the sweep deletes it, and it is logged with its hash's key.
/// A meta field that is garbage, and a records hash that is no hash, are mended the same way.
async fn a_value_that_is_no_stamp_is_a_dead_record_and_stops_nothing(servers: Servers) {
    let store = one_shard_store(&servers, Duration::from_secs(60)).await;
    let group = "bounded:group:Topic::";
    let hash = records_hash(group);
    let spoiled = contract_keys(4);
    commit(&store, &spoiled, TTL * 30).await;
    // Spoil the four records' stamps (and nothing else).
    let fields: Vec<Vec<u8>> = raw(&store, redis::cmd("HKEYS").arg(&hash)).await;
    // All but the meta field and the sweep state.
    let mut records: Vec<Vec<u8>> = fields
        .into_iter()
        .filter(|f| !f.is_empty() && f != b"~")
        .collect();
    records.sort();
    assert_eq!(records.len(), 4);
    for (field, bad) in records.iter().zip(["x", "0x10", "5.5", "-3"]) {
        let _: i64 = raw(
            &store,
            redis::cmd("HSET").arg(&hash).arg(&field[..]).arg(bad),
        )
        .await;
    }
    let (capture, _guard) = capture_warnings();
    // Claimable: a value that is no stamp is no record.
    let token = OwnerToken::random();
    assert_eq!(
        store.claim(&spoiled, token, LONG).await.unwrap(),
        vec![ClaimOutcome::Claimed; 4]
    );
    for key in &spoiled {
        assert!(matches!(
            store.inspect(key).await.unwrap(),
            RecordState::Consuming { .. }
        ));
    }
    // Commits to the shard go on, these four included.
    assert_eq!(
        store.commit(&spoiled, token, TTL * 30).await.unwrap(),
        vec![CommitOutcome::Committed; 4]
    );
    let logs = capture.text();
    assert!(
        logs.contains("not stamps") && logs.contains(&hash),
        "{logs}"
    );
    commit(&store, &contract_keys(5), TTL * 30).await;
    assert_eq!(
        store
            .claim(&spoiled, OwnerToken::random(), LONG)
            .await
            .unwrap(),
        vec![ClaimOutcome::Consumed; 4]
    );
    // A value nobody wrote in a field of its own is deleted by the sweep.
    let _: i64 = raw(
        &store,
        redis::cmd("HSET")
            .arg(&hash)
            .arg("garbage-field")
            .arg("0x10"),
    )
    .await;
    let garbage_gone = Instant::now();
    loop {
        commit(&store, &contract_keys(1), TTL * 30).await;
        let left: bool = raw(
            &store,
            redis::cmd("HEXISTS").arg(&hash).arg("garbage-field"),
        )
        .await;
        if !left {
            break;
        }
        assert!(
            garbage_gone.elapsed() < Duration::from_secs(20),
            "never swept"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A meta field that is garbage: the next commit writes it anew (and a pass starts).
    let _: i64 = raw(&store, redis::cmd("HSET").arg(&hash).arg("").arg("57")).await;
    commit(&store, &contract_keys(2), TTL * 30).await;
    let meta: String = raw(&store, redis::cmd("HGET").arg(&hash).arg("")).await;
    assert_eq!(meta, "7500,1");
    // A sweep state that is garbage: the next pass starts anew.
    let _: i64 = raw(&store, redis::cmd("HSET").arg(&hash).arg("~").arg("x,y")).await;
    commit(&store, &contract_keys(2), TTL * 30).await;
    let state: String = raw(&store, redis::cmd("HGET").arg(&hash).arg("~")).await;
    assert!(state.bytes().all(|b| b.is_ascii_digit()), "{state}");
    assert_eq!(
        store
            .claim(&spoiled, OwnerToken::random(), LONG)
            .await
            .unwrap(),
        vec![ClaimOutcome::Consumed; 4],
        "records stay readable under a mended meta field"
    );
    // A records hash that is no hash: claims find nothing, the next commit replaces it.
    let _: () = raw(&store, redis::cmd("SET").arg(&hash).arg("not a hash")).await;
    let fresh = contract_keys(2);
    commit(&store, &fresh, TTL * 30).await;
    assert_eq!(
        store
            .claim(&fresh, OwnerToken::random(), LONG)
            .await
            .unwrap(),
        vec![ClaimOutcome::Consumed; 2]
    );
    let kind: String = raw(&store, redis::cmd("TYPE").arg(&hash)).await;
    assert_eq!(kind, "hash");
}

/// Finding 7: with the group's `{layout}` key lost (evicted, deleted), a store configured
/// otherwise wrote its own layout and swept a 3 h unit's records with its 7.5 s unit: all 200
/// deleted. Now the width travels with the records (the hash's meta field), and a store that
/// finds no layout key takes the layout of the records it finds (shard 0's hash) and writes it
/// back. And a store WARNs at connect unless Redis runs with `maxmemory-policy noeviction`.
async fn a_lost_layout_key_loses_no_records(servers: Servers) {
    // The same shard count, another unit width.
    let day = one_shard_store(&servers, Duration::from_secs(24 * 3600)).await;
    let keys = contract_keys(200);
    commit(&day, &keys, Duration::from_secs(24 * 3600)).await;
    let layout_key = "bounded:group:Topic::{layout}";
    let _: i64 = raw(&day, redis::cmd("DEL").arg(layout_key)).await;
    let (capture, guard) = capture_warnings();
    let minute = one_shard_store(&servers, Duration::from_secs(60)).await;
    assert_eq!(
        minute
            .claim(&keys, OwnerToken::random(), LONG)
            .await
            .unwrap(),
        vec![ClaimOutcome::Consumed; 200]
    );
    for _ in 0..3 {
        commit(&minute, &contract_keys(5), Duration::from_secs(60)).await;
    }
    for store in [&day, &minute] {
        assert_eq!(
            store
                .claim(&keys, OwnerToken::random(), LONG)
                .await
                .unwrap(),
            vec![ClaimOutcome::Consumed; 200]
        );
    }
    let restored: String = raw(&minute, redis::cmd("GET").arg(layout_key)).await;
    assert_eq!(restored, "w=10800000 s=1");
    assert!(capture.text().contains("layout key"), "{}", capture.text());
    drop(guard);

    // Another shard count: 4 shards, then a store sized for 512.
    let four = RedisStore::builder(servers.url())
        .record_ttl(Duration::from_secs(60))
        .expected_rate(10)
        .connect()
        .await
        .unwrap();
    let keys: Vec<RecordKey> = contract_keys(200)
        .into_iter()
        .map(|k| {
            RecordKey::new(KeyParts {
                prefix: "sharded",
                namespace: "group",
                topic: "Topic",
                tag: None,
                key: k.as_str().rsplit(':').next().unwrap(),
            })
        })
        .collect();
    commit(&four, &keys, Duration::from_secs(60)).await;
    let layout_key = "sharded:group:Topic::{layout}";
    let written: String = raw(&four, redis::cmd("GET").arg(layout_key)).await;
    assert_eq!(written, "w=7500 s=4");
    let _: i64 = raw(&four, redis::cmd("DEL").arg(layout_key)).await;
    let many = RedisStore::builder(servers.url())
        .record_ttl(Duration::from_secs(60))
        .expected_rate(1_000)
        .connect()
        .await
        .unwrap();
    assert_eq!(
        many.claim(&keys, OwnerToken::random(), LONG).await.unwrap(),
        vec![ClaimOutcome::Consumed; 200]
    );
    let restored: String = raw(&many, redis::cmd("GET").arg(layout_key)).await;
    assert_eq!(restored, "w=7500 s=4");

    // Any policy but noeviction is warned of, once, at connect.
    if servers.is_local() {
        servers.config_set("maxmemory-policy", "allkeys-lru");
        let (capture, guard) = capture_warnings();
        RedisStore::builder(servers.url()).connect().await.unwrap();
        let logs = capture.text();
        assert!(
            logs.contains("maxmemory-policy") && logs.contains("allkeys-lru"),
            "{logs}"
        );
        drop(guard);
        servers.config_set("maxmemory-policy", "noeviction");
        let (capture, _guard) = capture_warnings();
        RedisStore::builder(servers.url()).connect().await.unwrap();
        assert!(
            !capture.text().contains("maxmemory-policy"),
            "{}",
            capture.text()
        );
    }
}

/// Finding 8: two consumers 200 ms apart across a unit boundary each saw a new unit in turn:
/// 99 of 100 commits swept the whole hash. Now the unit is the server's: a pass starts at most
/// once a unit, however many consumers commit and whatever their clocks say.
async fn sweeps_start_once_a_unit_whatever_the_clocks(servers: Servers) {
    let store = one_shard_store(&servers, TTL).await;
    // A consumer 200 ms ahead commits every 20 ms beside this one.
    let ahead = committers(&servers, &[200], 1);
    let before = servers.command_calls("hscan") + servers.command_calls("hgetall");
    let began = Instant::now();
    let mut commits = 0;
    while began.elapsed() < UNIT * 8 {
        commit(&store, &[skewed::record("accurate", commits)], TTL).await;
        commits += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The units the commits spanned, and the hash's first pass (at its second commit).
    let units = began.elapsed().as_millis() / UNIT.as_millis() + 3;
    let sweeps = servers.command_calls("hscan") + servers.command_calls("hgetall") - before;
    assert!(
        commits as u128 > 4 * units,
        "{commits} commits in {units} units"
    );
    assert!(
        sweeps as u128 <= units,
        "{sweeps} sweep steps in {units} units ({commits} commits here, more by the other)"
    );
    for (consumer, _) in ahead {
        assert!(consumer.finish().0);
    }
}

/// Finding 9: an operator's view. `forget` answered true for a record already dead; `status`
/// and `forget` answered Absent and false when the layout key was gone though the records
/// remained; `stats` counted claims left on CONSUMED records as CONSUMING.
async fn the_operators_view_tells_the_truth(servers: Servers) {
    let store = one_shard_store(&servers, TTL).await;
    // A dead record: nothing to forget.
    let dead = contract_keys(1);
    commit(&store, &dead, TTL).await;
    tokio::time::sleep(TTL + UNIT + MARGIN).await;
    assert_eq!(store.inspect(&dead[0]).await.unwrap(), RecordState::Absent);
    assert!(
        !store.forget(&dead[0]).await.unwrap(),
        "a dead record forgotten"
    );

    // The layout key gone, the records there.
    let live = contract_keys(2);
    commit(&store, &live, TTL * 30).await;
    let _: i64 = raw(
        &store,
        redis::cmd("DEL").arg("bounded:group:Topic::{layout}"),
    )
    .await;
    let other = one_shard_store(&servers, TTL).await;
    assert!(matches!(
        other.inspect(&live[0]).await.unwrap(),
        RecordState::Consumed { .. }
    ));
    assert!(other.forget(&live[0]).await.unwrap());
    assert_eq!(other.inspect(&live[0]).await.unwrap(), RecordState::Absent);

    // Claims on CONSUMED records leave nothing to count.
    let scope = RecordScope {
        prefix: "bounded",
        namespace: "group",
        topic: Some("Topic"),
        tag: None,
    };
    for _ in 0..5 {
        assert_eq!(
            other
                .claim(&live[1..], OwnerToken::random(), LONG)
                .await
                .unwrap(),
            [ClaimOutcome::Consumed]
        );
    }
    let counts = other.counts(&scope).await.unwrap();
    assert_eq!(counts.consuming, 0, "{counts:?}");
}

/// What to build 8: a claim that finds a CONSUMED record leaves a claim key behind for a
/// moment at most. The native claim (`SET … NX GET`, then the record) undoes the claim it
/// made on a CONSUMED record at once (on one server in front of the thread's next pipeline, or
/// after the commit linger): a copy claimed in that moment, should the record expire in it,
/// is deferred once, never run twice (the model check allows exactly that). The Lua claim
/// reads and writes at once and leaves nothing.
async fn a_claim_on_a_consumed_record_leaves_its_claim_a_moment_at_most(servers: Servers) {
    let native = one_shard_store(&servers, TTL).await;
    let scripted = RedisStore::builder(servers.url())
        .record_ttl(TTL)
        .expected_rate(0)
        .script_claims(true)
        .connect()
        .await
        .unwrap();
    for (store, moment) in [
        (&scripted, Duration::ZERO),
        (&native, Duration::from_millis(100)),
    ] {
        let keys = contract_keys(8);
        commit(store, &keys, TTL).await;
        assert_eq!(
            store
                .claim(&keys, OwnerToken::random(), LONG)
                .await
                .unwrap(),
            vec![ClaimOutcome::Consumed; 8]
        );
        tokio::time::sleep(moment).await;
        for key in &keys {
            let claim = store.claim_key(key).unwrap();
            let exists: i64 = raw(store, redis::cmd("EXISTS").arg(&claim)).await;
            assert_eq!(exists, 0, "a claim key was left on a CONSUMED record");
        }
        // Once the records expire, the next claim finds them absent, not in flight.
        tokio::time::sleep(TTL + UNIT + MARGIN).await;
        assert_eq!(
            store
                .claim(&keys, OwnerToken::random(), LONG)
                .await
                .unwrap(),
            vec![ClaimOutcome::Claimed; 8]
        );
    }
}

on_every_deployment!(
    a_committer_behind_shortens_no_records_life,
    a_committer_ahead_sweeps_away_no_live_record,
    skewed_consumers_lose_no_live_record_and_revive_no_dead_one,
    the_model_holds_beside_skewed_stores,
    a_sweep_step_is_bounded_whatever_the_hash_size,
    a_hash_that_became_a_hashtable_returns_to_a_listpack,
    a_value_that_is_no_stamp_is_a_dead_record_and_stops_nothing,
    a_lost_layout_key_loses_no_records,
    sweeps_start_once_a_unit_whatever_the_clocks,
    the_operators_view_tells_the_truth,
    a_claim_on_a_consumed_record_leaves_its_claim_a_moment_at_most,
);

/// A skewed consumer's entry point (see `support/skewed.rs`): the skew tests start this test
/// binary again, under faketime, to run only this.
#[test]
#[ignore = "a consumer in a process of its own, started by the skew tests under faketime"]
fn skewed_consumer_child() {
    skewed::child_main();
}
