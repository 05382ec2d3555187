//! The records hash at scale, as the Redis server sees it: the slowest commit against a hash of
//! 10^6 fields (`SLOWLOG`, the server's own timing of each script call), and Redis memory per
//! live record (`used_memory`) at a steady rate, then after a burst of 20 times that rate.

use std::time::{Duration, Instant};

use anyhow::Context;
use redis::aio::ConnectionLike;
use rocketmq_dedup::record_key::{KeyParts, RecordKey};
use rocketmq_dedup::store::{DedupStore, OwnerToken, RedisStore};
use rocketmq_dedup::testing::RedisStoreProbe;
use rocketmq_dedup::StoreOperation;
use rocketmq_dedup_testkit::RedisServer;

/// The slowest commit a store made against one records hash of `fields` fields.
#[derive(Debug, Clone, Copy)]
pub struct SlowestCommit {
    pub fields: u64,
    /// Commit script calls timed (one per key).
    pub commits: usize,
    pub slowest_ms: f64,
    pub median_ms: f64,
}

/// Memory per live record at a steady rate and after a burst, over time.
#[derive(Debug, Clone)]
pub struct Burst {
    /// Records committed a second, steadily.
    pub rate: u64,
    /// Records committed a second during the burst (20 times the rate asked for).
    pub burst_rate: f64,
    pub record_ttl: Duration,
    /// `used_memory` per live record at the steady rate.
    pub steady_bytes: f64,
    /// The same `healing` after the burst ended.
    pub healed_bytes: f64,
    /// The records hashes' own bytes (`MEMORY USAGE`, summed) per live record, steady and
    /// healed: the part of `used_memory` the layout decides.
    pub steady_hash_bytes: f64,
    pub healed_hash_bytes: f64,
    pub healing: Duration,
    /// A sample a second after the burst ended.
    pub series: Vec<Sample>,
}

/// Redis memory at one moment of the burst run.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Seconds after the burst ended.
    pub after_s: f64,
    /// `used_memory` (without the clients' buffers) per live record.
    pub bytes: f64,
    /// The records hashes' `MEMORY USAGE` per live record.
    pub hash_bytes: f64,
    /// Records hashes in the hashtable encoding.
    pub hashtables: u64,
    /// Fields the records hashes hold (live, dead not swept yet, and each hash's two).
    pub fields: u64,
}

impl SlowestCommit {
    pub fn print(&self) {
        println!(
            "redis commits against one records hash of {} fields: slowest {:.3} ms, median {:.3} ms over {} commit script calls (SLOWLOG)",
            self.fields, self.slowest_ms, self.median_ms, self.commits
        );
    }
}

impl Burst {
    pub fn print(&self) {
        let series: Vec<String> = self
            .series
            .iter()
            .map(|s| {
                format!(
                    "{:.0}s {:.1} (hashes {:.1}; {} hashtables, {} fields)",
                    s.after_s, s.bytes, s.hash_bytes, s.hashtables, s.fields
                )
            })
            .collect();
        println!(
            "redis bytes per live record (used_memory), record TTL {:?}, {} records/s: steady {:.1} (the records hashes' own {:.1}); after a burst of half a record TTL at {:.0} records/s, {:?} after it ended {:.1} ({:.3} of steady; the records hashes' own {:.1}, {:.3} of steady); by second after the burst: {}",
            self.record_ttl,
            self.rate,
            self.steady_bytes,
            self.steady_hash_bytes,
            self.burst_rate,
            self.healing,
            self.healed_bytes,
            self.healed_bytes / self.steady_bytes,
            self.healed_hash_bytes,
            self.healed_hash_bytes / self.steady_hash_bytes,
            series.join(", ")
        );
    }
}

fn key(group: &str, i: usize) -> RecordKey {
    RecordKey::new(KeyParts {
        prefix: "dedup",
        namespace: group,
        topic: "BenchScale",
        tag: None,
        key: &format!("{i:016x}"),
    })
}

async fn query<T: redis::FromRedisValue>(
    conn: &mut impl ConnectionLike,
    cmd: &redis::Cmd,
) -> anyhow::Result<T> {
    let value = conn.req_packed_command(cmd).await?;
    Ok(redis::from_redis_value(value)?)
}

/// Builds one records hash of `fields` fields, half live and half dead (stamps five units
/// ahead and behind), with a sweep pass due (its sweep state); then `commits` keys committed through `store`
/// (batches of 16), and the server's timing of each commit script call from `SLOWLOG`.
pub async fn slowest_commit(
    redis: &RedisServer,
    fields: u64,
    commits: usize,
) -> anyhow::Result<SlowestCommit> {
    flush(redis)?;
    let store = RedisStore::builder(redis.url())
        .record_ttl(Duration::from_secs(60))
        .expected_rate(0)
        .connect()
        .await?;
    let mut conn = store.connection();
    let hash = "dedup:bench-scale:BenchScale::{0}:r";
    let build = r"
local t = redis.call('TIME')
local unit = math.floor((tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)) / 7500)
if ARGV[1] == '0' then
  redis.call('HSET', KEYS[1], '', '7500,1', '~', unit - 1)
  redis.call('PEXPIRE', KEYS[1], 3600000)
end
local batch = {}
for i = tonumber(ARGV[1]), tonumber(ARGV[2]) - 1 do
  batch[#batch + 1] = string.format('%012d', i)
  batch[#batch + 1] = (unit + (i % 2 == 0 and 5 or -5)) % 128
  if #batch == 2000 then
    redis.call('HSET', KEYS[1], unpack(batch))
    batch = {}
  end
end
if #batch > 0 then redis.call('HSET', KEYS[1], unpack(batch)) end
return redis.call('HLEN', KEYS[1])
";
    for start in (0..fields).step_by(100_000) {
        let end = (start + 100_000).min(fields);
        let _: u64 = query(
            &mut conn,
            redis::cmd("EVAL")
                .arg(build)
                .arg(1)
                .arg(hash)
                .arg(start)
                .arg(end),
        )
        .await
        .context("building the records hash")?;
    }
    // The build's ten scripts left a million strings of garbage in the server's Lua heap, whose
    // collection and string-table shrink would land in whichever script runs next: a fresh Lua
    // state, as a server that never ran them has (the store loads its scripts again).
    let () = query(&mut conn, redis::cmd("SCRIPT").arg("FLUSH")).await?;
    set_slowlog(&mut conn, 0, 1_000_000).await?;
    let token = OwnerToken::random();
    let keys: Vec<RecordKey> = (0..commits).map(|i| key("bench-scale", i)).collect();
    for chunk in keys.chunks(16) {
        store.claim(chunk, token, Duration::from_secs(60)).await?;
        store.commit(chunk, token, Duration::from_secs(60)).await?;
    }
    let entries: Vec<redis::Value> =
        query(&mut conn, redis::cmd("SLOWLOG").arg("GET").arg(-1)).await?;
    let commit_sha = redis::Script::new(
        RedisStore::script_source(StoreOperation::Commit).context("the commit script")?,
    )
    .get_hash()
    .to_owned();
    let mut micros: Vec<u64> = Vec::new();
    for entry in entries {
        // [id, unix time, duration us, [args…], client address, client name]
        let redis::Value::Array(parts) = entry else {
            continue;
        };
        let (Some(duration), Some(args)) = (parts.get(2), parts.get(3)) else {
            continue;
        };
        // The arguments are bytes (a record's field is not text).
        let args: Vec<Vec<u8>> = redis::from_redis_value(args.clone()).unwrap_or_default();
        if args.first().map(Vec::as_slice) == Some(&b"EVALSHA"[..])
            && args.get(1).map(Vec::as_slice) == Some(commit_sha.as_bytes())
        {
            micros.push(redis::from_redis_value(duration.clone())?);
        }
    }
    // The server's defaults again, and the entries gone: they are memory, not records.
    set_slowlog(&mut conn, 10_000, 128).await?;
    anyhow::ensure!(
        micros.len() >= commits / 2,
        "SLOWLOG kept {} of {commits} commits",
        micros.len()
    );
    // SLOWLOG lists the newest first.
    micros.reverse();
    if let Some((at, _)) = micros.iter().enumerate().max_by_key(|(_, us)| **us) {
        let around: Vec<u64> = micros[at.saturating_sub(3)..(at + 4).min(micros.len())].to_vec();
        let mut top = micros.clone();
        top.sort_unstable();
        eprintln!(
            "bench: slowest commit is call {at} of {}, around it (us): {around:?}; the slowest five: {:?}",
            micros.len(),
            &top[top.len().saturating_sub(5)..]
        );
    }
    micros.sort_unstable();
    let result = SlowestCommit {
        fields,
        commits: micros.len(),
        slowest_ms: *micros.last().unwrap_or(&0) as f64 / 1000.0,
        median_ms: micros[micros.len() / 2] as f64 / 1000.0,
    };
    flush(redis)?;
    Ok(result)
}

/// Prints `ratio <name> = <median> (range <lo>..<hi> over <n> runs, target <op> <target>)
/// PASS|FAIL`.
pub fn print_ratio(name: &str, mut values: Vec<f64>, op: &str, target: f64) {
    values.sort_by(f64::total_cmp);
    let median = values[values.len() / 2];
    let pass = match op {
        "<=" => median <= target,
        _ => median >= target,
    };
    println!(
        "ratio {name} = {median:.3} (range {:.3}..{:.3} over {} runs, target {op} {target}) {}",
        values[0],
        values[values.len() - 1],
        values.len(),
        if pass { "PASS" } else { "FAIL" }
    );
}

/// `used_memory` without the clients' buffers (`mem_clients_normal`): what the server holds
/// for the data. A burst sent as concurrent batches grows the connection's query and reply
/// buffers, which Redis shrinks when it gets to it; they belong to the connection, not to the
/// records, and would be there in any layout.
fn records_memory(redis: &RedisServer) -> anyhow::Result<u64> {
    let info = redis.command(&["INFO", "memory"])?;
    let field = |name: &str| -> anyhow::Result<u64> {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no {name} in INFO: {info}"))
    };
    Ok(field("used_memory")?.saturating_sub(field("mem_clients_normal")?))
}

/// How many records hashes are in the hashtable encoding, how many fields they hold and their
/// `MEMORY USAGE` in bytes (the bench's Redis holds one group).
fn hashtables(redis: &RedisServer) -> anyhow::Result<(u64, u64, u64)> {
    let count = "local n, f, b = 0, 0, 0 \
        for _, k in ipairs(redis.call('KEYS', '*:r')) do \
          if redis.call('OBJECT', 'ENCODING', k) == 'hashtable' then n = n + 1 end \
          f = f + redis.call('HLEN', k) \
          b = b + redis.call('MEMORY', 'USAGE', k, 'SAMPLES', 0) \
        end \
        return n .. ' ' .. f .. ' ' .. b";
    let answer = redis.command(&["EVAL", count, "0"])?;
    let numbers: Vec<u64> = answer
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split(' ')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    match numbers[..] {
        [hashtables, fields, bytes] => Ok((hashtables, fields, bytes)),
        _ => anyhow::bail!("counting hashtables: {answer:?}"),
    }
}

/// Commits `n` fresh keys (from `*next`) in batches of up to 500, sent concurrently.
async fn commit_fresh(
    store: &RedisStore,
    next: &mut usize,
    n: usize,
    ttl: Duration,
) -> anyhow::Result<()> {
    let token = OwnerToken::random();
    let keys: Vec<RecordKey> = (*next..*next + n).map(|i| key("bench-burst", i)).collect();
    *next += n;
    let batches = keys.chunks(500).map(|chunk| async move {
        store.claim(chunk, token, Duration::from_secs(60)).await?;
        store.commit(chunk, token, ttl).await?;
        Ok::<(), anyhow::Error>(())
    });
    for done in futures::future::join_all(batches).await {
        done?;
    }
    Ok(())
}

/// Commits fresh keys at `rate` a second for `span` (as many as are due every 20 ms, so a
/// slow round catches up); calls `sample` with the time since the phase began after each
/// round. Answers the rate reached.
async fn commit_at<F>(
    store: &RedisStore,
    (next, committed): (&mut usize, &mut Vec<(Instant, usize)>),
    (rate, span, ttl): (u64, Duration, Duration),
    mut sample: F,
) -> anyhow::Result<f64>
where
    F: FnMut(Duration, &[(Instant, usize)]) -> anyhow::Result<()>,
{
    let began = Instant::now();
    let mut sent = 0usize;
    while began.elapsed() < span {
        let due = (rate as f64 * began.elapsed().as_secs_f64()) as usize;
        if due > sent {
            commit_fresh(store, next, due - sent, ttl).await?;
            committed.push((Instant::now(), due - sent));
            sent = due;
        }
        sample(began.elapsed(), committed)?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(sent as f64 / began.elapsed().as_secs_f64())
}

/// `used_memory` per live record at `rate` records a second (record TTL `ttl`, the shards
/// sized for `rate`), then after half a record TTL at 20 times the rate, while the rate goes
/// on: sampled a second for `ttl` and 6 units after the burst. Live records: those committed
/// within the last record TTL.
pub async fn burst(redis: &RedisServer, rate: u64, ttl: Duration) -> anyhow::Result<Burst> {
    flush(redis)?;
    // The multiplexed connection only: batches go concurrently.
    let store = RedisStore::builder(redis.url())
        .record_ttl(ttl)
        .expected_rate(rate)
        .consume_thread_connections(0)
        .connect()
        .await?;
    let unit = ttl / 8;
    // The layout key, and nothing else, before the baseline; no slow log kept meanwhile (its
    // entries, commands of a loaded moment, are memory that is not records).
    commit_fresh(&store, &mut 0, 1, Duration::from_millis(1)).await?;
    redis.command(&["CONFIG", "SET", "slowlog-log-slower-than", "-1"])?;
    let _ = redis.command(&["SLOWLOG", "RESET"]);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let base = records_memory(redis)?;
    let (mut next, mut committed) = (1, Vec::new());
    let sample_at = |after_s: f64, committed: &[(Instant, usize)]| -> anyhow::Result<Sample> {
        let live: usize = committed
            .iter()
            .filter(|(at, _)| at.elapsed() < ttl)
            .map(|(_, n)| n)
            .sum();
        let live = live.max(1) as f64;
        let used = records_memory(redis)?;
        let (hashtables, fields, hash_bytes) = hashtables(redis)?;
        Ok(Sample {
            after_s,
            bytes: used.saturating_sub(base) as f64 / live,
            hash_bytes: hash_bytes as f64 / live,
            hashtables,
            fields,
        })
    };
    // Steady: a record TTL and three units, so that records die and sweeps run as they will.
    let state = (&mut next, &mut committed);
    commit_at(&store, state, (rate, ttl + unit * 3, ttl), |_, _| Ok(())).await?;
    let steady = sample_at(0.0, &committed)?;
    // Half a record TTL at 20 times the rate: five times the records the hashes are sized
    // for, so that they become hashtables.
    let state = (&mut next, &mut committed);
    let burst_rate = commit_at(&store, state, (rate * 20, ttl / 2, ttl), |_, _| Ok(())).await?;
    let healing = ttl + unit * 3;
    let mut series: Vec<Sample> = Vec::new();
    let mut healed: Option<Sample> = None;
    let state = (&mut next, &mut committed);
    commit_at(
        &store,
        state,
        (rate, ttl + unit * 6, ttl),
        |since, committed| {
            let whole = since.as_secs();
            if series.last().is_none_or(|s| (s.after_s as u64) < whole) && whole > 0 {
                let sample = sample_at(since.as_secs_f64(), committed)?;
                series.push(sample);
                if healed.is_none() && since >= healing {
                    healed = Some(sample);
                }
            }
            Ok(())
        },
    )
    .await?;
    redis.command(&["CONFIG", "SET", "slowlog-log-slower-than", "10000"])?;
    let healed = healed.context("the run ended before the healing time")?;
    flush(redis)?;
    Ok(Burst {
        rate,
        burst_rate,
        record_ttl: ttl,
        steady_bytes: steady.bytes,
        healed_bytes: healed.bytes,
        steady_hash_bytes: steady.hash_bytes,
        healed_hash_bytes: healed.hash_bytes,
        healing,
        series,
    })
}

/// Empties the server, waiting out a flush longer than the testkit's command timeout.
pub(crate) fn flush(redis: &RedisServer) -> anyhow::Result<()> {
    let _ = redis.command(&["FLUSHALL", "SYNC"]);
    for _ in 0..120 {
        if let Ok(size) = redis.command(&["DBSIZE"]) {
            if size.trim() == ":0" {
                return Ok(());
            }
            let _ = redis.command(&["FLUSHALL", "SYNC"]);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    anyhow::bail!("the Redis server was not emptied within a minute")
}

/// Sets the slow log's threshold (us) and length, and empties it.
async fn set_slowlog(
    conn: &mut impl ConnectionLike,
    slower_than_us: u64,
    max_len: u64,
) -> anyhow::Result<()> {
    for (name, value) in [
        ("slowlog-log-slower-than", slower_than_us),
        ("slowlog-max-len", max_len),
    ] {
        let () = query(conn, redis::cmd("CONFIG").arg("SET").arg(name).arg(value)).await?;
    }
    let () = query(conn, redis::cmd("SLOWLOG").arg("RESET")).await?;
    Ok(())
}
