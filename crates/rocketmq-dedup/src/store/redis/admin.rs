//! [`RecordAdmin`] for the Redis store: a record's value and `PTTL`, `DEL`, and `SCAN` over
//! every master for counts.

use std::time::Duration;

use futures::future::BoxFuture;
use redis::{RedisError, Value};

use super::connection::Lane;
use super::pipeline::KeyedCommand;
use super::scripts::{is_consumed, UNREADABLE_VALUE};
use super::RedisStore;
use crate::error::{StoreError, StoreOperation};
use crate::record_key::{KeyLayout, RecordKey, RecordScope};
use crate::store::admin::{RecordAdmin, RecordCounts, RecordState};

/// Values read per pipeline while counting.
const COUNT_BATCH: usize = 500;

fn failed(e: RedisError) -> StoreError {
    StoreError::backend(StoreOperation::Admin, e)
}

/// What a record's value and its `PTTL` say.
fn state(value: Option<Vec<u8>>, pttl_ms: i64) -> Result<RecordState, StoreError> {
    let ttl_left = Duration::from_millis(pttl_ms.max(0) as u64);
    match value.as_deref() {
        None => Ok(RecordState::Absent),
        Some(v) if is_consumed(v) => Ok(RecordState::Consumed { ttl_left }),
        Some([b'c', hex @ ..]) => {
            let owner = std::str::from_utf8(hex)
                .ok()
                .and_then(|h| u64::from_str_radix(h, 16).ok())
                .ok_or_else(|| corrupt("a claim whose owner token is not hex"))?;
            Ok(RecordState::Consuming { owner, ttl_left })
        }
        Some(_) => Err(corrupt(UNREADABLE_VALUE)),
    }
}

fn corrupt(detail: &str) -> StoreError {
    StoreError::CorruptRecord {
        operation: StoreOperation::Admin,
        detail: detail.to_owned(),
    }
}

/// `used_memory` in an `INFO memory` answer.
fn used_memory(info: &str) -> Option<u64> {
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
}

impl RecordAdmin for RedisStore {
    fn key_layout(&self) -> KeyLayout {
        crate::store::DedupStore::key_layout(self)
    }

    fn inspect<'a>(&'a self, key: &'a RecordKey) -> BoxFuture<'a, Result<RecordState, StoreError>> {
        Box::pin(async move {
            let k = key.as_str();
            let mut get = redis::cmd("GET");
            get.arg(k);
            let mut pttl = redis::cmd("PTTL");
            pttl.arg(k);
            let commands = vec![
                KeyedCommand { key: k, cmd: get },
                KeyedCommand { key: k, cmd: pttl },
            ];
            let sent = self
                .conn
                .send(commands, None, Lane::Multiplexed)
                .await
                .map_err(failed)?;
            let mut answers = sent.answers.into_iter();
            let (Some(value), Some(pttl)) = (answers.next(), answers.next()) else {
                return Err(corrupt("fewer answers than commands"));
            };
            let value: Option<Vec<u8>> =
                redis::from_redis_value(value.map_err(failed)?).map_err(|e| failed(e.into()))?;
            let pttl: i64 =
                redis::from_redis_value(pttl.map_err(failed)?).map_err(|e| failed(e.into()))?;
            state(value, pttl)
        })
    }

    fn forget<'a>(&'a self, key: &'a RecordKey) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut del = redis::cmd("DEL");
            del.arg(key.as_str());
            let commands = vec![KeyedCommand {
                key: key.as_str(),
                cmd: del,
            }];
            let sent = self
                .conn
                .send(commands, None, Lane::Multiplexed)
                .await
                .map_err(failed)?;
            let deleted = sent.answers.into_iter().next().unwrap_or(Ok(Value::Int(0)));
            let deleted: i64 =
                redis::from_redis_value(deleted.map_err(failed)?).map_err(|e| failed(e.into()))?;
            Ok(deleted > 0)
        })
    }

    fn counts<'a>(
        &'a self,
        scope: &'a RecordScope<'a>,
    ) -> BoxFuture<'a, Result<RecordCounts, StoreError>> {
        Box::pin(async move {
            let start = scope.key_start().ok_or_else(|| StoreError::Unsupported {
                operation: StoreOperation::Admin,
                detail: format!(
                    "the {:?} key layout does not keep {}: count one topic (and tag) with the scoped layout, a namespace with the readable one",
                    scope.layout,
                    if scope.topic.is_some() { "the topic" } else { "the namespace" }
                ),
            })?;
            // No layout escapes a part's '*', '?', '[' and '\': escape them for the pattern.
            let glob = |s: &str| {
                s.chars()
                    .flat_map(|c| match c {
                        '*' | '?' | '[' | ']' | '\\' => vec!['\\', c],
                        c => vec![c],
                    })
                    .collect::<String>()
            };
            let pattern = format!("{}*", glob(&start));
            let keys = self.conn.scan(&pattern).await.map_err(failed)?;
            let mut counts = RecordCounts::default();
            for chunk in keys.chunks(COUNT_BATCH) {
                let commands = chunk
                    .iter()
                    .map(|k| {
                        let mut get = redis::cmd("GET");
                        get.arg(k.as_str());
                        KeyedCommand { key: k, cmd: get }
                    })
                    .collect();
                let sent = self
                    .conn
                    .send(commands, None, Lane::Multiplexed)
                    .await
                    .map_err(failed)?;
                for answer in sent.answers {
                    let value: Option<Vec<u8>> = redis::from_redis_value(answer.map_err(failed)?)
                        .map_err(|e| failed(e.into()))?;
                    match value.as_deref() {
                        Some(v) if is_consumed(v) => counts.consumed += 1,
                        Some([b'c', ..]) => counts.consuming += 1,
                        _ => {}
                    }
                }
            }
            let infos = self
                .conn
                .on_each_master(redis::cmd("INFO").arg("memory"))
                .await
                .map_err(failed)?;
            let mut memory = 0;
            for info in infos {
                let info: String = redis::from_redis_value(info).map_err(|e| failed(e.into()))?;
                memory += used_memory(&info).unwrap_or(0);
            }
            counts.memory_bytes = Some(memory);
            Ok(counts)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_as_states() {
        assert_eq!(state(None, -2).unwrap(), RecordState::Absent);
        assert_eq!(
            state(Some(b"1".to_vec()), 1500).unwrap(),
            RecordState::Consumed {
                ttl_left: Duration::from_millis(1500)
            }
        );
        assert_eq!(
            state(Some(b"cff".to_vec()), 10).unwrap(),
            RecordState::Consuming {
                owner: 255,
                ttl_left: Duration::from_millis(10)
            }
        );
        assert!(state(Some(b"CONSUMED".to_vec()), 1).is_err());
        assert!(
            state(Some(b"d".to_vec()), 1).is_err(),
            "no unreleased mark is read"
        );
        assert!(state(Some(b"czz".to_vec()), 1).is_err());
        assert_eq!(used_memory("# Memory\r\nused_memory:1234\r\n"), Some(1234));
    }
}
