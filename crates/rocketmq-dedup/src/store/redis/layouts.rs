//! The shard layout of each group a store has met ([`super::layout`]): read from Redis once
//! per group, or written there by the first store that uses it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use redis::{RedisError, Value};

use super::connection::{Lane, RedisConnection};
use super::layout::{escaped_group, layout_key, split, Location, ShardLayout, FIELD_BYTES};
use super::pipeline::KeyedCommand;
use crate::error::{StoreError, StoreOperation};
use crate::record_key::RecordKey;

/// What the server allows a hash in listpack encoding (`hash-max-listpack-*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ListpackLimits {
    /// Most fields.
    pub(super) entries: u64,
    /// Longest field or value, in bytes.
    pub(super) value: u64,
}

impl ListpackLimits {
    /// Why records will take more memory than the layout is sized for, if they will.
    pub(super) fn shortfall(&self, layout: &ShardLayout) -> Option<String> {
        if self.value < FIELD_BYTES as u64 {
            return Some(format!(
                "hash-max-listpack-value is {} bytes, under a record's {FIELD_BYTES}-byte field: every records hash is a hashtable (about 4 times the memory per record)",
                self.value
            ));
        }
        let per_hash = super::layout::RECORDS_PER_HASH;
        (self.entries < per_hash).then(|| {
            format!(
                "hash-max-listpack-entries is {}, under the {per_hash} records a hash of {} shards is sized for: full hashes become hashtables (about 4 times the memory per record); raise it, or the expected rate",
                self.entries, layout.shards
            )
        })
    }
}

/// The layouts of the groups met, and the layout for new groups.
pub(super) struct Layouts {
    /// Written for a group that has none yet.
    configured: ShardLayout,
    /// By group (the record key up to its last `:`).
    known: RwLock<HashMap<Box<str>, ShardLayout>>,
    /// The store's round-trip counter.
    round_trips: Arc<AtomicU64>,
}

/// What the layout key `key` holds, read: a typed error and a log line when it is not a
/// layout.
pub(super) fn decode(
    key: &str,
    text: &[u8],
    operation: StoreOperation,
) -> Result<ShardLayout, StoreError> {
    ShardLayout::decode(text).ok_or_else(|| {
        let text = String::from_utf8_lossy(text);
        tracing::error!(key = %key, value = %text, "unreadable shard layout in Redis");
        StoreError::CorruptRecord {
            operation,
            detail: format!("{key} holds {text:?}, not a shard layout (w=<unit ms> s=<shards>)"),
        }
    })
}

/// Unix time in ms.
pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Layouts {
    /// `round_trips`: the store's counter, which reading layouts counts into.
    pub(super) fn new(configured: ShardLayout, round_trips: Arc<AtomicU64>) -> Self {
        Layouts {
            configured,
            known: RwLock::new(HashMap::new()),
            round_trips,
        }
    }

    /// Where `keys` live, when every one's group is known.
    pub(super) fn locate_known(&self, keys: &[RecordKey]) -> Option<Vec<Location>> {
        let known = self.known.read().unwrap_or_else(|e| e.into_inner());
        keys.iter()
            .map(|key| {
                let layout = known.get(split(key.as_str()).0)?;
                Some(Location::of(key, layout))
            })
            .collect()
    }

    /// Where `keys` live, reading the layouts of groups not met yet (one round trip).
    pub(super) async fn locate(
        &self,
        conn: &RedisConnection,
        keys: &[RecordKey],
        operation: StoreOperation,
    ) -> Result<Vec<Location>, StoreError> {
        if let Some(at) = self.locate_known(keys) {
            return Ok(at);
        }
        let mut groups: Vec<&str> = keys.iter().map(|k| split(k.as_str()).0).collect();
        groups.sort_unstable();
        groups.dedup();
        let read = self.read(conn, &groups, operation).await?;
        let mut known = self.known.write().unwrap_or_else(|e| e.into_inner());
        for (group, layout) in groups.into_iter().zip(read) {
            known.entry(group.into()).or_insert(layout);
        }
        drop(known);
        self.locate_known(keys).ok_or_else(|| {
            StoreError::backend(operation, "a group's layout was not kept after reading it")
        })
    }

    /// The layouts of `groups` in Redis, writing the configured one where there is none:
    /// `SET <group>{layout} <layout> NX` then `GET`, one pipeline.
    async fn read(
        &self,
        conn: &RedisConnection,
        groups: &[&str],
        operation: StoreOperation,
    ) -> Result<Vec<ShardLayout>, StoreError> {
        let failed = |e: RedisError| StoreError::backend(operation, e);
        let keys: Vec<String> = groups
            .iter()
            .map(|g| layout_key(&escaped_group(g)))
            .collect();
        let ours = self.configured.encode();
        let mut commands = Vec::with_capacity(keys.len() * 2);
        for key in &keys {
            let mut set = redis::cmd("SET");
            set.arg(key).arg(&ours).arg("NX");
            let mut get = redis::cmd("GET");
            get.arg(key);
            commands.push(KeyedCommand { key, cmd: set });
            commands.push(KeyedCommand { key, cmd: get });
        }
        let sent = conn
            .send(commands, None, Lane::Multiplexed)
            .await
            .map_err(failed)?;
        self.round_trips
            .fetch_add(sent.round_trips, Ordering::Relaxed);
        let mut layouts = Vec::with_capacity(keys.len());
        for (i, answer) in sent.answers.into_iter().enumerate() {
            let answer = answer.map_err(failed)?;
            if i % 2 == 0 {
                continue;
            }
            let key = &keys[i / 2];
            let text = match answer {
                Value::BulkString(text) => text,
                other => {
                    return Err(failed(RedisError::from((
                        redis::ErrorKind::Client,
                        "a layout key read back as something other than a string",
                        format!("{key}: {other:?}"),
                    ))))
                }
            };
            let layout = decode(key, &text, operation)?;
            if layout != self.configured {
                tracing::warn!(
                    key = %key,
                    in_redis = %layout.encode(),
                    configured = %self.configured.encode(),
                    "this group's records were laid out by a store configured otherwise: using the layout in Redis (delete the key only with the group's records, to lay them out anew)"
                );
            }
            layouts.push(layout);
        }
        Ok(layouts)
    }
}
