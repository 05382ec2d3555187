//! [`RecordAdmin`] for the Redis store: a record's claim key and its field in the records hash
//! read by the server's clock (`GET`, `PTTL`, `HMGET`, `TIME`), `DEL` and `HDEL`, and `SCAN`
//! over every master for counts (`HLEN` of each records hash).

use std::time::Duration;

use futures::future::BoxFuture;
use redis::{RedisError, Value};

use super::connection::Lane;
use super::layout::{
    escaped_group, kind_of, record_of_claim, split, KeyKind, Location, Meta, Stamp, FIELD_BYTES,
};
use super::layout_cache::LayoutCache;
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
    /// Where `key` lives, if its group has a layout in Redis (its layout key, or the meta field
    /// of its first records hash when the key is gone; neither: it never had a record).
    async fn locate_for_admin(&self, key: &RecordKey) -> Result<Option<Location>, StoreError> {
        let (group, _) = split(key.as_str());
        let layout = LayoutCache::existing(&self.conn, group, StoreOperation::Admin).await?;
        Ok(layout.map(|layout| Location::of(key, &layout)))
    }

    async fn send_admin(&self, commands: Vec<KeyedCommand<'_>>) -> Result<Sent, StoreError> {
        self.conn
            .send(commands, None, Lane::Multiplexed)
            .await
            .map_err(failed)
    }

    /// What `at`'s claim key holds and how long it lives, its record's field and the meta
    /// field of its records hash, and the server's time, in one pipeline; then `extra`
    /// (commands on the same keys, run after the reads).
    async fn read_record(
        &self,
        at: &Location,
        extra: Vec<redis::Cmd>,
    ) -> Result<(Found, Vec<redis::RedisResult<Value>>), StoreError> {
        let records = at.records().to_string();
        let mut get = redis::cmd("GET");
        get.arg(&at.claim);
        let mut pttl = redis::cmd("PTTL");
        pttl.arg(&at.claim);
        let mut hmget = redis::cmd("HMGET");
        hmget.arg(&records).arg(&at.field[..]).arg("");
        let commands = [get, pttl, hmget, redis::cmd("TIME")]
            .into_iter()
            .chain(extra)
            .map(|cmd| KeyedCommand {
                key: &at.claim,
                cmd,
            })
            .collect();
        let mut answers = self.send_admin(commands).await?.answers.into_iter();
        let claim: Option<Vec<u8>> = read(answers.next())?;
        let pttl: i64 = read(answers.next())?;
        let (field, meta): (Option<Vec<u8>>, Option<Vec<u8>>) = match answers.next() {
            // A records hash that is no hash holds no record (its next commit replaces it).
            Some(Err(e)) if e.code() == Some("WRONGTYPE") => (None, None),
            answer => {
                let pair: Vec<Option<Vec<u8>>> = read(answer)?;
                (
                    pair.first().cloned().flatten(),
                    pair.get(1).cloned().flatten(),
                )
            }
        };
        let (secs, micros): (u64, u64) = read(answers.next())?;
        let now_ms = secs * 1000 + micros / 1000;
        let unit_ms = meta
            .as_deref()
            .and_then(Meta::parse)
            .map_or(at.layout.unit_ms, |m| m.layout.unit_ms);
        let live = field
            .as_deref()
            .and_then(Stamp::parse)
            .and_then(|stamp| stamp.live_for(unit_ms, now_ms));
        let found = Found {
            claim: claim_state(claim, pttl)?,
            live,
        };
        Ok((found, answers.collect()))
    }
}

/// What an operator's read of one record found.
struct Found {
    /// What its claim key says.
    claim: RecordState,
    /// How long its field in the records hash is still live, if it is.
    live: Option<Duration>,
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
    /// left: until the stamp's unit, by the server's clock), else what its claim key says.
    fn inspect<'a>(&'a self, key: &'a RecordKey) -> BoxFuture<'a, Result<RecordState, StoreError>> {
        Box::pin(async move {
            let Some(at) = self.locate_for_admin(key).await? else {
                return Ok(RecordState::Absent);
            };
            let (found, _) = self.read_record(&at, Vec::new()).await?;
            Ok(match found.live {
                Some(ttl_left) => RecordState::Consumed { ttl_left },
                None => found.claim,
            })
        })
    }

    /// Deletes the claim key and the record's field; answers whether either held a record
    /// (a claim, or a live field: a field already dead was no record).
    fn forget<'a>(&'a self, key: &'a RecordKey) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let Some(at) = self.locate_for_admin(key).await? else {
                return Ok(false);
            };
            let mut del = redis::cmd("DEL");
            del.arg(&at.claim);
            let mut hdel = redis::cmd("HDEL");
            hdel.arg(at.records()).arg(&at.field[..]);
            let (found, deleted) = self.read_record(&at, vec![del, hdel]).await?;
            for answer in deleted {
                match answer {
                    Err(e) if e.code() == Some("WRONGTYPE") => {}
                    answer => {
                        read::<i64>(Some(answer))?;
                    }
                }
            }
            Ok(found.live.is_some() || found.claim != RecordState::Absent)
        })
    }

    /// Claims that hold a claim (but for those left a moment on a record found CONSUMED, see
    /// [`RedisStore`]), and the fields of the records hashes but their meta fields and sweep states (dead ones
    /// that a sweep has not reached yet count too); and `used_memory`, summed over the masters.
    fn counts<'a>(
        &'a self,
        scope: &'a RecordScope<'a>,
    ) -> BoxFuture<'a, Result<RecordCounts, StoreError>> {
        Box::pin(async move {
            let keys = self.scope_keys(scope).await?;
            let mut counts = RecordCounts {
                oversized_shards: Some(0),
                ..RecordCounts::default()
            };
            for chunk in keys.chunks(COUNT_BATCH) {
                self.count(chunk, &mut counts).await?;
            }
            let mut memory = 0;
            let info = redis::cmd("INFO").arg("memory").clone();
            for info in self.conn.on_each_master(&info).await.map_err(failed)? {
                let info: String = redis::from_redis_value(info).map_err(|e| failed(e.into()))?;
                memory += used_memory(&info).unwrap_or(0);
            }
            counts.memory_bytes = Some(memory);
            Ok(counts)
        })
    }
}

impl RedisStore {
    /// The claim keys and records hashes of `scope` (`SCAN` of every master).
    async fn scope_keys(
        &self,
        scope: &RecordScope<'_>,
    ) -> Result<Vec<(KeyKind, String)>, StoreError> {
        // The record key does not escape a part's '*', '?', '[' and '\': escape them for the
        // pattern.
        let glob = |s: &str| {
            s.chars()
                .flat_map(|c| match c {
                    '*' | '?' | '[' | ']' | '\\' => vec!['\\', c],
                    c => vec![c],
                })
                .collect::<String>()
        };
        let pattern = format!("{}*", glob(&escaped_group(&scope.key_start())));
        let keys = self.conn.scan(&pattern).await.map_err(failed)?;
        Ok(keys
            .into_iter()
            .map(|k| (kind_of(&k), k))
            .filter(|(kind, _)| *kind != KeyKind::Layout)
            .collect())
    }

    /// Counts `keys` into `counts`: a records hash by its fields but the meta field and sweep state, a claim
    /// key by what it holds.
    async fn count(
        &self,
        keys: &[(KeyKind, String)],
        counts: &mut RecordCounts,
    ) -> Result<(), StoreError> {
        let mut commands = Vec::with_capacity(keys.len() * 2);
        for (kind, key) in keys {
            let reads: &[(&[&str], &[&str])] = match kind {
                KeyKind::Records => &[
                    (&["HLEN"], &[]),
                    (&["HEXISTS"], &["~"]),
                    (&["OBJECT", "ENCODING"], &[]),
                ],
                _ => &[(&["GET"], &[])],
            };
            for (name, after) in reads {
                let mut cmd = redis::cmd(name[0]);
                cmd.arg(&name[1..]).arg(key.as_str()).arg(*after);
                commands.push(KeyedCommand { key, cmd });
            }
        }
        let mut answers = self.send_admin(commands).await?.answers.into_iter();
        let mut claims = Vec::new();
        for (kind, key) in keys {
            let answer = answers.next();
            if *kind == KeyKind::Records {
                // All fields but the meta field and the sweep state (once a pass wrote it).
                let fields: u64 = read(answer)?;
                let swept: u64 = read(answers.next())?;
                counts.consumed += fields.saturating_sub(1 + swept);
                let encoding: String = read(answers.next())?;
                *counts.oversized_shards.get_or_insert(0) += u64::from(encoding == "hashtable");
                continue;
            }
            let value: Option<Vec<u8>> = read(answer)?;
            match value.as_deref() {
                Some(CONSUMED_KEY_VALUE) => counts.consumed += 1,
                Some([b'c', ..]) => claims.push(key.as_str()),
                _ => {}
            }
        }
        counts.consuming += self.not_on_consumed(&claims).await? as u64;
        Ok(())
    }

    /// How many of the claims `claims` are not on records CONSUMED (claims left a moment on
    /// them are no records in flight): each record's field and meta field, and the server's
    /// time, in one pipeline.
    async fn not_on_consumed(&self, claims: &[&str]) -> Result<usize, StoreError> {
        let located: Vec<(&str, String, [u8; FIELD_BYTES])> = claims
            .iter()
            .filter_map(|c| record_of_claim(c).map(|(records, field)| (*c, records, field)))
            .collect();
        if located.is_empty() {
            return Ok(claims.len());
        }
        let mut commands = Vec::with_capacity(located.len() * 2);
        for (claim, records, field) in &located {
            let mut hmget = redis::cmd("HMGET");
            hmget.arg(records).arg(&field[..]).arg("");
            commands.push(KeyedCommand {
                key: claim,
                cmd: hmget,
            });
            commands.push(KeyedCommand {
                key: claim,
                cmd: redis::cmd("TIME"),
            });
        }
        let mut answers = self.send_admin(commands).await?.answers.into_iter();
        let mut in_flight = claims.len() - located.len();
        for _ in &located {
            let (stamp, meta): (Option<Vec<u8>>, Option<Vec<u8>>) = match answers.next() {
                Some(Err(e)) if e.code() == Some("WRONGTYPE") => (None, None),
                answer => read(answer)?,
            };
            let (secs, micros): (u64, u64) = read(answers.next())?;
            let unit_ms = meta
                .as_deref()
                .and_then(Meta::parse)
                .map(|m| m.layout.unit_ms);
            let live = match (stamp.as_deref().and_then(Stamp::parse), unit_ms) {
                (Some(stamp), Some(unit_ms)) => stamp
                    .live_for(unit_ms, secs * 1000 + micros / 1000)
                    .is_some(),
                _ => false,
            };
            in_flight += usize::from(!live);
        }
        Ok(in_flight)
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
