//! The batch-1 hot path without a broker: consume threads of our own call each listener's
//! `consume_message` with one fresh message at a time (or `--batch` of them) against a real
//! Redis server, as the
//! client's consume threads would. With no broker and no client sharing the cores, what is
//! left is the listener's own path to Redis (ours, the floor's, the Java algorithm's), so a
//! change to the store's hot path shows here within seconds. Rounds interleave the listeners.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rocketmq_client_rust::{ConsumeConcurrentlyContext, MessageListenerConcurrently};
use rocketmq_dedup::store::{MemoryStore, RedisStore, RedisStoreBuilder};
use rocketmq_dedup::testing::message;
use rocketmq_dedup::{handler_fn, DedupConcurrentListener, DedupHandler, HandlerError};
use rocketmq_model::common::message::message_ext::MessageExt;

use crate::reference::{FloorListener, ReferenceListener};
use crate::{Kind, Work};

struct AsyncTrivial;

impl DedupHandler for AsyncTrivial {
    async fn handle(&self, _msg: &MessageExt) -> Result<(), HandlerError> {
        Ok(())
    }
}

/// One listener's round: messages per second over all threads, and per message the CPU of
/// this process and of the Redis server (on a machine with few cores, both are throughput).
#[derive(Debug, Clone, Copy)]
pub struct Round {
    pub msgs_per_s: f64,
    pub cpu_us_per_msg: f64,
    pub server_cpu_us_per_msg: f64,
}

/// Builds `kind`'s listener over the Redis server at `url`; the Redis kinds with
/// `commit_linger` instead of the default, when given.
async fn listener(
    kind: Kind,
    work: Work,
    url: &str,
    commit_linger: Option<Duration>,
) -> anyhow::Result<Box<dyn MessageListenerConcurrently>> {
    let trips = Arc::new(AtomicU64::new(0));
    let store = |builder: RedisStoreBuilder| async move {
        let store: RedisStore = builder.connect().await?;
        Ok::<_, anyhow::Error>(Arc::new(store) as Arc<dyn rocketmq_dedup::DedupStore>)
    };
    Ok(match kind {
        Kind::Floor => Box::new(FloorListener {
            client: redis::Client::open(url)?,
            work,
            runtime: tokio::runtime::Handle::current(),
            round_trips: trips,
        }),
        Kind::FloorWithCommit => Box::new(crate::reference::FloorWithCommit {
            client: redis::Client::open(url)?,
            work,
            runtime: tokio::runtime::Handle::current(),
            round_trips: trips,
        }),
        Kind::Reference => Box::new(ReferenceListener {
            client: redis::Client::open(url)?,
            app: "hot-path".into(),
            work,
            runtime: tokio::runtime::Handle::current(),
            round_trips: trips,
        }),
        Kind::Memory
        | Kind::Redis
        | Kind::RedisNoLinger
        | Kind::RedisMultiplexed
        | Kind::RedisScriptClaims
        | Kind::RedisJavaKeys
        | Kind::RedisSyncCommit => {
            let store = match kind {
                // The listener's own cost: a store that answers at once, on no network.
                Kind::Memory => Arc::new(MemoryStore::new()) as Arc<dyn rocketmq_dedup::DedupStore>,
                _ => {
                    let mut builder = RedisStore::builder(url);
                    if kind == Kind::RedisNoLinger {
                        builder = builder.commit_linger(Duration::ZERO);
                    }
                    if let Some(linger) = commit_linger {
                        builder = builder.commit_linger(linger);
                    }
                    if kind == Kind::RedisMultiplexed {
                        builder = builder.consume_thread_connections(0);
                    }
                    builder = builder.script_claims(kind == Kind::RedisScriptClaims);
                    match kind {
                        Kind::RedisJavaKeys => Arc::new(rocketmq_dedup::store::JavaKeys::new(
                            builder.connect().await?,
                        )),
                        _ => store(builder).await?,
                    }
                }
            };
            let sync = kind == Kind::RedisSyncCommit;
            match work.is_blocking() {
                true => Box::new(
                    DedupConcurrentListener::builder(handler_fn(move |_: &MessageExt| {
                        work.run_blocking();
                        Ok(())
                    }))
                    .namespace("hot-path")
                    .shared_store(store)
                    .ack_before_commit(!sync)
                    .build()?,
                ),
                false => Box::new(
                    DedupConcurrentListener::builder(AsyncTrivial)
                        .namespace("hot-path")
                        .shared_store(store)
                        .ack_before_commit(!sync)
                        .build()?,
                ),
            }
        }
        other => anyhow::bail!(
            "the hot path measures floor, reference, memory and the redis kinds, not {other:?}"
        ),
    })
}

/// Each of `threads` threads consumes `per_thread` fresh messages, `batch` a call; `server` is
/// a connection to the Redis server, whose CPU time is read before and after.
fn round(
    listener: &dyn MessageListenerConcurrently,
    (threads, per_thread, batch): (usize, usize, usize),
    tag: &str,
    server: &mut redis::Connection,
) -> anyhow::Result<Round> {
    let msgs: Vec<Vec<MessageExt>> = (0..threads)
        .map(|t| {
            (0..per_thread)
                .map(|i| {
                    message("HotPath")
                        .uniq_key(&format!("{tag}{t:04X}{i:016X}"))
                        .build()
                })
                .collect()
        })
        .collect();
    let context = ConsumeConcurrentlyContext::new(Default::default());
    let server_before = server_cpu_seconds(server)?;
    let before = crate::cpu_time();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for chunk in &msgs {
            let context = &context;
            scope.spawn(move || {
                for msgs in chunk.chunks(batch.max(1)) {
                    let msgs: Vec<&MessageExt> = msgs.iter().collect();
                    let _ = listener.consume_message(&msgs, context);
                }
            });
        }
    });
    let secs = started.elapsed().as_secs_f64();
    let n = (threads * per_thread) as f64;
    let cpu = crate::cpu_time().saturating_sub(before);
    let server_cpu = server_cpu_seconds(server)? - server_before;
    Ok(Round {
        msgs_per_s: n / secs,
        cpu_us_per_msg: cpu.as_secs_f64() * 1e6 / n,
        server_cpu_us_per_msg: server_cpu * 1e6 / n,
    })
}

/// The Redis server's CPU time so far, in seconds.
fn server_cpu_seconds(conn: &mut redis::Connection) -> anyhow::Result<f64> {
    let info: String = redis::cmd("INFO").arg("cpu").query(conn)?;
    crate::measure::cpu_seconds_in_info(&info)
}

/// `rounds` interleaved rounds of every kind in `kinds`; one `Round` per kind and round.
pub async fn measure(
    url: &str,
    kinds: &[Kind],
    work: Work,
    (threads, messages, rounds, batch): (usize, usize, usize, usize),
    commit_linger: Option<Duration>,
) -> anyhow::Result<Vec<(Kind, Vec<Round>)>> {
    let mut listeners = Vec::new();
    for &kind in kinds {
        listeners.push((kind, listener(kind, work, url, commit_linger).await?));
    }
    let mut results: Vec<(Kind, Vec<Round>)> = kinds.iter().map(|&k| (k, Vec::new())).collect();
    let per_thread = messages / threads.max(1);
    let mut server = redis::Client::open(url)?.get_connection()?;
    for r in 0..rounds {
        for (i, (kind, listener)) in listeners.iter().enumerate() {
            let tag = format!("{:02X}{r:04X}", *kind as u8);
            let listener = listener.as_ref();
            let result = tokio::task::block_in_place(|| {
                round(listener, (threads, per_thread, batch), &tag, &mut server)
            })?;
            results[i].1.push(result);
        }
    }
    Ok(results)
}
