//! Measurements besides throughput, and the report with its ratio lines.

use std::collections::BTreeMap;

use anyhow::Context;
use std::time::Duration;

use rocketmq_dedup::record_key::{KeyParts, RecordKey};
use rocketmq_dedup::store::{DedupStore, MemoryStore, OwnerToken, RedisStore};
use rocketmq_dedup::testing::{message, RedisStoreProbe};
use rocketmq_dedup_testkit::RedisServer;

/// The scope part of the previous layout's keys for the bench's group and topic:
/// base64url of the first 64 bits of SHA-256(`dedup:bench-consumer-group:BenchTopic::`).
const PREVIOUS_LAYOUT_SCOPE: &str = "s-b5-uyXlT8";

use crate::{name, work_name, Key, Kind, Work};

const LONG: Duration = Duration::from_secs(24 * 60 * 60);

fn uniq_id(i: usize) -> String {
    // The shape of a client unique id: 32 upper-case hex digits.
    format!(
        "7F00000100{:022X}",
        (i as u128).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    )
}

/// RSS growth per record of a memory store filled with `records` CONSUMED records.
pub async fn memory_store_bytes_per_record(records: usize) -> f64 {
    let before = crate::rss_kb();
    let store = MemoryStore::new();
    let token = OwnerToken::random();
    let mut batch = Vec::with_capacity(1000);
    for i in 0..records {
        batch.push(RecordKey::new(KeyParts {
            prefix: "dedup",
            namespace: "bench-consumer-group",
            topic: "BenchTopic",
            tag: None,
            key: &uniq_id(i),
        }));
        if batch.len() == 1000 || i + 1 == records {
            store
                .claim(&batch, token, LONG)
                .await
                .expect("memory store claim");
            store
                .commit(&batch, token, LONG)
                .await
                .expect("memory store commit");
            batch.clear();
        }
    }
    let after = crate::rss_kb();
    assert_eq!(store.len(), records);
    (after.saturating_sub(before) as f64 * 1024.0) / records as f64
}

/// Round trips the Redis store makes for one listener batch of 32 fresh messages, and for the
/// same batch in another consumer (all duplicates; the first consumer's near-cache would
/// answer them without Redis).
pub async fn round_trips_per_batch(url: &str) -> anyhow::Result<(u64, u64)> {
    let store = RedisStore::builder(url).connect().await?;
    let counter = store.clone();
    let consumer = |store: RedisStore| {
        rocketmq_dedup::DedupConcurrentListener::builder(rocketmq_dedup::handler_fn(
            |_: &rocketmq_model::common::message::message_ext::MessageExt| Ok(()),
        ))
        .namespace("bench-round-trips")
        .store(store)
        .build()
    };
    let batch: Vec<_> = (0..32)
        .map(|i| message("BenchTopic").uniq_key(&uniq_id(i)).build())
        .collect();
    let refs: Vec<_> = batch.iter().collect();
    // The group's layout is read once per store and group, by its first call: not counted.
    let warm = consumer(store.clone())?;
    warm.consume(&[&message("BenchTopic").uniq_key("warm-up").build()])
        .await;
    warm.shutdown(std::time::Duration::from_secs(5)).await;
    let before = counter.round_trips();
    let first = consumer(store.clone())?;
    first.consume(&refs).await;
    // The commit is written after the answer (the default): wait for it before counting.
    first.shutdown(std::time::Duration::from_secs(5)).await;
    let fresh = counter.round_trips() - before;
    let second = consumer(store)?;
    second.consume(&refs).await;
    second.shutdown(std::time::Duration::from_secs(5)).await;
    Ok((fresh, counter.round_trips() - before - fresh))
}

/// Redis memory per CONSUMED record, as the server counts it (`used_memory` before and after
/// loading `records` records, over the count), for the store's layout and for the one-key
/// layouts it replaces; and claims a second against a Redis holding them, against an empty one.
#[derive(Debug, Clone, Copy)]
pub struct RedisBytes {
    pub records: usize,
    /// The Redis store (records hashes), records committed through its claim and commit.
    pub hashed: f64,
    /// One key per record as the store wrote them before (`dedup:<scope>:<id>` = `1`, `PX`).
    pub one_key: f64,
    /// The Java library's layout (`MSGDEDUP:<app>:<topic>:<tag>:<id>` = `CONSUMED`, `EX`).
    pub reference: f64,
    /// Claims a second (batches of 32 fresh keys) with the records loaded and on an empty
    /// server.
    pub claims: LoadedVsEmpty,
    /// The same with the records in the one-key layout, claimed as the store did before.
    pub one_key_claims: LoadedVsEmpty,
}

/// Rates against a loaded and an empty server, from interleaved rounds.
#[derive(Debug, Clone, Copy)]
pub struct LoadedVsEmpty {
    /// The median rate, loaded.
    pub loaded: f64,
    /// The median rate, empty.
    pub empty: f64,
    /// Loaded over empty, round by round.
    pub ratio: Spread,
}

impl LoadedVsEmpty {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "loaded": self.loaded,
            "empty": self.empty,
            "loaded_vs_empty": {"median": self.ratio.median, "min": self.ratio.min, "max": self.ratio.max, "runs": self.ratio.runs},
        })
    }
}

impl RedisBytes {
    /// The figures, and what 10^9 records take per master of a Cluster.
    pub fn print(&self) {
        println!(
            "redis bytes per CONSUMED record (used_memory, {} records): ours (records hashes) {:.1}, one key per record {:.1}, reference layout {:.1}",
            self.records, self.hashed, self.one_key, self.reference
        );
        for (layout, c) in [
            ("records hashes", self.claims),
            ("one key per record", self.one_key_claims),
        ] {
            println!(
                "redis claims per second ({layout}, batches of 32, medians): {:.0} holding {} records, {:.0} empty; loaded / empty {:.3} ({})",
                c.loaded,
                self.records,
                c.empty,
                c.ratio.median,
                c.ratio.range()
            );
        }
        for masters in [3.0, 10.0] {
            let gib = |bytes: f64| bytes * 1e9 / masters / (1u64 << 30) as f64;
            println!(
                "projection, 10^9 records on {masters} masters: {:.1} GiB per master (one key per record {:.1}, reference layout {:.1})",
                gib(self.hashed),
                gib(self.one_key),
                gib(self.reference)
            );
        }
    }
}

/// `used_memory` now.
pub(crate) fn used_memory(redis: &RedisServer) -> anyhow::Result<u64> {
    let info = redis.command(&["INFO", "memory"])?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no used_memory in INFO: {info}"))
}

/// The record key of message `i` of the bench's group and topic.
fn bench_key(i: usize) -> RecordKey {
    RecordKey::new(KeyParts {
        prefix: "dedup",
        namespace: "bench-consumer-group",
        topic: "BenchTopic",
        tag: None,
        key: &uniq_id(i),
    })
}

/// Claims per second over `n` fresh keys (from `first`), in batches of 32. The claims are
/// released afterwards (not timed), so that the server holds what it held before.
async fn claims_per_second(store: &RedisStore, first: usize, n: usize) -> anyhow::Result<f64> {
    let keys: Vec<RecordKey> = (first..first + n).map(bench_key).collect();
    let token = OwnerToken::random();
    let started = std::time::Instant::now();
    for chunk in keys.chunks(32) {
        store.claim(chunk, token, Duration::from_secs(60)).await?;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    for chunk in keys.chunks(1_000) {
        store.release(chunk, token).await?;
    }
    Ok(rate)
}

/// Claims a second in the one-key layout (`SET key c1 NX PX 60000 GET`, as the store claimed
/// before its records hashes) over `n` fresh keys (from `first`), in pipelines of 32; the claims are
/// deleted afterwards (not timed).
async fn one_key_claims_per_second(
    conn: &mut impl redis::aio::ConnectionLike,
    first: usize,
    n: usize,
) -> anyhow::Result<f64> {
    let keys: Vec<String> = (first..first + n).map(previous_layout_key).collect();
    let started = std::time::Instant::now();
    for chunk in keys.chunks(32) {
        let mut pipe = redis::pipe();
        for key in chunk {
            pipe.cmd("SET")
                .arg(key)
                .arg("c1")
                .arg("NX")
                .arg("PX")
                .arg(60_000)
                .arg("GET");
        }
        let _: Vec<redis::Value> = pipe.query_async(conn).await?;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    for chunk in keys.chunks(1_000) {
        let () = redis::cmd("DEL").arg(chunk).query_async(conn).await?;
    }
    Ok(rate)
}

/// The previous Redis store's key of message `i`, one key per record: `dedup:<scope>:<id>`,
/// the scope being 11 base64url characters of the SHA-256 of `dedup:<group>:<topic>::` (its
/// `KeyLayout::Scoped`, removed since).
fn previous_layout_key(i: usize) -> String {
    format!("dedup:{PREVIOUS_LAYOUT_SCOPE}:{}", uniq_id(i))
}

/// Rates against a loaded server and an empty one in `rounds` interleaved rounds (the order
/// alternating): each round's ratio is of two runs back to back, so a slow moment of the
/// machine weighs on both. Answers the median rates and the ratios' spread.
async fn loaded_vs_empty(
    what: &str,
    rounds: usize,
    mut loaded: impl AsyncFnMut(usize) -> anyhow::Result<f64>,
    mut empty: impl AsyncFnMut(usize) -> anyhow::Result<f64>,
) -> anyhow::Result<LoadedVsEmpty> {
    let (mut on_loaded, mut on_empty) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let (l, e) = match round % 2 {
            0 => (loaded(round).await?, empty(round).await?),
            _ => {
                let e = empty(round).await?;
                (loaded(round).await?, e)
            }
        };
        eprintln!("{what}, round {round}: loaded {l:.0}/s, empty {e:.0}/s");
        on_loaded.push(l);
        on_empty.push(e);
    }
    let ratios = on_loaded
        .iter()
        .zip(&on_empty)
        .map(|(l, e)| l / e)
        .collect();
    Ok(LoadedVsEmpty {
        loaded: median(on_loaded),
        empty: median(on_empty),
        ratio: Spread::of(ratios),
    })
}

/// Measures [`RedisBytes`] over `records` records of each layout.
pub async fn redis_bytes_per_record(
    redis: &RedisServer,
    records: usize,
) -> anyhow::Result<RedisBytes> {
    const CLAIMS: usize = 100_000;
    const CLAIM_ROUNDS: usize = 5;
    let day = Duration::from_secs(24 * 60 * 60);
    // Sized for the load: at this rate a group's hashes hold `records` (a record TTL and two
    // 3 h units of commits, 30 h), up to 256 a hash (the shards are a power of two).
    let rate = (records as u64 / (30 * 3600)).max(1);
    let connect = |redis: &RedisServer| {
        RedisStore::builder(redis.url())
            .expected_rate(rate)
            .connect()
    };

    crate::scale::flush(redis)?;
    let store = connect(redis).await?;
    let before = used_memory(redis)?;
    let token = OwnerToken::random();
    for start in (0..records).step_by(1_000) {
        let keys: Vec<RecordKey> = (start..(start + 1_000).min(records))
            .map(bench_key)
            .collect();
        store
            .claim(&keys, token, LONG)
            .await
            .context("loading: claim")?;
        store
            .commit(&keys, token, day)
            .await
            .context("loading: commit")?;
    }
    let hashed = (used_memory(redis)? - before) as f64 / records as f64;
    eprintln!("bytes per record, records hashes: {hashed:.1}");

    // Claims against the loaded server and against an empty one, a server of its own, emptied
    // before each of its rounds. Every round claims fresh keys.
    let empty = RedisServer::start().context("an empty Redis server")?;
    let empty_store = connect(&empty).await?;
    let fresh = |round: usize| records + 2 * round * CLAIMS;
    let claims = loaded_vs_empty(
        "claims (records hashes)",
        CLAIM_ROUNDS,
        async |round| claims_per_second(&store, fresh(round), CLAIMS).await,
        async |round| {
            crate::scale::flush(&empty)?;
            claims_per_second(&empty_store, fresh(round) + CLAIMS, CLAIMS).await
        },
    )
    .await?;

    let conn = store.connection();
    let one_key_layout = |key: fn(usize) -> String, value: &'static str| {
        let mut conn = conn.clone();
        async move {
            crate::scale::flush(redis)?;
            let before = used_memory(redis)?;
            for start in (0..records).step_by(1_000) {
                let mut pipe = redis::pipe();
                for i in start..(start + 1_000).min(records) {
                    pipe.cmd("SET")
                        .arg(key(i))
                        .arg(value)
                        .arg("EX")
                        .arg(86_400)
                        .ignore();
                }
                let () = pipe.query_async(&mut conn).await.context("one-key load")?;
            }
            let bytes = (used_memory(redis)? - before) as f64 / records as f64;
            eprintln!("bytes per record, one key each ({value}): {bytes:.1}");
            Ok::<f64, anyhow::Error>(bytes)
        }
    };
    let one_key = one_key_layout(previous_layout_key, "1").await?;
    // The same claims in the one-key layout, loaded as it stands now: what a loaded server
    // costs a claim without records hashes.
    let (mut on_loaded, mut on_empty) = (conn.clone(), empty_store.connection());
    let one_key_claims = loaded_vs_empty(
        "claims (one key per record)",
        CLAIM_ROUNDS,
        async |round| one_key_claims_per_second(&mut on_loaded, fresh(round), CLAIMS).await,
        async |round| {
            crate::scale::flush(&empty)?;
            one_key_claims_per_second(&mut on_empty, fresh(round) + CLAIMS, CLAIMS).await
        },
    )
    .await?;
    drop(empty_store);
    drop(empty);
    let reference = one_key_layout(
        |i| {
            crate::reference::reference_key(
                "bench-consumer-group",
                "BenchTopic",
                Some("TagA"),
                &uniq_id(i),
            )
        },
        "CONSUMED",
    )
    .await?;
    crate::scale::flush(redis)?;
    Ok(RedisBytes {
        records,
        hashed,
        one_key,
        reference,
        claims,
        one_key_claims,
    })
}

pub struct Report {
    pub backlog: usize,
    pub reps: usize,
    pub scenarios: BTreeMap<Key, Vec<serde_json::Value>>,
    pub memory_store_bytes_per_record: f64,
    /// The listener's own CPU per message without a broker (memory store), at batch 1 and 32.
    pub engine_us: (f64, f64),
    pub round_trips: (u64, u64),
    /// The same on a Redis Cluster of 3 masters.
    pub cluster_round_trips: (u64, u64),
    pub redis_bytes: RedisBytes,
    /// The slowest commit against a records hash of 10^6 fields.
    pub slowest_commit: crate::scale::SlowestCommit,
    /// Memory per live record at a steady rate and after a burst.
    pub burst: crate::scale::Burst,
}

/// The CPU time a Redis server has used, in seconds, from its `INFO cpu` answer
/// (`used_cpu_sys` + `used_cpu_user`: the server's own `getrusage`).
pub fn cpu_seconds_in_info(info: &str) -> anyhow::Result<f64> {
    let field = |name: &str| -> anyhow::Result<f64> {
        let value = info
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'));
        match value.map(|v| v.trim().parse::<f64>()) {
            Some(Ok(seconds)) => Ok(seconds),
            _ => anyhow::bail!("INFO cpu has no number for {name}: {info:?}"),
        }
    };
    Ok(field("used_cpu_sys")? + field("used_cpu_user")?)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// A ratio of two scenarios over the repetitions: each repetition's own ratio (the two ran
/// back to back, so a slow moment of the machine weighs on both), their median and range.
#[derive(Debug, Clone, Copy)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub runs: usize,
}

impl Spread {
    fn of(values: Vec<f64>) -> Self {
        let runs = values.len();
        Spread {
            min: values.iter().copied().fold(f64::NAN, f64::min),
            max: values.iter().copied().fold(f64::NAN, f64::max),
            median: median(values),
            runs,
        }
    }

    fn range(&self) -> String {
        format!("{:.3}..{:.3} over {} runs", self.min, self.max, self.runs)
    }
}

impl Report {
    /// The runs of a scenario; the listeners without a handler trait ran each work in its
    /// blocking form.
    fn runs(&self, (dup, batch, work, kind): Key) -> Vec<serde_json::Value> {
        let work = match kind.is_dedup_listener() {
            true => work,
            false => work.blocking_form(),
        };
        self.scenarios
            .get(&(dup, batch, work, kind))
            .cloned()
            .unwrap_or_default()
    }

    fn metric(&self, key: Key, field: &str) -> f64 {
        median(
            self.runs(key)
                .iter()
                .filter_map(|r| r[field].as_f64())
                .collect(),
        )
    }

    /// Throughput of `a` over `b` (fresh backlog), repetition by repetition.
    fn tput_ratio(&self, batch: u32, work: Work, a: Kind, b: Kind) -> Spread {
        let (a, b) = (
            self.runs((0, batch, work, a)),
            self.runs((0, batch, work, b)),
        );
        Spread::of(
            a.iter()
                .zip(&b)
                .filter_map(|(a, b)| Some(a["msgs_per_s"].as_f64()? / b["msgs_per_s"].as_f64()?))
                .collect(),
        )
    }

    /// The scenarios measured with the trivial handler on the fresh backlog at `batch`.
    fn fresh_trivial(&self, batch: u32) -> impl Iterator<Item = Key> + '_ {
        self.scenarios
            .keys()
            .copied()
            .filter(move |&(dup, b, work, _)| (dup, b, work) == (0, batch, Work::Trivial))
    }

    /// Prints the table and the ratio lines; answers the same as JSON.
    pub fn print(&self) -> serde_json::Value {
        println!(
            "backlog {} messages per scenario, {} repetition(s), medians; latency is per listener call",
            self.backlog, self.reps
        );
        println!(
            "{:>4} {:>5} {:<16} {:<14} {:>8} {:>9} {:>9} {:>9} {:>8} {:>8}",
            "dup%",
            "batch",
            "handler",
            "listener",
            "msg/s",
            "p50 us",
            "p99 us",
            "rss MiB",
            "cpu us",
            "redis us"
        );
        let mut rows = Vec::new();
        for key in self.scenarios.keys() {
            let (dup, batch, work, kind) = *key;
            let (tput, p50, p99, rss, cpu) = (
                self.metric(*key, "msgs_per_s"),
                self.metric(*key, "p50_us"),
                self.metric(*key, "p99_us"),
                self.metric(*key, "peak_rss_kb") / 1024.0,
                self.metric(*key, "cpu_us_per_msg"),
            );
            // The Redis server's CPU per message while the listener consumed (the listeners on
            // the run's one server).
            let server = self.metric(*key, "redis_server_cpu_us_per_msg");
            let server_text = match server.is_nan() {
                true => "-".to_owned(),
                false => format!("{server:.1}"),
            };
            println!(
                "{dup:>4} {batch:>5} {:<16} {:<14} {tput:>8.0} {p50:>9.0} {p99:>9.0} {rss:>9.1} {cpu:>8.1} {server_text:>8}",
                work_name(work),
                name(kind)
            );
            rows.push(serde_json::json!({
                "duplicates_percent": dup, "batch": batch, "handler": work_name(work), "listener": name(kind),
                "msgs_per_s": tput, "p50_us": p50, "p99_us": p99, "peak_rss_mib": rss,
                "cpu_us_per_msg": cpu,
                "redis_server_cpu_us_per_msg": server,
                "redis_round_trips": self.metric(*key, "redis_round_trips"),
            }));
        }
        let rss = |kind| self.metric((0, 32, Work::Trivial, kind), "peak_rss_kb");
        let bytes = self.redis_bytes;
        println!(
            "redis round trips: {} per fresh batch of 32, {} per batch of 32 duplicates",
            self.round_trips.0, self.round_trips.1
        );
        println!(
            "redis cluster (3 masters) round trips: {} per fresh batch of 32, {} per batch of 32 duplicates",
            self.cluster_round_trips.0, self.cluster_round_trips.1
        );
        for kind in [Kind::Redis, Kind::RedisNoLinger] {
            let trips = self.metric((0, 1, Work::Trivial, kind), "redis_round_trips");
            if !trips.is_nan() {
                println!(
                    "{} round trips at batch 1 (fresh, trivial): {trips:.0} for {} messages, {:.4} per message",
                    name(kind),
                    self.backlog,
                    trips / self.backlog as f64
                );
            }
        }
        // What each listener adds to the plain consumer's CPU per message, at the default
        // batch size: the cost a shared machine's noise blurs least.
        let plain_cpu = self.metric((0, 1, Work::Trivial, Kind::Plain), "cpu_us_per_msg");
        let cpu: Vec<String> = self
            .fresh_trivial(1)
            .map(|key| {
                let us = self.metric(key, "cpu_us_per_msg");
                format!("{} {us:.1} (+{:.1})", name(key.3), us - plain_cpu)
            })
            .collect();
        println!(
            "consumer CPU us per message at batch 1 (fresh, trivial; + over plain): {}",
            cpu.join(", ")
        );
        println!(
            "engine CPU us per message (the listener with the memory store, no broker, one thread): batch 1 {:.2}, batch 32 {:.2}",
            self.engine_us.0, self.engine_us.1
        );
        // Where the machine's CPU goes per message, every process counted: when the cores are
        // busy all the time, throughput is at most the cores' time over this.
        for batch in [1u32, 32] {
            let parts: Vec<String> = self
                .fresh_trivial(batch)
                .map(|key| {
                    let machine = self.metric(key, "machine_cpu_us_per_msg");
                    let consumer = self.metric(key, "cpu_us_per_msg");
                    let redis = self.metric(key, "redis_server_cpu_us_per_msg");
                    format!(
                        "{} {machine:.1} (consumer {consumer:.1}, redis-server {redis:.1}, the rest {:.1}; cores busy {:.0}%)",
                        name(key.3),
                        machine - consumer - redis,
                        100.0 * self.metric(key, "machine_busy_share")
                    )
                })
                .collect();
            if !parts.is_empty() {
                println!(
                    "machine CPU us per message at batch {batch} (fresh, trivial): {}",
                    parts.join(", ")
                );
            }
        }
        for kind in [Kind::Plain, Kind::Memory, Kind::Redis] {
            let key = (0, 32, Work::Trivial, kind);
            let (peak, anon, file, threads) = (
                self.metric(key, "peak_rss_kb"),
                self.metric(key, "rss_anon_kb"),
                self.metric(key, "rss_file_kb"),
                self.metric(key, "threads"),
            );
            if !peak.is_nan() {
                println!(
                    "{} consumer RSS (0%, batch 32, trivial): peak {:.1} MiB; at the end {:.1} MiB heap and stacks, {:.1} MiB mapped files (code), {threads:.0} threads",
                    name(kind),
                    peak / 1024.0,
                    anon / 1024.0,
                    file / 1024.0
                );
            }
        }
        bytes.print();
        self.slowest_commit.print();
        self.burst.print();
        println!(
            "memory store bytes per record: {:.1}",
            self.memory_store_bytes_per_record
        );
        let t = |batch, work, a, b| self.tput_ratio(batch, work, a, b);
        let single = |value: f64| Spread {
            median: value,
            min: value,
            max: value,
            runs: 1,
        };
        let ratios = [
            // Batch 1, RocketMQ's default: one blocking round trip per message is the floor.
            (
                "redis_vs_floor_trivial_batch1",
                t(1, Work::Trivial, Kind::Redis, Kind::Floor),
                ">=",
                0.9,
            ),
            (
                "redis_vs_floor_trivial_blocking_batch1",
                t(1, Work::TrivialBlocking, Kind::Redis, Kind::Floor),
                ">=",
                0.9,
            ),
            (
                "redis_vs_reference_trivial_batch1",
                t(1, Work::Trivial, Kind::Redis, Kind::Reference),
                ">=",
                1.3,
            ),
            (
                "redis_vs_reference_trivial_blocking_batch1",
                t(1, Work::TrivialBlocking, Kind::Redis, Kind::Reference),
                ">=",
                1.3,
            ),
            (
                "redis_vs_plain_1ms_blocking_batch1",
                t(1, Work::Sleep1ms, Kind::Redis, Kind::Plain),
                ">=",
                0.97,
            ),
            (
                "redis_vs_plain_1ms_async_batch1",
                t(1, Work::Async1ms, Kind::Redis, Kind::Plain),
                ">=",
                0.97,
            ),
            (
                "redis_vs_reference_trivial_batch32",
                t(32, Work::Trivial, Kind::Redis, Kind::Reference),
                ">=",
                2.5,
            ),
            (
                "redis_vs_plain_1ms_blocking_batch32",
                t(32, Work::Sleep1ms, Kind::Redis, Kind::Plain),
                ">=",
                0.97,
            ),
            (
                "redis_vs_plain_trivial_batch32",
                t(32, Work::Trivial, Kind::Redis, Kind::Plain),
                ">=",
                0.85,
            ),
            (
                "redis_vs_plain_trivial_batch1",
                t(1, Work::Trivial, Kind::Redis, Kind::Plain),
                ">=",
                0.60,
            ),
            (
                "redis_round_trips_per_message_batch1",
                single(
                    self.metric((0, 1, Work::Trivial, Kind::Redis), "redis_round_trips")
                        / self.backlog as f64,
                ),
                "<=",
                1.0,
            ),
            (
                "redis_round_trips_fresh_batch",
                single(self.round_trips.0 as f64),
                "<=",
                2.0,
            ),
            (
                "redis_round_trips_duplicate_batch",
                single(self.round_trips.1 as f64),
                "=",
                1.0,
            ),
            (
                "redis_vs_previous_commit_trivial_batch1",
                t(1, Work::Trivial, Kind::Redis, Kind::Previous),
                ">=",
                0.95,
            ),
            (
                "redis_vs_previous_commit_1ms_batch1",
                t(1, Work::Sleep1ms, Kind::Redis, Kind::Previous),
                ">=",
                0.95,
            ),
            (
                "redis_vs_previous_commit_trivial_batch32",
                t(32, Work::Trivial, Kind::Redis, Kind::Previous),
                ">=",
                0.95,
            ),
            (
                "redis_vs_previous_commit_1ms_batch32",
                t(32, Work::Sleep1ms, Kind::Redis, Kind::Previous),
                ">=",
                0.95,
            ),
            ("redis_bytes_per_record", single(bytes.hashed), "<=", 20.0),
            (
                "redis_slowest_commit_ms_1e6_fields",
                single(self.slowest_commit.slowest_ms),
                "<=",
                2.0,
            ),
            (
                "redis_bytes_after_burst_vs_steady",
                single(self.burst.healed_bytes / self.burst.steady_bytes),
                "<=",
                1.2,
            ),
            (
                "redis_bytes_vs_one_key_layout",
                single(bytes.hashed / bytes.one_key),
                "<=",
                0.2,
            ),
            (
                "redis_claims_loaded_vs_empty",
                bytes.claims.ratio,
                ">=",
                0.9,
            ),
            (
                "memory_store_bytes_per_record",
                single(self.memory_store_bytes_per_record),
                "<=",
                48.0,
            ),
            (
                "consumer_rss_redis_vs_plain",
                single(rss(Kind::Redis) / rss(Kind::Plain)),
                "<=",
                1.1,
            ),
        ];
        let mut json_figures = Vec::new();
        for (store, against) in [
            (Kind::Mysql, Kind::Plain),
            (Kind::Inbox, Kind::Plain),
            (Kind::Mysql, Kind::Redis),
            (Kind::Inbox, Kind::Redis),
            (Kind::Cluster, Kind::Plain),
            (Kind::Cluster, Kind::Redis),
            (Kind::Redis, Kind::RedisSyncCommit),
            (Kind::Redis, Kind::RedisNoNearCache),
            (Kind::Redis, Kind::RedisMultiplexed),
            (Kind::Redis, Kind::RedisNoLinger),
            (Kind::Redis, Kind::RedisScriptClaims),
            (Kind::Redis, Kind::RedisJavaKeys),
            (Kind::Redis, Kind::Previous),
            (Kind::Redis, Kind::Reference),
            (Kind::Redis, Kind::Floor),
            (Kind::Floor, Kind::Reference),
            (Kind::Floor, Kind::Plain),
        ] {
            for (batch, work) in [
                (1, Work::Trivial),
                (1, Work::TrivialBlocking),
                (1, Work::Sleep1ms),
                (1, Work::Async1ms),
                (1, Work::Cpu),
                (32, Work::Trivial),
                (32, Work::TrivialBlocking),
                (32, Work::Sleep1ms),
            ] {
                let figure = format!(
                    "{}_vs_{}_{}_batch{batch}",
                    name(store),
                    name(against),
                    work_name(work)
                );
                let value = self.tput_ratio(batch, work, store, against);
                if value.median.is_nan() {
                    continue; // a listener left out of this run (`--listeners`)
                }
                println!("figure {figure} = {:.3} ({})", value.median, value.range());
                json_figures.push(serde_json::json!({"name": figure, "value": value.median, "min": value.min, "max": value.max, "runs": value.runs}));
            }
        }
        // The Redis/plain throughput ratio the machine's CPU allows, trivial handler: plain's
        // machine CPU per message over Redis's (listener, client and Redis server included).
        // Where the cores are the bottleneck, the Redis listener cannot do better than this at
        // its measured cost.
        for batch in [1u32, 32] {
            let machine =
                |kind| self.metric((0, batch, Work::Trivial, kind), "machine_cpu_us_per_msg");
            let value = machine(Kind::Plain) / machine(Kind::Redis);
            if !value.is_nan() {
                let figure = format!("redis_vs_plain_trivial_batch{batch}_machine_cpu");
                println!("figure {figure} = {value:.3}");
                json_figures.push(serde_json::json!({"name": figure, "value": value}));
            }
        }
        let mut json_ratios = Vec::new();
        for (ratio, spread, op, target) in ratios {
            let value = spread.median;
            let pass = match op {
                ">=" => value >= target,
                "<=" => value <= target,
                _ => (value - target).abs() < 1e-9,
            };
            let verdict = match value.is_nan() {
                true => "not measured (a listener or scenario left out with --listeners or --only)",
                false if pass => "PASS",
                false => "FAIL",
            };
            let range = match spread.runs > 1 {
                true => format!(" ({})", spread.range()),
                false => String::new(),
            };
            println!("ratio {ratio} = {value:.4}{range} (target {op} {target}) {verdict}");
            json_ratios.push(serde_json::json!({"name": ratio, "value": value, "min": spread.min, "max": spread.max, "runs": spread.runs, "op": op, "target": target, "pass": pass}));
        }
        serde_json::json!({
            "backlog": self.backlog,
            "repetitions": self.reps,
            "scenarios": rows,
            "redis_round_trips": {"fresh_batch_32": self.round_trips.0, "duplicate_batch_32": self.round_trips.1},
            "cluster_round_trips": {"fresh_batch_32": self.cluster_round_trips.0, "duplicate_batch_32": self.cluster_round_trips.1},
            "redis_bytes_per_record": {"records": bytes.records, "hashed": bytes.hashed, "one_key": bytes.one_key, "reference_layout": bytes.reference},
            "redis_claims_per_s": {"records_hashes": bytes.claims.json(), "one_key": bytes.one_key_claims.json()},
            "redis_slowest_commit": {"fields": self.slowest_commit.fields, "commits": self.slowest_commit.commits, "slowest_ms": self.slowest_commit.slowest_ms, "median_ms": self.slowest_commit.median_ms},
            "redis_burst": {"rate": self.burst.rate, "record_ttl_s": self.burst.record_ttl.as_secs_f64(), "steady_bytes_per_live_record": self.burst.steady_bytes, "healed_bytes_per_live_record": self.burst.healed_bytes, "steady_hash_bytes_per_live_record": self.burst.steady_hash_bytes, "healed_hash_bytes_per_live_record": self.burst.healed_hash_bytes, "healing_s": self.burst.healing.as_secs_f64(), "series": self.burst.series.iter().map(|s| serde_json::json!({"after_s": s.after_s, "bytes": s.bytes, "hash_bytes": s.hash_bytes, "hashtables": s.hashtables, "fields": s.fields})).collect::<Vec<_>>()},
            "memory_store_bytes_per_record": self.memory_store_bytes_per_record,
            "engine_cpu_us_per_message": {"batch_1": self.engine_us.0, "batch_32": self.engine_us.1},
            "ratios": json_ratios,
            "figures": json_figures,
        })
    }
}

#[cfg(test)]
mod tests {
    /// `INFO cpu` as redis-server 7.0.15 answered it (lines end in CRLF), but for
    /// `used_cpu_user`, raised from the recorded 0.000000 so that the sum shows both fields.
    const INFO_CPU: &str = "# CPU\r\nused_cpu_sys:0.002977\r\nused_cpu_user:0.001500\r\nused_cpu_sys_children:0.000000\r\nused_cpu_user_children:0.000000\r\nused_cpu_sys_main_thread:0.002890\r\nused_cpu_user_main_thread:0.000000\r\n";

    #[test]
    fn cpu_seconds_add_the_servers_system_and_user_time_not_its_childrens() {
        let seconds = super::cpu_seconds_in_info(INFO_CPU).unwrap();
        assert!((seconds - 0.004477).abs() < 1e-9, "{seconds}");
    }

    #[test]
    fn an_answer_without_cpu_times_is_an_error() {
        let err = super::cpu_seconds_in_info("# Server\r\nredis_version:7.0.15\r\n").unwrap_err();
        assert!(err.to_string().contains("used_cpu_sys"), "{err}");
    }
}
