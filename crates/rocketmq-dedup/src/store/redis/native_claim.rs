//! The native claim (Redis 7.0 and later, no script): for each key `SET claim owner NX PX ttl
//! GET` and `HMGET records field ""`, plus the server's `TIME`, in one pipeline per server;
//! then each key's answer, judged by the server's clock.
//!
//! The `SET` goes first: a commit that lands between it and the `HMGET` is then seen by it (a
//! commit after the `SET` finds our claim, not its own). A live stamp, read with its hash's
//! unit width, is CONSUMED; else the value the claim key had says (nil: absent, so now
//! claimed). The claim the `SET` made on a record found CONSUMED is stale: the caller releases
//! it.

use redis::{ErrorKind, RedisError, RedisResult, Value};

use super::clock;
use super::layout::{Location, Meta, Stamp};
use super::pipeline::{sized_cmd, KeyedCommand};
use super::scripts;
use crate::error::{StoreError, StoreOperation};
use crate::store::ClaimOutcome;

/// Where the server's time comes from, for a claim's pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TimeSource {
    /// A `TIME` per key (a Cluster: each master has its own clock).
    PerKey,
    /// One `TIME` at the end of the pipeline: the store's reading is due.
    Read,
    /// The store's reading as it is.
    Reading,
}

/// The pipeline of a claim of the records `at` for `owner` (`c<token>`) with the processing
/// TTL `ttl` (ms).
pub(super) fn commands<'a>(
    at: &'a [Location],
    owner: &str,
    ttl: &str,
    time: TimeSource,
) -> Vec<KeyedCommand<'a>> {
    let mut commands = Vec::with_capacity(at.len() * 3 + 1);
    let time_of = |key| KeyedCommand {
        key,
        cmd: redis::cmd("TIME"),
    };
    for loc in at {
        let mut set = sized_cmd("SET", 7, loc.claim.len() + owner.len() + ttl.len() + 16);
        set.arg(&loc.claim)
            .arg(owner)
            .arg("NX")
            .arg("PX")
            .arg(ttl)
            .arg("GET");
        commands.push(KeyedCommand {
            key: &loc.claim,
            cmd: set,
        });
        let mut hmget = sized_cmd("HMGET", 4, loc.claim.len() + 40);
        hmget.arg(loc.records()).arg(&loc.field[..]).arg("");
        commands.push(KeyedCommand {
            key: &loc.claim,
            cmd: hmget,
        });
        if time == TimeSource::PerKey {
            commands.push(time_of(&loc.claim));
        }
    }
    if time == TimeSource::Read {
        if let Some(first) = at.first() {
            commands.push(time_of(&first.claim));
        }
    }
    commands
}

/// What a claim's pipeline found for one key.
#[derive(Debug)]
pub(super) struct Found {
    /// The claim key's value before the `SET` (nil: it was absent, and is now ours).
    previous: Option<Vec<u8>>,
    /// The record's stamp in its records hash.
    stamp: Option<Vec<u8>>,
    /// The records hash's meta field (its unit width).
    meta: Option<Vec<u8>>,
    /// The server's time (Unix ms) with [`TimeSource::PerKey`].
    now_ms: Option<u64>,
}

/// A claim's answers: each key's, and the server's time (Unix ms) with [`TimeSource::Read`].
pub(super) fn read_answers(
    answers: Vec<RedisResult<Value>>,
    keys: usize,
    time: TimeSource,
) -> Result<(Vec<Found>, Option<u64>), StoreError> {
    let mut answers = answers.into_iter();
    let mut next = || {
        answers.next().ok_or_else(|| {
            backend(RedisError::from((
                ErrorKind::Client,
                "a pipeline answered fewer commands than it carried",
            )))
        })
    };
    let read_time = |answer: RedisResult<Value>| -> Result<u64, StoreError> {
        clock::time_ms(answer.map_err(backend)?).map_err(backend)
    };
    let mut found = Vec::with_capacity(keys);
    for _ in 0..keys {
        let previous: Option<Vec<u8>> =
            redis::from_redis_value(next()?.map_err(backend)?).map_err(|e| backend(e.into()))?;
        let (stamp, meta) = match next()? {
            // A records hash that is no hash holds no record (its next commit replaces it).
            Err(e) if e.code() == Some("WRONGTYPE") => (None, None),
            answer => {
                let pair: Vec<Option<Vec<u8>>> = redis::from_redis_value(answer.map_err(backend)?)
                    .map_err(|e| backend(e.into()))?;
                let mut pair = pair.into_iter();
                (pair.next().flatten(), pair.next().flatten())
            }
        };
        let now_ms = match time {
            TimeSource::PerKey => Some(read_time(next()?)?),
            TimeSource::Read | TimeSource::Reading => None,
        };
        found.push(Found {
            previous,
            stamp,
            meta,
            now_ms,
        });
    }
    let server_ms = match time {
        TimeSource::Read => Some(read_time(next()?)?),
        TimeSource::PerKey | TimeSource::Reading => None,
    };
    Ok((found, server_ms))
}

/// What the claim of `loc` by `owner` found, judged at the server's `now_ms` (unless the key
/// came with a time of its own), and whether the claim it made is stale (set on a record found
/// CONSUMED).
pub(super) fn outcome(
    loc: &Location,
    found: &Found,
    owner: &str,
    now_ms: u64,
) -> Result<(ClaimOutcome, bool), StoreError> {
    let consumed = found
        .stamp
        .as_deref()
        .and_then(Stamp::parse)
        .is_some_and(|s| {
            let unit_ms = found
                .meta
                .as_deref()
                .and_then(Meta::parse)
                .map_or(loc.layout.unit_ms, |m| m.layout.unit_ms);
            s.live_for(unit_ms, found.now_ms.unwrap_or(now_ms))
                .is_some()
        });
    let outcome = match found.previous.as_deref() {
        _ if consumed => ClaimOutcome::Consumed,
        Some(scripts::CONSUMED_KEY_VALUE) => ClaimOutcome::Consumed,
        None => ClaimOutcome::Claimed,
        Some(v) if v == owner.as_bytes() => ClaimOutcome::Claimed,
        Some([b'c', ..]) => ClaimOutcome::InFlight,
        Some(_) => {
            return Err(StoreError::CorruptRecord {
                operation: StoreOperation::Claim,
                detail: scripts::UNREADABLE_VALUE.to_owned(),
            })
        }
    };
    Ok((outcome, consumed && found.previous.is_none()))
}

/// A claim's error from Redis.
pub(super) fn backend(e: RedisError) -> StoreError {
    StoreError::backend(StoreOperation::Claim, e)
}
