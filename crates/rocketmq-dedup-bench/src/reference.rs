//! The peers the Redis store is measured against, written as their users run them: a
//! synchronous client and one blocking Redis connection per consume thread (a Java consumer's
//! Jedis/Lettuce-sync connection per thread), no runtime, no thread hand-off.
//!
//! - [`ReferenceListener`]: the Java library's algorithm (RocketMQDedupListener with its Redis
//!   persist): per message, one after another, `SET key CONSUMING NX PX`; on success the handler
//!   and then `SET key CONSUMED EX`; on failure `GET key`, ack when CONSUMED, else the whole
//!   batch is RECONSUME_LATER. Keys: `MSGDEDUP:{app}:{topic}[:{tag}]:{key}`.
//! - [`FloorListener`]: exactly one blocking `SET key 1 NX PX` per message and nothing else.
//!   Not a correct dedup (nothing is committed, a failed handler is not released), but the least
//!   any store-backed dedup with one round trip per message can cost.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rocketmq_client_rust::{
    ClientResult, ConsumeConcurrentlyContext, ConsumeConcurrentlyStatus,
    MessageListenerConcurrently,
};
use rocketmq_model::common::message::message_ext::MessageExt;

thread_local! {
    /// This consume thread's own blocking connection, opened on its first message.
    static CONNECTION: RefCell<Option<redis::Connection>> = const { RefCell::new(None) };
}

/// Runs `f` on this thread's own blocking connection to `client`; a connection that failed is
/// dropped and opened again on the next call.
fn on_thread_connection<T>(
    client: &redis::Client,
    f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
) -> redis::RedisResult<T> {
    CONNECTION.with(|cell| {
        let mut slot = cell.borrow_mut();
        let conn = match slot.as_mut() {
            Some(conn) => conn,
            None => slot.insert(client.get_connection()?),
        };
        let result = f(conn);
        if result.is_err() {
            *slot = None;
        }
        result
    })
}

/// The message's dedup key as both peers read it: the client unique id.
fn uniq_key(msg: &MessageExt) -> String {
    rocketmq_dedup::unique_id(msg)
        .map(|k| k.value().to_owned())
        .unwrap_or_default()
}

/// The Java library's algorithm; see the module docs.
pub struct ReferenceListener {
    pub client: redis::Client,
    pub app: String,
    pub work: crate::Work,
    /// Where an async handler's future runs.
    pub runtime: tokio::runtime::Handle,
    pub round_trips: Arc<AtomicU64>,
}

/// The reference's record key.
pub fn reference_key(app: &str, topic: &str, tag: Option<&str>, key: &str) -> String {
    match tag.filter(|t| !t.is_empty()) {
        Some(tag) => format!("MSGDEDUP:{app}:{topic}:{tag}:{key}"),
        None => format!("MSGDEDUP:{app}:{topic}:{key}"),
    }
}

impl ReferenceListener {
    fn consume(
        &self,
        conn: &mut redis::Connection,
        msgs: &[&MessageExt],
    ) -> redis::RedisResult<ConsumeConcurrentlyStatus> {
        for msg in msgs {
            let key = reference_key(&self.app, msg.topic().as_str(), msg.tags(), &uniq_key(msg));
            self.round_trips.fetch_add(1, Ordering::Relaxed);
            let set: Option<String> = redis::cmd("SET")
                .arg(&key)
                .arg("CONSUMING")
                .arg("NX")
                .arg("PX")
                .arg(30_000)
                .query(conn)?;
            if set.is_some() {
                self.work.run_on_thread(&self.runtime);
                self.round_trips.fetch_add(1, Ordering::Relaxed);
                let _: () = redis::cmd("SET")
                    .arg(&key)
                    .arg("CONSUMED")
                    .arg("EX")
                    .arg(24 * 60 * 60)
                    .query(conn)?;
            } else {
                self.round_trips.fetch_add(1, Ordering::Relaxed);
                let status: Option<String> = redis::cmd("GET").arg(&key).query(conn)?;
                if status.as_deref() != Some("CONSUMED") {
                    return Ok(ConsumeConcurrentlyStatus::ReconsumeLater);
                }
            }
        }
        Ok(ConsumeConcurrentlyStatus::ConsumeSuccess)
    }
}

impl MessageListenerConcurrently for ReferenceListener {
    fn consume_message(
        &self,
        msgs: &[&MessageExt],
        _context: &ConsumeConcurrentlyContext,
    ) -> ClientResult<ConsumeConcurrentlyStatus> {
        let status = on_thread_connection(&self.client, |conn| self.consume(conn, msgs));
        Ok(status.unwrap_or(ConsumeConcurrentlyStatus::ReconsumeLater))
    }
}

/// One blocking `SET NX PX` per message, then the work; see the module docs.
pub struct FloorListener {
    pub client: redis::Client,
    pub work: crate::Work,
    /// Where an async handler's future runs.
    pub runtime: tokio::runtime::Handle,
    pub round_trips: Arc<AtomicU64>,
}

impl MessageListenerConcurrently for FloorListener {
    fn consume_message(
        &self,
        msgs: &[&MessageExt],
        _context: &ConsumeConcurrentlyContext,
    ) -> ClientResult<ConsumeConcurrentlyStatus> {
        let claimed = on_thread_connection(&self.client, |conn| {
            for msg in msgs {
                self.round_trips.fetch_add(1, Ordering::Relaxed);
                let _: Option<String> = redis::cmd("SET")
                    .arg(format!("floor:{}", uniq_key(msg)))
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(60_000)
                    .query(conn)?;
                self.work.run_on_thread(&self.runtime);
            }
            Ok(())
        });
        Ok(match claimed {
            Ok(()) => ConsumeConcurrentlyStatus::ConsumeSuccess,
            Err(_) => ConsumeConcurrentlyStatus::ReconsumeLater,
        })
    }
}

thread_local! {
    /// The key this thread processed last, whose commit rides its next claim.
    static UNCOMMITTED: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// The commit script the Redis store runs (compare-and-set on the owner).
const COMMIT: &str = r"
local v = redis.call('GET', KEYS[1])
if v == '1' then return 2 end
if v and v ~= ARGV[1] then return 1 end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[2])
return 0
";

/// The least a correct one-round-trip dedup costs: per message one pipeline on the thread's
/// own connection, the previous message's commit script in front of this one's
/// `SET NX PX GET`. Not a usable listener (a thread that goes idle never commits its last
/// key); a bound for the store's hot path.
pub struct FloorWithCommit {
    pub client: redis::Client,
    pub work: crate::Work,
    /// Where an async handler's future runs.
    pub runtime: tokio::runtime::Handle,
    pub round_trips: Arc<AtomicU64>,
}

impl MessageListenerConcurrently for FloorWithCommit {
    fn consume_message(
        &self,
        msgs: &[&MessageExt],
        _context: &ConsumeConcurrentlyContext,
    ) -> ClientResult<ConsumeConcurrentlyStatus> {
        static SCRIPT: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
        let script = SCRIPT.get_or_init(|| redis::Script::new(COMMIT));
        let done = on_thread_connection(&self.client, |conn| {
            for msg in msgs {
                self.round_trips.fetch_add(1, Ordering::Relaxed);
                let key = format!("floorc:{}", uniq_key(msg));
                let mut pipe = redis::pipe();
                if let Some(prev) = UNCOMMITTED.with(|u| u.borrow_mut().take()) {
                    pipe.cmd("EVALSHA")
                        .arg(script.get_hash())
                        .arg(1)
                        .arg(prev)
                        .arg("c1")
                        .arg(86_400_000)
                        .ignore();
                }
                pipe.cmd("SET")
                    .arg(&key)
                    .arg("c1")
                    .arg("NX")
                    .arg("PX")
                    .arg(60_000)
                    .arg("GET");
                let answers: redis::RedisResult<(Option<String>,)> = pipe.query(conn);
                if answers.is_err() {
                    let _: String = redis::cmd("SCRIPT").arg("LOAD").arg(COMMIT).query(conn)?;
                    continue;
                }
                self.work.run_on_thread(&self.runtime);
                UNCOMMITTED.with(|u| *u.borrow_mut() = Some(key));
            }
            Ok(())
        });
        Ok(match done {
            Ok(()) => ConsumeConcurrentlyStatus::ConsumeSuccess,
            Err(_) => ConsumeConcurrentlyStatus::ReconsumeLater,
        })
    }
}
