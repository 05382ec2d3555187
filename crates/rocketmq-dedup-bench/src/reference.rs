//! The Java reference's algorithm (RocketMQDedupListener with its Redis persist), reproduced
//! as the peer to beat: per message, one after another, `SET key CONSUMING NX PX`; on success
//! the handler and then `SET key CONSUMED EX`; on failure `GET key`, ack when CONSUMED, else the
//! whole batch is RECONSUME_LATER. Keys: `MSGDEDUP:{app}:{topic}[:{tag}]:{key}`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use redis::aio::ConnectionManager;
use rocketmq_client_rust::{
    ClientResult, ConsumeConcurrentlyContext, ConsumeConcurrentlyStatus,
    MessageListenerConcurrently,
};
use rocketmq_model::common::message::message_ext::MessageExt;

/// The reference listener.
pub struct ReferenceListener {
    pub conn: ConnectionManager,
    pub handle: tokio::runtime::Handle,
    pub app: String,
    pub work: crate::Work,
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
    async fn consume(&self, msgs: &[&MessageExt]) -> redis::RedisResult<ConsumeConcurrentlyStatus> {
        let mut conn = self.conn.clone();
        for msg in msgs {
            let uniq = rocketmq_dedup::key::unique_id(msg)
                .map(|k| k.value().to_owned())
                .unwrap_or_default();
            let key = reference_key(&self.app, msg.topic().as_str(), msg.tags(), &uniq);
            self.round_trips.fetch_add(1, Ordering::Relaxed);
            let set: Option<String> = redis::cmd("SET")
                .arg(&key)
                .arg("CONSUMING")
                .arg("NX")
                .arg("PX")
                .arg(30_000)
                .query_async(&mut conn)
                .await?;
            if set.is_some() {
                self.work.run();
                self.round_trips.fetch_add(1, Ordering::Relaxed);
                let _: () = redis::cmd("SET")
                    .arg(&key)
                    .arg("CONSUMED")
                    .arg("EX")
                    .arg(24 * 60 * 60)
                    .query_async(&mut conn)
                    .await?;
            } else {
                self.round_trips.fetch_add(1, Ordering::Relaxed);
                let status: Option<String> =
                    redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
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
        let status = tokio::task::block_in_place(|| self.handle.block_on(self.consume(msgs)));
        Ok(status.unwrap_or(ConsumeConcurrentlyStatus::ReconsumeLater))
    }
}
