//! [`RecordAdmin`] for the Redis store: a record's claim key and its field in the records hash
//! (`GET`, `PTTL`, `HGET`), `DEL` and `HDEL`, and `SCAN` over every master for counts (`HLEN`
//! of each records hash).

use std::time::Duration;

use futures::future::BoxFuture;
use redis::{RedisError, Value};

use super::connection::Lane;
use super::layout::{escaped_group, kind_of, split, KeyKind, Location};
use super::layouts::now_ms;
use super::pipeline::{KeyedCommand, Sent};
use super::scripts::{CONSUMED_KEY_VALUE, UNREADABLE_VALUE};
use super::RedisStore;
use crate::error::{StoreError, StoreOperation};
use crate::record_key::{RecordKey, RecordScope};
use crate::store::admin::{RecordAdmin, RecordCounts, RecordState};

/// Values read per pipeline while counting.
const COUNT_BATCH: usize = 500;

fn failed(e: RedisError) -> StoreError {
    StoreError::backend(StoreOperation::Admin, e)
}

/// What a claim key's value and its `PTTL` say.
fn claim_state(value: Option<Vec<u8>>, pttl_ms: i64) -> Result<RecordState, StoreError> {
    let ttl_left = Duration::from_millis(pttl_ms.max(0) as u64);
    match value.as_deref() {
        None => Ok(RecordState::Absent),
        Some(CONSUMED_KEY_VALUE) => Ok(RecordState::Consumed { ttl_left }),
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

impl RedisStore {
    /// Where `key` lives, if its group has a layout in Redis (none: it never had a record).
    async fn locate_for_admin(&self, key: &RecordKey) -> Result<Option<Location>, StoreError> {
        let (group, _) = split(key.as_str());
        let layout_key = super::layout::layout_key(&escaped_group(group));
        let mut get = redis::cmd("GET");
        get.arg(&layout_key);
        let value = self.send_one(&layout_key, get).await?;
        let Some(text): Option<Vec<u8>> =
            redis::from_redis_value(value).map_err(|e| failed(e.into()))?
        else {
            return Ok(None);
        };
        let layout = super::layouts::decode(&layout_key, &text, StoreOperation::Admin)?;
        Ok(Some(Location::of(key, &layout)))
    }

    async fn send_one(&self, key: &str, cmd: redis::Cmd) -> Result<Value, StoreError> {
        let sent = self.send_admin(vec![KeyedCommand { key, cmd }]).await?;
        sent.answers
            .into_iter()
            .next()
            .ok_or_else(|| corrupt("fewer answers than commands"))?
            .map_err(failed)
    }

    async fn send_admin(&self, commands: Vec<KeyedCommand<'_>>) -> Result<Sent, StoreError> {
        self.conn
            .send(commands, None, Lane::Multiplexed)
            .await
            .map_err(failed)
    }
}

/// An answer as `T`.
fn read<T: redis::FromRedisValue>(
    answer: Option<redis::RedisResult<Value>>,
) -> Result<T, StoreError> {
    let answer = answer.ok_or_else(|| corrupt("fewer answers than commands"))?;
    redis::from_redis_value(answer.map_err(failed)?).map_err(|e| failed(e.into()))
}

impl RecordAdmin for RedisStore {
    /// CONSUMED while the records hash holds the record's field with a live stamp (its time
    /// left: until the stamp's unit), else what its claim key says.
    fn inspect<'a>(&'a self, key: &'a RecordKey) -> BoxFuture<'a, Result<RecordState, StoreError>> {
        Box::pin(async move {
            let Some(at) = self.locate_for_admin(key).await? else {
                return Ok(RecordState::Absent);
            };
            let records = at.records().to_string();
            let mut commands = Vec::with_capacity(3);
            for name in ["GET", "PTTL"] {
                let mut cmd = redis::cmd(name);
                cmd.arg(&at.claim);
                commands.push(KeyedCommand {
                    key: &at.claim,
                    cmd,
                });
            }
            let mut hget = redis::cmd("HGET");
            hget.arg(&records).arg(&at.field[..]);
            commands.push(KeyedCommand {
                key: &records,
                cmd: hget,
            });
            let mut answers = self.send_admin(commands).await?.answers.into_iter();
            let value: Option<Vec<u8>> = read(answers.next())?;
            let pttl: i64 = read(answers.next())?;
            let stamp: Option<Vec<u8>> = read(answers.next())?;
            if let Some(stamp) = stamp {
                let stamp = super::read_stamp(&stamp, StoreOperation::Admin)?;
                if let Some(ttl_left) = at.layout.live_for(stamp, now_ms()) {
                    return Ok(RecordState::Consumed { ttl_left });
                }
            }
            claim_state(value, pttl)
        })
    }

    /// Deletes the claim key and the record's field.
    fn forget<'a>(&'a self, key: &'a RecordKey) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let Some(at) = self.locate_for_admin(key).await? else {
                return Ok(false);
            };
            let records = at.records().to_string();
            let mut del = redis::cmd("DEL");
            del.arg(&at.claim);
            let mut hdel = redis::cmd("HDEL");
            hdel.arg(&records).arg(&at.field[..]);
            let commands = vec![
                KeyedCommand {
                    key: &at.claim,
                    cmd: del,
                },
                KeyedCommand {
                    key: &records,
                    cmd: hdel,
                },
            ];
            let mut deleted = 0;
            for answer in self.send_admin(commands).await?.answers {
                deleted += read::<i64>(Some(answer))?;
            }
            Ok(deleted > 0)
        })
    }

    fn counts<'a>(
        &'a self,
        scope: &'a RecordScope<'a>,
    ) -> BoxFuture<'a, Result<RecordCounts, StoreError>> {
        Box::pin(async move {
            let start = scope.key_start();
            // The record key does not escape a part's '*', '?', '[' and '\': escape them for the pattern.
            let glob = |s: &str| {
                s.chars()
                    .flat_map(|c| match c {
                        '*' | '?' | '[' | ']' | '\\' => vec!['\\', c],
                        c => vec![c],
                    })
                    .collect::<String>()
            };
            let pattern = format!("{}*", glob(&escaped_group(&start)));
            let keys = self.conn.scan(&pattern).await.map_err(failed)?;
            let mut counts = RecordCounts::default();
            // A claim counts when it holds a claim, a records hash by its fields (not the
            // sweep's: one a hash; dead ones its next sweep deletes count too).
            let keys: Vec<(KeyKind, String)> = keys
                .into_iter()
                .map(|k| (kind_of(&k), k))
                .filter(|(kind, _)| *kind != KeyKind::Layout)
                .collect();
            for chunk in keys.chunks(COUNT_BATCH) {
                let commands = chunk
                    .iter()
                    .map(|(kind, k)| {
                        let mut cmd = redis::cmd(match kind {
                            KeyKind::Records => "HLEN",
                            _ => "GET",
                        });
                        cmd.arg(k.as_str());
                        KeyedCommand { key: k, cmd }
                    })
                    .collect();
                let sent = self.send_admin(commands).await?;
                for ((kind, _), answer) in chunk.iter().zip(sent.answers) {
                    match kind {
                        KeyKind::Records => {
                            counts.consumed += read::<u64>(Some(answer))?.saturating_sub(1)
                        }
                        _ => {
                            let value: Option<Vec<u8>> = read(Some(answer))?;
                            match value.as_deref() {
                                Some(CONSUMED_KEY_VALUE) => counts.consumed += 1,
                                Some([b'c', ..]) => counts.consuming += 1,
                                _ => {}
                            }
                        }
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
    fn claim_values_read_as_states() {
        assert_eq!(claim_state(None, -2).unwrap(), RecordState::Absent);
        assert_eq!(
            claim_state(Some(b"cff".to_vec()), 10).unwrap(),
            RecordState::Consuming {
                owner: 255,
                ttl_left: Duration::from_millis(10)
            }
        );
        assert_eq!(
            claim_state(Some(b"1".to_vec()), 1500).unwrap(),
            RecordState::Consumed {
                ttl_left: Duration::from_millis(1500)
            },
            "a record kept in its own key"
        );
        assert!(claim_state(Some(b"2".to_vec()), 1).is_err());
        assert!(claim_state(Some(b"czz".to_vec()), 1).is_err());
        assert_eq!(used_memory("# Memory\r\nused_memory:1234\r\n"), Some(1234));
    }
}
