//! The records hash at scale, as the Redis server sees it: the slowest commit against a hash of
//! 10^6 fields (`SLOWLOG`, the server's own timing of each script call), and Redis memory per
//! live record (`used_memory`) at a steady rate, then after a burst of 20 times that rate.

use std::time::{Duration, Instant};

use anyhow::Context;
use redis::aio::ConnectionLike;
use rocketmq_dedup::record_key::{KeyParts, RecordKey};
use rocketmq_dedup::store::{DedupStore, OwnerToken, RedisStore};
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
    pub healing: Duration,
    /// (seconds after the burst ended, bytes per live record), a sample a second.
    pub series: Vec<(f64, f64)>,
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
            .map(|(s, b)| format!("{s:.0}s {b:.1}"))
            .collect();
        println!(
            "redis bytes per live record (used_memory), record TTL {:?}, {} records/s: steady {:.1}; after a burst of half a record TTL at {:.0} records/s, {:?} after it ended {:.1} ({:.3} of steady); by second after the burst: {}",
            self.record_ttl,
            self.rate,
            self.steady_bytes,
            self.burst_rate,
            self.healing,
            self.healed_bytes,
            self.healed_bytes / self.steady_bytes,
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
    super::measure::flush(redis)?;
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
    for setting in [
        ("slowlog-log-slower-than", "0"),
        ("slowlog-max-len", "1000000"),
    ] {
        let () = query(
            &mut conn,
            redis::cmd("CONFIG")
                .arg("SET")
                .arg(setting.0)
                .arg(setting.1),
        )
        .await?;
    }
    let () = query(&mut conn, redis::cmd("SLOWLOG").arg("RESET")).await?;
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
    let () = query(
        &mut conn,
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("slowlog-log-slower-than")
            .arg("10000"),
    )
    .await?;
    anyhow::ensure!(
        micros.len() >= commits / 2,
        "SLOWLOG kept {} of {commits} commits",
        micros.len()
    );
    micros.sort_unstable();
    let result = SlowestCommit {
        fields,
        commits: micros.len(),
        slowest_ms: *micros.last().unwrap_or(&0) as f64 / 1000.0,
        median_ms: micros[micros.len() / 2] as f64 / 1000.0,
    };
    super::measure::flush(redis)?;
    Ok(result)
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
    super::measure::flush(redis)?;
    // The multiplexed connection only: batches go concurrently.
    let store = RedisStore::builder(redis.url())
        .record_ttl(ttl)
        .expected_rate(rate)
        .consume_thread_connections(0)
        .connect()
        .await?;
    let unit = ttl / 8;
    // The layout key, and nothing else, before the baseline; no slow log kept meanwhile.
    commit_fresh(&store, &mut 0, 1, Duration::from_millis(1)).await?;
    let _ = redis.command(&["SLOWLOG", "RESET"]);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let base = super::measure::used_memory(redis)?;
    let (mut next, mut committed) = (1, Vec::new());
    let bytes_per_live = |committed: &[(Instant, usize)]| -> anyhow::Result<f64> {
        let live: usize = committed
            .iter()
            .filter(|(at, _)| at.elapsed() < ttl)
            .map(|(_, n)| n)
            .sum();
        let used = super::measure::used_memory(redis)?;
        Ok(used.saturating_sub(base) as f64 / live.max(1) as f64)
    };
    // Steady: a record TTL and three units, so that records die and sweeps run as they will.
    let state = (&mut next, &mut committed);
    commit_at(&store, state, (rate, ttl + unit * 3, ttl), |_, _| Ok(())).await?;
    let steady_bytes = bytes_per_live(&committed)?;
    // Half a record TTL at 20 times the rate: five times the records the hashes are sized
    // for, so that they become hashtables.
    let state = (&mut next, &mut committed);
    let burst_rate = commit_at(&store, state, (rate * 20, ttl / 2, ttl), |_, _| Ok(())).await?;
    let healing = ttl + unit * 3;
    let mut series = Vec::new();
    let mut healed_bytes = f64::NAN;
    let state = (&mut next, &mut committed);
    commit_at(
        &store,
        state,
        (rate, ttl + unit * 6, ttl),
        |since, committed| {
            let whole = since.as_secs();
            if series
                .last()
                .is_none_or(|(s, _): &(f64, f64)| (*s as u64) < whole)
                && whole > 0
            {
                let bytes = bytes_per_live(committed)?;
                series.push((since.as_secs_f64(), bytes));
                if healed_bytes.is_nan() && since >= healing {
                    healed_bytes = bytes;
                }
            }
            Ok(())
        },
    )
    .await?;
    super::measure::flush(redis)?;
    Ok(Burst {
        rate,
        burst_rate,
        record_ttl: ttl,
        steady_bytes,
        healed_bytes,
        healing,
        series,
    })
}
