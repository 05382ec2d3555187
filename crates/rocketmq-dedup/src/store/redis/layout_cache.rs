//! The shard layout of each group a store has met ([`super::layout`]): read from Redis once
//! per group, or written there by the first store that uses it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use redis::{RedisError, Value};

use super::connection::{Lane, RedisConnection};
use super::layout::{
    escaped_group, first_records_hash, layout_key, split, Location, Meta, ShardLayout, FIELD_BYTES,
};
use super::pipeline::KeyedCommand;
use crate::error::{StoreError, StoreOperation};
use crate::record_key::RecordKey;

/// The most fields a listpack may have before a sweep's one `HSCAN` step (which reads a listpack
/// whole) costs the server more than a millisecond or so.
const LARGEST_SWEPT_LISTPACK: u64 = 4096;

/// What the server allows a hash in listpack encoding (`hash-max-listpack-*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ListpackLimits {
    /// Most fields.
    pub(super) entries: u64,
    /// Longest field or value, in bytes.
    pub(super) value: u64,
}

impl ListpackLimits {
    /// Redis's defaults (what a store assumes when `CONFIG GET` is refused).
    pub(super) const DEFAULT: ListpackLimits = ListpackLimits {
        entries: 512,
        value: 64,
    };

    /// The most fields a records hash that became a hashtable may hold for its sweep to
    /// rewrite it (so that it is a listpack again, and stays one a while): half the entries a
    /// listpack may have; 0 (never) where a record's field does not fit a listpack.
    pub(super) fn heal_below(&self) -> u64 {
        match self.value < FIELD_BYTES as u64 {
            true => 0,
            false => self.entries / 2,
        }
    }

    /// Why records will take more memory than the layout is sized for, if they will.
    pub(super) fn shortfall(&self, layout: &ShardLayout) -> Option<String> {
        if self.value < FIELD_BYTES as u64 {
            return Some(format!(
                "hash-max-listpack-value is {} bytes, under a record's {FIELD_BYTES}-byte field: every records hash is a hashtable (about 4 times the memory per record)",
                self.value
            ));
        }
        let per_hash = super::layout::RECORDS_PER_HASH;
        if self.entries > LARGEST_SWEPT_LISTPACK {
            return Some(format!(
                "hash-max-listpack-entries is {}: a records hash of up to that many records is one listpack, which a sweep reads whole in one script (keep it at most {LARGEST_SWEPT_LISTPACK}; Redis's default is 512)",
                self.entries
            ));
        }
        (self.entries < per_hash).then(|| {
            format!(
                "hash-max-listpack-entries is {}, under the {per_hash} records a hash of {} shards is sized for: full hashes become hashtables (about 4 times the memory per record); raise it, or the expected rate",
                self.entries, layout.shards
            )
        })
    }
}

/// The layouts of the groups met, and the layout for new groups.
pub(super) struct LayoutCache {
    /// Written for a group that has none yet.
    configured: ShardLayout,
    /// By group (the record key up to its last `:`).
    known: RwLock<HashMap<Box<str>, ShardLayout>>,
    /// The store's round-trip counter.
    round_trips: Arc<AtomicU64>,
}

/// What a group's layout key and its first records hash say, read in one pipeline.
struct Found {
    /// The layout key, read.
    key: Option<ShardLayout>,
    /// The layout key's value when it is not a layout.
    garbage: Option<String>,
    /// The layout shard 0's records hash was written under.
    records: Option<ShardLayout>,
}

impl Found {
    /// What the layout key `key` (holding `text`) and the meta field `meta` of the group's
    /// first records hash `records` say; a key that holds no layout is logged (ERROR), a meta
    /// field that is not readable too (DEBUG: the hash's next commit writes it anew).
    fn read(key: &str, records: &str, text: Option<Vec<u8>>, meta: Option<Vec<u8>>) -> Found {
        let key_layout = text.as_deref().and_then(ShardLayout::decode);
        let garbage = match (&text, key_layout) {
            (Some(text), None) => {
                let text = String::from_utf8_lossy(text).into_owned();
                tracing::error!(key = %key, value = %text, "a layout key holds no layout (w=<unit ms> s=<shards>)");
                Some(text)
            }
            _ => None,
        };
        let records_layout = meta.as_deref().and_then(Meta::parse).map(|m| m.layout);
        if meta.is_some() && records_layout.is_none() {
            tracing::debug!(key = %records, "a records hash's meta field is not readable; its next commit writes it anew");
        }
        Found {
            key: key_layout,
            garbage,
            records: records_layout,
        }
    }

    /// The group's layout: the records' when they disagree with the key (the key was lost,
    /// and another layout written since), else the key's; `None` when neither has one.
    fn layout(&self) -> Option<ShardLayout> {
        self.records.or(self.key)
    }
}

impl LayoutCache {
    /// `round_trips`: the store's counter, which reading layouts counts into.
    pub(super) fn new(configured: ShardLayout, round_trips: Arc<AtomicU64>) -> Self {
        LayoutCache {
            configured,
            known: RwLock::new(HashMap::new()),
            round_trips,
        }
    }

    /// Where `keys` live, when every one's group is known.
    pub(super) fn locate_known(&self, keys: &[RecordKey]) -> Option<Vec<Location>> {
        locations(&self.known.read().unwrap_or_else(|e| e.into_inner()), keys)
    }

    /// Forgets every group's layout, so that each is read again at its next use: after the
    /// server lost its memory (a restart, a failover to a replica behind it), a group's layout
    /// key may be gone, and the first store to use the group again writes it anew.
    pub(super) fn forget(&self) {
        self.known
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
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
            known.insert(group.into(), layout);
        }
        // Located under the same lock: a `forget` from another call (a restart seen) cannot
        // come between keeping the layouts and using them.
        locations(&known, keys).ok_or_else(|| {
            StoreError::backend(operation, "a group's layout was not kept after reading it")
        })
    }

    /// The layouts of `groups` in Redis, writing the configured one where there is none (`SET
    /// <group>{layout} <layout> NX`, then `GET` it and the meta field of the group's first
    /// records hash, one pipeline). A group whose records were written under another layout
    /// than its key names (the key was evicted or deleted, and written anew since), or whose
    /// key holds no layout, gets the records' layout, written back to its key, with a WARN.
    async fn read(
        &self,
        conn: &RedisConnection,
        groups: &[&str],
        operation: StoreOperation,
    ) -> Result<Vec<ShardLayout>, StoreError> {
        let ours = self.configured.encode();
        let found = read_found(conn, groups, Some(&ours), operation).await?;
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let mut layouts = Vec::with_capacity(groups.len());
        let mut repairs = Vec::new();
        for (group, found) in groups.iter().zip(found) {
            let key = layout_key(&escaped_group(group));
            let layout = found.layout().unwrap_or(self.configured);
            if found.key != Some(layout) {
                tracing::warn!(
                    key = %key,
                    in_key = ?found.key.map(|l| l.encode()).or(found.garbage),
                    in_records = %layout.encode(),
                    "this group's layout key does not name the layout its records were written under (evicted, deleted or overwritten: run Redis with maxmemory-policy noeviction): writing the records' layout back"
                );
                repairs.push((key, layout.encode()));
            } else if layout != self.configured {
                tracing::warn!(
                    key = %key,
                    in_redis = %layout.encode(),
                    configured = %self.configured.encode(),
                    "this group's records were laid out by a store configured otherwise: using the layout in Redis (delete the key only with the group's records, to lay them out anew)"
                );
            }
            layouts.push(layout);
        }
        if !repairs.is_empty() {
            let commands = repairs
                .iter()
                .map(|(key, value)| {
                    let mut set = redis::cmd("SET");
                    set.arg(key).arg(value);
                    KeyedCommand { key, cmd: set }
                })
                .collect();
            let failed = |e: RedisError| StoreError::backend(operation, e);
            let sent = conn
                .send(commands, None, Lane::Multiplexed)
                .await
                .map_err(failed)?;
            self.round_trips
                .fetch_add(sent.round_trips, Ordering::Relaxed);
            for answer in sent.answers {
                answer.map_err(failed)?;
            }
        }
        Ok(layouts)
    }

    /// The layout of `group` as Redis has it (its key, or its records when the key is gone),
    /// without writing one: `None` when the group has neither.
    pub(super) async fn existing(
        conn: &RedisConnection,
        group: &str,
        operation: StoreOperation,
    ) -> Result<Option<ShardLayout>, StoreError> {
        let found = read_found(conn, &[group], None, operation).await?;
        Ok(found.into_iter().next().and_then(|f| f.layout()))
    }
}

/// Where `keys` live by the layouts `known`, when every one's group is there.
fn locations(known: &HashMap<Box<str>, ShardLayout>, keys: &[RecordKey]) -> Option<Vec<Location>> {
    keys.iter()
        .map(|key| Some(Location::of(key, known.get(split(key.as_str()).0)?)))
        .collect()
}

/// For each group: `SET <layout key> <write> NX` (when `write`), `GET <layout key>`, `HGET
/// <first records hash> ""`, in one pipeline (per master on a Cluster).
async fn read_found(
    conn: &RedisConnection,
    groups: &[&str],
    write: Option<&str>,
    operation: StoreOperation,
) -> Result<Vec<Found>, StoreError> {
    let failed = |e: RedisError| StoreError::backend(operation, e);
    let keys: Vec<(String, String)> = groups
        .iter()
        .map(|g| {
            let group = escaped_group(g);
            (layout_key(&group), first_records_hash(&group))
        })
        .collect();
    let mut commands = Vec::with_capacity(keys.len() * 3);
    for (key, records) in &keys {
        if let Some(value) = write {
            let mut set = redis::cmd("SET");
            set.arg(key).arg(value).arg("NX");
            commands.push(KeyedCommand { key, cmd: set });
        }
        let mut get = redis::cmd("GET");
        get.arg(key);
        commands.push(KeyedCommand { key, cmd: get });
        let mut meta = redis::cmd("HGET");
        meta.arg(records).arg("");
        commands.push(KeyedCommand {
            key: records,
            cmd: meta,
        });
    }
    let sent = conn
        .send(commands, None, Lane::Multiplexed)
        .await
        .map_err(failed)?;
    let per_group = if write.is_some() { 3 } else { 2 };
    let mut answers = sent.answers.into_iter();
    let mut found = Vec::with_capacity(keys.len());
    for (key, records) in &keys {
        let mut next = |what: &str| -> Result<Option<Vec<u8>>, StoreError> {
            let answer = answers.next().ok_or_else(|| failed(missing(what)))?;
            Ok(match answer {
                Ok(Value::BulkString(text)) => Some(text),
                Ok(Value::Nil | Value::Okay | Value::SimpleString(_)) => None,
                Ok(other) => Some(format!("{other:?}").into_bytes()),
                // A records hash that is no hash (WRONGTYPE) has no meta: its next commit
                // replaces it.
                Err(e) if what == "HGET" && e.code() == Some("WRONGTYPE") => None,
                Err(e) => return Err(failed(e)),
            })
        };
        if per_group == 3 {
            next("SET")?;
        }
        let text = next("GET")?;
        let meta = next("HGET")?;
        found.push(Found::read(key, records, text, meta));
    }
    Ok(found)
}

fn missing(what: &str) -> RedisError {
    RedisError::from((
        redis::ErrorKind::Client,
        "a pipeline answered fewer commands than it carried",
        what.to_owned(),
    ))
}
