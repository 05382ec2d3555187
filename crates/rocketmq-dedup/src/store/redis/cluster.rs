//! Redis Cluster: a batch's commands grouped by the master that owns their keys' slots, one
//! pipeline per master, sent concurrently.
//!
//! redis-rs's cluster connection rejects a pipeline whose keys span slots, and a batch's keys
//! almost always do (32 keys fall in 32 of 16 384 slots). Every command here touches one key,
//! so a pipeline may mix slots as long as one master owns them all: this module keeps the
//! slot → master map (`CLUSTER SLOTS`), sends each master its commands, and hands any command a
//! master answers with MOVED, ASK, TRYAGAIN or CLUSTERDOWN (it did not run) to redis-rs, which
//! follows the redirect; the map is then read again before the next batch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use redis::aio::ConnectionLike;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, ErrorKind, RedisError, RedisResult, ServerErrorKind, Value};

use super::pipeline::{scan_to_end, wait_answer, KeyedCommand, Sent};

/// Slots in a Redis Cluster.
const SLOTS: usize = 16_384;
/// No master known for the slot.
const UNKNOWN: u16 = u16::MAX;

/// The Cluster connection and the store's own slot → master map.
#[derive(Clone)]
pub(super) struct ClusterNodes {
    conn: ClusterConnection,
    owners: Arc<RwLock<SlotOwners>>,
    /// A command met a redirect: read the map again before the next batch.
    stale: Arc<AtomicBool>,
}

/// For each slot, the index of its master (`UNKNOWN` when not known).
struct SlotOwners {
    master_of: Vec<u16>,
}

impl ClusterNodes {
    /// Wraps `conn` and reads the slot map.
    pub(super) async fn new(conn: ClusterConnection) -> RedisResult<Self> {
        let nodes = ClusterNodes {
            conn,
            owners: Arc::new(RwLock::new(SlotOwners {
                master_of: vec![UNKNOWN; SLOTS],
            })),
            stale: Arc::new(AtomicBool::new(false)),
        };
        nodes.refresh().await?;
        Ok(nodes)
    }

    /// A clone of the redis-rs connection.
    pub(super) fn connection(&self) -> ClusterConnection {
        self.conn.clone()
    }

    /// `CLUSTER SLOTS`, from some master.
    async fn cluster_slots(&self) -> RedisResult<Value> {
        self.conn
            .clone()
            .route_command(
                redis::cmd("CLUSTER").arg("SLOTS").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary),
            )
            .await
    }

    /// Reads `CLUSTER SLOTS` from some master into the map.
    async fn refresh(&self) -> RedisResult<()> {
        let ranges = slot_ranges(self.cluster_slots().await?)?;
        let master_of = slot_owners(&ranges);
        *self.owners.write().unwrap_or_else(|e| e.into_inner()) = SlotOwners { master_of };
        Ok(())
    }

    /// The masters' addresses, from `CLUSTER SLOTS` now.
    async fn masters(&self) -> RedisResult<Vec<(String, u16)>> {
        Ok(masters(&slot_ranges(self.cluster_slots().await?)?))
    }

    /// Runs `cmd` on the master at `address`.
    async fn on_master(&self, (host, port): &(String, u16), cmd: Cmd) -> RedisResult<Value> {
        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
            host: host.clone(),
            port: *port,
        });
        self.conn
            .clone()
            .route_command(cmd, routing)
            .await?
            .extract_error()
    }

    /// Runs `cmd` on every master, one answer each.
    pub(super) async fn on_each_master(&self, cmd: &Cmd) -> RedisResult<Vec<Value>> {
        let mut answers = Vec::new();
        for master in self.masters().await? {
            answers.push(self.on_master(&master, cmd.clone()).await?);
        }
        Ok(answers)
    }

    /// `SCAN … MATCH pattern` to the end on every master.
    pub(super) async fn scan_each_master(&self, pattern: &str) -> RedisResult<Vec<String>> {
        let mut keys = Vec::new();
        for master in self.masters().await? {
            keys.extend(scan_to_end(pattern, |cmd| self.on_master(&master, cmd)).await?);
        }
        Ok(keys)
    }

    pub(super) async fn to_every_node(&self, cmd: &Cmd) -> RedisResult<Value> {
        let mut conn = self.conn.clone();
        if is_info(cmd) {
            // INFO goes to one master: every node runs the same version.
            let one = RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary);
            return conn.route_command(cmd.clone(), one).await;
        }
        // Routed by redis-rs (SCRIPT LOAD goes to every node, replicas included).
        conn.req_packed_command(cmd).await
    }

    /// Sends `commands` as one pipeline per master (concurrently), then redirected commands one
    /// by one through redis-rs.
    pub(super) async fn send(
        &self,
        commands: Vec<KeyedCommand<'_>>,
        wait: Option<&Cmd>,
    ) -> Result<Sent, RedisError> {
        self.refresh_if_stale().await;
        let groups = self.group(&commands);
        let mut round_trips = groups.len() as u64;
        let results = self.send_to_masters(&commands, &groups, wait).await;
        let mut answers: Vec<Option<RedisResult<Value>>> =
            (0..commands.len()).map(|_| None).collect();
        let mut replicas_acked: Option<i64> = None;
        let mut redirected = Vec::new();
        for ((_, members), result) in groups.iter().zip(results) {
            let mut values = match result {
                Ok(values) => values,
                // redis-rs fails the whole pipeline when one command met a redirect (retries
                // are off, so it never re-sends a pipeline whose other commands ran): each
                // command is sent again on its own. Claims and renewals by the same token are
                // idempotent; a resent commit or release that had run answers "already
                // consumed" / "not held" (docs/redis.md, "Deployments").
                Err(e) if did_not_run_here(&e) => {
                    redirected.extend(members.iter().map(|&i| (i, None)));
                    continue;
                }
                Err(e) => return Err(e),
            };
            if wait.is_some() {
                let acked = wait_answer(values.pop())?;
                replicas_acked = fewest(replicas_acked, acked);
            }
            for (&i, value) in members.iter().zip(values) {
                match value.extract_error() {
                    Err(e) if did_not_run_here(&e) => redirected.push((i, Some(e))),
                    answer => answers[i] = Some(answer),
                }
            }
        }
        if !redirected.is_empty() {
            self.stale.store(true, Ordering::Relaxed);
        }
        for (i, error) in redirected {
            let (answer, trips, acked) = self.follow(&commands[i], error, wait).await?;
            round_trips += trips;
            answers[i] = Some(answer);
            if let Some(acked) = acked {
                replicas_acked = fewest(replicas_acked, acked);
            }
        }
        let answers = answers
            .into_iter()
            .map(|a| a.unwrap_or_else(|| Err(missing_answer())))
            .collect();
        Ok(Sent {
            answers,
            round_trips,
            replicas_acked,
        })
    }

    /// Reads the slot map again when a redirect marked it stale (kept stale when that fails).
    async fn refresh_if_stale(&self) {
        if self.stale.swap(false, Ordering::Relaxed) {
            if let Err(e) = self.refresh().await {
                tracing::warn!(error = %e, "reading the Redis Cluster slot map failed");
                self.stale.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Each group's commands (and the `WAIT`) as one pipeline to the master of its slot, all
    /// at once; answers each group's result, in order.
    async fn send_to_masters(
        &self,
        commands: &[KeyedCommand<'_>],
        groups: &[(u16, Vec<usize>)],
        wait: Option<&Cmd>,
    ) -> Vec<Result<Vec<Value>, RedisError>> {
        let sends = groups.iter().map(|(slot, members)| {
            let mut pipe = redis::pipe();
            for &i in members {
                pipe.add_command(commands[i].cmd.clone());
            }
            if let Some(wait) = wait {
                pipe.add_command(wait.clone());
            }
            let mut conn = self.conn.clone();
            let route = SingleNodeRoutingInfo::SpecificNode(Route::new(*slot, SlotAddr::Master));
            async move {
                let count = pipe.len();
                conn.route_pipeline(pipe, 0, count, route).await
            }
        });
        futures::future::join_all(sends).await
    }

    /// Sends one command on its own: where `error` points (MOVED: the new owner; ASK: the
    /// importing node, after `ASKING`; TRYAGAIN, CLUSTERDOWN: its slot's master again, a
    /// moment later), or without an error to its slot's master; up to four times. Answers the
    /// command's answer, the round trips and, with `wait`, the replicas that acknowledged.
    async fn follow(
        &self,
        command: &KeyedCommand<'_>,
        error: Option<RedisError>,
        wait: Option<&Cmd>,
    ) -> Result<(RedisResult<Value>, u64, Option<i64>), RedisError> {
        let by_slot = SingleNodeRoutingInfo::SpecificNode(Route::new(
            key_slot(command.key.as_bytes()),
            SlotAddr::Master,
        ));
        let mut round_trips = 0;
        let mut error = error;
        for _ in 0..4 {
            let (route, asking) = route_after(error.as_ref(), &by_slot).await;
            let mut pipe = redis::pipe();
            if asking {
                pipe.add_command(redis::cmd("ASKING"));
            }
            pipe.add_command(command.cmd.clone());
            if let Some(wait) = wait {
                pipe.add_command(wait.clone());
            }
            let count = pipe.len();
            round_trips += 1;
            let mut values = match self
                .conn
                .clone()
                .route_pipeline(pipe, 0, count, route)
                .await
            {
                Ok(values) => values,
                // Not run: a redirect, or a node redis-rs has no connection to yet (then its
                // slot's master, once redis-rs has read the new slot map).
                Err(e)
                    if did_not_run_here(&e) || e.kind() == ErrorKind::ClusterConnectionNotFound =>
                {
                    error = Some(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let acked = match wait {
                Some(_) => Some(wait_answer(values.pop())?),
                None => None,
            };
            match values.pop().map(Value::extract_error) {
                Some(Err(e)) if did_not_run_here(&e) => error = Some(e),
                Some(answer) => return Ok((answer, round_trips, acked)),
                None => return Err(missing_answer()),
            }
        }
        let error = error.unwrap_or_else(missing_answer);
        Ok((Err(error), round_trips, None))
    }

    /// Command indexes grouped by master, each group under one of its slots (the route).
    /// Keys whose master is not known go alone, routed by their own slot.
    fn group(&self, commands: &[KeyedCommand<'_>]) -> Vec<(u16, Vec<usize>)> {
        let owners = self.owners.read().unwrap_or_else(|e| e.into_inner());
        let mut by_master: HashMap<u16, usize> = HashMap::new();
        let mut groups: Vec<(u16, Vec<usize>)> = Vec::new();
        for (i, command) in commands.iter().enumerate() {
            let slot = key_slot(command.key.as_bytes());
            let master = owners.master_of[usize::from(slot)];
            match by_master.get(&master) {
                Some(&g) if master != UNKNOWN => groups[g].1.push(i),
                _ => {
                    by_master.insert(master, groups.len());
                    groups.push((slot, vec![i]));
                }
            }
        }
        groups
    }
}

fn is_info(cmd: &Cmd) -> bool {
    cmd.args_iter().next().is_some_and(
        |a| matches!(a, redis::Arg::Simple(name) if name.eq_ignore_ascii_case(b"INFO")),
    )
}

/// Answers that mean the command did not run on the node it was sent to.
fn did_not_run_here(e: &RedisError) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Server(
            ServerErrorKind::Moved
                | ServerErrorKind::Ask
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
        )
    )
}

/// The fewer of the replica counts acknowledged so far and `acked`.
fn fewest(so_far: Option<i64>, acked: i64) -> Option<i64> {
    Some(so_far.map_or(acked, |a| a.min(acked)))
}

fn missing_answer() -> RedisError {
    RedisError::from((
        ErrorKind::Client,
        "a Cluster pipeline left a command unanswered",
    ))
}

/// One range of a `CLUSTER SLOTS` answer: its slots and its master's address.
struct SlotRange {
    start: usize,
    end: usize,
    master: (String, u16),
}

/// Reads a `CLUSTER SLOTS` answer.
fn slot_ranges(answer: Value) -> RedisResult<Vec<SlotRange>> {
    let bad = |what: &str| {
        RedisError::from((
            ErrorKind::Client,
            "unexpected CLUSTER SLOTS answer",
            what.to_owned(),
        ))
    };
    let Value::Array(ranges) = answer else {
        return Err(bad("not an array"));
    };
    ranges
        .into_iter()
        .map(|range| {
            let Value::Array(fields) = range else {
                return Err(bad("a range is not an array"));
            };
            let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(master))) =
                (fields.first(), fields.get(1), fields.get(2))
            else {
                return Err(bad("a range without start, end and master"));
            };
            let host = match master.first() {
                Some(Value::BulkString(host)) => String::from_utf8_lossy(host).into_owned(),
                Some(Value::SimpleString(host)) => host.clone(),
                _ => return Err(bad("a master without a host")),
            };
            let Some(Value::Int(port)) = master.get(1) else {
                return Err(bad("a master without a port"));
            };
            let port = u16::try_from(*port).map_err(|_| bad("a port out of range"))?;
            let (Ok(start), Ok(end)) = (usize::try_from(*start), usize::try_from(*end)) else {
                return Err(bad("a negative slot"));
            };
            if start > end || end >= SLOTS {
                return Err(bad("a slot out of range"));
            }
            Ok(SlotRange {
                start,
                end,
                master: (host, port),
            })
        })
        .collect()
}

/// The distinct masters, in the order of their first range.
fn masters(ranges: &[SlotRange]) -> Vec<(String, u16)> {
    let mut masters: Vec<(String, u16)> = Vec::new();
    for range in ranges {
        if !masters.contains(&range.master) {
            masters.push(range.master.clone());
        }
    }
    masters
}

/// The master index (into [`masters`]) of every slot; `UNKNOWN` where no range covers it.
fn slot_owners(ranges: &[SlotRange]) -> Vec<u16> {
    let masters = masters(ranges);
    let mut master_of = vec![UNKNOWN; SLOTS];
    for range in ranges {
        let index = masters.iter().position(|m| *m == range.master).unwrap_or(0);
        // A cluster has at most 16 384 masters, so the index fits.
        master_of[range.start..=range.end].fill(index as u16);
    }
    master_of
}

/// The Cluster slot of `key`: CRC16 (XMODEM) of the key, or of its `{hash tag}`, mod 16 384.
pub(super) fn key_slot(key: &[u8]) -> u16 {
    let hashed = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    crc16_xmodem(hashed) % SLOTS as u16
}

fn crc16_xmodem(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Where a command goes after `error` (MOVED: the new owner; ASK: the importing node, and
/// whether `ASKING` goes first; TRYAGAIN, CLUSTERDOWN: `by_slot` again, 50 ms later), or to
/// `by_slot` without an error.
async fn route_after(
    error: Option<&RedisError>,
    by_slot: &SingleNodeRoutingInfo,
) -> (SingleNodeRoutingInfo, bool) {
    let asking = error.is_some_and(|e| e.kind() == ErrorKind::Server(ServerErrorKind::Ask));
    let route = match error.map(|e| e.redirect_node()) {
        Some(Some((host, port))) => SingleNodeRoutingInfo::ByAddress {
            host: host.to_owned(),
            port,
        },
        Some(None) => {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            by_slot.clone()
        }
        None => by_slot.clone(),
    };
    (route, asking)
}

#[cfg(test)]
mod tests {
    use redis::cluster_routing::{Route, SlotAddr};

    use super::key_slot;

    #[test]
    fn slots_agree_with_redis_rs_and_the_redis_documentation() {
        // From the Redis Cluster specification: "123456789" hashes to 0x31C3.
        assert_eq!(super::crc16_xmodem(b"123456789"), 0x31C3);
        // redis-cli: CLUSTER KEYSLOT foo → 12182.
        assert_eq!(key_slot(b"foo"), 12182);
        for key in [
            &b"dedup:g:t:k"[..],
            b"{user1000}.following",
            b"a{}b",
            b"a{b",
            b"x{y}z{w}",
            b"",
            &[0xff, 0x00, b'{', 0x7b, b'}'],
        ] {
            assert_eq!(
                Route::new(key_slot(key), SlotAddr::Master),
                Route::with_key(key, SlotAddr::Master),
                "{key:?}"
            );
        }
    }
}
