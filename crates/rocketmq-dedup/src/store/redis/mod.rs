//! The Redis store: claims as keys, CONSUMED records as fields of a records hash per shard
//! ([`layout`]), sent one pipeline per server, on one server, a Redis Cluster, or the master
//! Sentinel names.

mod admin;
mod blocking;
mod builder;
mod clock;
mod cluster;
mod connection;
mod java_keys;
mod layout;
mod layout_cache;
mod native_claim;
mod pipeline;
mod scripts;
mod sentinel;
mod url;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use redis::{Cmd, ErrorKind, RedisError, RedisResult, ServerErrorKind, Value};
use tokio::runtime::Handle;

use blocking::{Carried, Rider};
pub use builder::RedisStoreBuilder;
use clock::{ServerClock, ServerTime};
use connection::Lane;
use connection::RedisConnection;
pub use java_keys::JavaKeys;
use layout::Location;
use layout_cache::LayoutCache;
use native_claim::TimeSource;
use pipeline::{sized_cmd, KeyedCommand};
use scripts::{owner_value, LuaScript, Scripts};
#[cfg(feature = "test-util")]
use scripts::{CLAIM, COMMIT, RELEASE, RENEW};

use super::{ClaimOutcome, CommitOutcome, DedupStore, DetachedCommit, OwnerToken};
use crate::error::{StoreError, StoreOperation};
use crate::record_key::RecordKey;

/// A [`DedupStore`] in Redis, shared by all consumers of a group.
///
/// A CONSUMED record is a 12-byte field in a small hash of its shard's records, its value the time
/// it stops being live; dead fields are swept by the hash's commits, and a hash nobody writes to
/// expires as a whole: about an eighth of the Redis memory of one key per record (BENCHMARKS.md
/// measures both). A claim (CONSUMING) is a key of its own holding `c<token>` with the processing
/// TTL. docs/redis.md ("Memory") says where each lives; size the shards with
/// [`RedisStoreBuilder::expected_rate`] and [`RedisStoreBuilder::record_ttl`].
///
/// Every operation is single-slot commands, sent as one pipeline per batch and server: one round
/// trip per batch on one server, at most one per master touched on a Redis Cluster (a record's
/// claim and records hash share a hash tag, and the store groups a batch's commands by the master
/// that owns their slots). A claim is the native `SET claim owner NX PX ttl GET`, an `HMGET` of the
/// record's field and its hash's meta field, and the server's `TIME` on Redis 7.0 and later (a Lua
/// script before, or with [`RedisStoreBuilder::script_claims`]); commit, release and renew are
/// compare-and-set Lua scripts on the owner token (module `scripts`). Every time a decision uses is
/// the Redis server's.
///
/// A native claim that finds the record CONSUMED has set its claim key already: it releases it at
/// once (on one server, in front of the thread's next pipeline or after the commit linger). Should
/// the record expire in that moment, a copy claimed then reads the leftover claim as in flight and
/// is deferred once (`RECONSUME_LATER`): never run twice, never lost. The Lua claim leaves nothing
/// (one script call a message more on the server).
///
/// # Connection behavior
/// It holds a cheap-to-clone multiplexed connection (redis-rs's `ConnectionManager` on one
/// server, its cluster connection on a Cluster, a connection to the current master through
/// Sentinel). On one server, calls made on a listener's consume thread (the claims, and the
/// commits when they are on the ack path) use a small pool of blocking connections instead, so
/// a round trip costs no thread hand-off ([`RedisStoreBuilder::consume_thread_connections`]).
/// - A call that gets no answer within the response timeout fails with a timeout.
/// - When the connection drops, the calls in flight fail and the manager reconnects in the
///   background with exponential backoff (from 50 ms up to 2 s); calls made meanwhile fail fast.
/// - After a Redis restart the script cache is empty: the commands of a pipeline that answer
///   `NOSCRIPT` are sent once more after the script is loaded (only those: the others ran).
/// - Cluster: MOVED and ASK answers are followed (the command did not run where it was sent),
///   and the slot map is read again; a master that is down fails the calls for its slots until
///   its replica is promoted (about `cluster-node-timeout` plus an election).
/// - Sentinel: an I/O error, a timeout or a `READONLY` answer (the master was demoted) fails
///   the call and makes the next one ask the sentinels for the master again.
#[derive(Clone)]
pub struct RedisStore {
    conn: RedisConnection,
    scripts: &'static Scripts,
    /// Pipelines sent (network round trips), shared by clones.
    round_trips: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Claims with the native `SET … NX GET` (Redis 7.0 and later) instead of a script.
    native_claim: bool,
    /// The most fields a records hash that became a hashtable may hold to be rewritten into a
    /// listpack by its sweep (half the server's `hash-max-listpack-entries`; 0: never).
    heal_below: u64,
    /// `WAIT replicas timeout` after commits ([`RedisStoreBuilder::wait_for_replicas`]).
    wait: Option<(u32, Cmd)>,
    /// Each group's shard layout, as read from Redis.
    layouts: Arc<LayoutCache>,
    /// The server's clock, read with claims (one server; on a Cluster every script reads its
    /// master's).
    clock: Arc<ServerClock>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore").finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A [`RedisStoreBuilder`] for `url`.
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder::new(url)
    }

    fn count_round_trips(&self, n: u64) {
        self.round_trips
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// Claims the records `at` natively ([`native_claim`]): one pipeline per server, judged
    /// by the server's clock; the claims it made on records found CONSUMED are released
    /// ([`Self::release_stale`]).
    async fn claim_native(
        &self,
        at: &[Location],
        owner: &str,
        ttl: &str,
    ) -> Result<Vec<ClaimOutcome>, StoreError> {
        if at.is_empty() {
            return Ok(Vec::new());
        }
        // Without a reading, or with one that is stale or a second old, the pipeline reads
        // `TIME`; a reading once taken is kept even when another call marks it stale meanwhile,
        // so the judgement below always has one.
        let time = match self.conn.deployment() {
            "cluster" => TimeSource::PerKey,
            _ if self.clock.wants_reading() => TimeSource::Read,
            _ => TimeSource::Reading,
        };
        let commands = native_claim::commands(at, owner, ttl, time);
        let asked = Instant::now();
        let sent = self
            .conn
            .send(commands, None, Lane::Blocking)
            .await
            .map_err(native_claim::backend)?;
        let answered = Instant::now();
        self.count_round_trips(sent.round_trips);
        let (found, server_ms) = native_claim::read_answers(sent.answers, at.len(), time)?;
        if let Some(server_ms) = server_ms {
            self.clock.read(server_ms, asked, answered);
        }
        // Judged by the server's time when the pipeline was sent, at the earliest (on a
        // Cluster each key came with its master's `TIME`).
        let now_ms = match (time, self.clock.at(asked)) {
            (TimeSource::PerKey, _) => 0,
            (_, Some(t)) => t.lo,
            (_, None) => {
                return Err(native_claim::backend(RedisError::from((
                    ErrorKind::Client,
                    "no reading of the server's clock to judge the records by",
                ))))
            }
        };
        let mut outcomes = Vec::with_capacity(at.len());
        let mut stale = Vec::new();
        for (loc, found) in at.iter().zip(&found) {
            let (outcome, made_stale) = native_claim::outcome(loc, found, owner, now_ms)?;
            if made_stale {
                stale.push(loc.clone());
            }
            outcomes.push(outcome);
        }
        if !stale.is_empty() {
            self.release_stale(stale, owner).await;
        }
        Ok(outcomes)
    }

    /// Releases the claims a native claim made on records it then found CONSUMED, so that
    /// they are not read as records in flight once the records expire. They ride the thread's
    /// next pipeline where the blocking lane carries; elsewhere they are released now. A
    /// release that fails leaves the claim to its processing TTL.
    async fn release_stale(&self, stale: Vec<Location>, owner: &str) {
        let call = self.release_call(&stale, owner);
        if let (Some(lane), Ok(runtime)) = (self.conn.blocking_lane(), Handle::try_current()) {
            let commands = || (0..call.len()).map(|k| call.command(k).cmd).collect();
            if lane.carry(&runtime, || Rider::new(commands(), |_| {})) {
                return;
            }
        }
        if let Err(e) = self.run(&call, None).await {
            tracing::debug!(error = %e, "releasing claims made on CONSUMED records failed: they expire");
        }
    }

    /// The release script over the claims of `at`, for `owner`.
    fn release_call<'a>(&'a self, at: &'a [Location], owner: &'a str) -> ScriptCall<'a> {
        ScriptCall {
            operation: StoreOperation::Release,
            script: &self.scripts.release,
            at,
            args: ScriptArgs::Release { owner },
            wait: None,
        }
    }

    /// Runs the call's script once per key (one pipeline per server) and returns the integer
    /// answers; its `wait` (commits with [`RedisStoreBuilder::wait_for_replicas`]) follows on
    /// each server. `carried`: the answers of a pipeline that already carried the commands
    /// (a carried commit's, see [`blocking`]), read as the first attempt's.
    ///
    /// A server whose script cache is empty (restarted, or a fresh replica after a failover)
    /// answers NOSCRIPT to the commands that met the empty cache; the others ran. So the
    /// script is loaded and only those commands are sent again: a command is never run twice,
    /// and every key gets the answer of its one run.
    async fn run(
        &self,
        call: &ScriptCall<'_>,
        mut carried: Option<Vec<RedisResult<Value>>>,
    ) -> Result<Vec<i64>, StoreError> {
        let backend = |e: RedisError| StoreError::backend(call.operation, e);
        let mut answers: Vec<Option<i64>> = vec![None; call.len()];
        let mut todo: Vec<usize> = (0..call.len()).collect();
        for attempt in 0..2 {
            if todo.is_empty() {
                break;
            }
            let results = match carried.take() {
                Some(results) => results,
                None => self.send_script(call, &todo, attempt > 0).await?,
            };
            if results.len() != todo.len() {
                return Err(backend(RedisError::from((
                    ErrorKind::Client,
                    "a pipeline answered a different number of commands than it carried",
                    format!("{} answers for {} commands", results.len(), todo.len()),
                ))));
            }
            let mut no_script = Vec::new();
            for (&k, result) in todo.iter().zip(results) {
                match result {
                    Ok(answer) => {
                        answers[k] =
                            Some(redis::from_redis_value(answer).map_err(|e| backend(e.into()))?)
                    }
                    Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                        no_script.push(k)
                    }
                    Err(e) => return Err(backend(e)),
                }
            }
            if !no_script.is_empty() {
                // The server lost its scripts (a restart, a failover): it may have lost the
                // groups' layout keys, and it may have another clock.
                self.layouts.forget();
                self.clock.forget();
            }
            todo = no_script;
        }
        answers
            .into_iter()
            .collect::<Option<Vec<i64>>>()
            .ok_or_else(|| {
                StoreError::backend(
                    call.operation,
                    "the script cache was emptied again while the script was being reloaded",
                )
            })
    }

    /// Sends the call's commands `todo` (one pipeline per server) and its `WAIT`, loading the
    /// script on every node first when `reload`; answers each command's answer.
    async fn send_script(
        &self,
        call: &ScriptCall<'_>,
        todo: &[usize],
        reload: bool,
    ) -> Result<Vec<RedisResult<Value>>, StoreError> {
        let backend = |e: RedisError| StoreError::backend(call.operation, e);
        if reload {
            self.count_round_trips(1);
            self.conn
                .to_every_node(redis::cmd("SCRIPT").arg("LOAD").arg(call.script.source))
                .await
                .map_err(backend)?;
        }
        let commands = todo.iter().map(|&k| call.command(k)).collect();
        // A renewal runs beside its handler: it never blocks the handler's thread.
        let lane = match call.operation {
            StoreOperation::Renew => Lane::Multiplexed,
            _ => Lane::Blocking,
        };
        let sent = self
            .conn
            .send(commands, call.wait.map(|(_, cmd)| cmd), lane)
            .await
            .map_err(backend)?;
        self.count_round_trips(sent.round_trips);
        if let (Some((replicas, _)), Some(acked)) = (call.wait, sent.replicas_acked) {
            if acked < i64::from(*replicas) {
                return Err(backend(RedisError::from((
                    ErrorKind::Client,
                    "too few replicas acknowledged",
                    format!("WAIT: {acked} of {replicas} within the timeout"),
                ))));
            }
        }
        Ok(sent.answers)
    }

    /// Commits `keys` with `token`; `carried`: what a pipeline that carried the commands
    /// (a carried commit's, see [`blocking`]) answered them, read as the first attempt's.
    async fn commit_with(
        &self,
        keys: &[RecordKey],
        token: OwnerToken,
        ttl: Duration,
        carried: Option<Vec<RedisResult<Value>>>,
    ) -> Result<Vec<CommitOutcome>, StoreError> {
        let at = self
            .layouts
            .locate(&self.conn, keys, StoreOperation::Commit)
            .await?;
        let now = self.server_time().await?;
        let commit = CommitArgs::new(&at, token, ttl, self.heal_below, now);
        let call = self.commit_call(&at, &commit);
        let answers = self.run(&call, carried).await?;
        Ok(commit_outcomes(answers, |k| {
            Some(at[k].records().to_string())
        }))
    }

    /// The server's time for a commit's script: on one server the clock's reading (read now,
    /// one round trip, when there is none yet); on a Cluster `None`: each script reads its
    /// master's `TIME`.
    async fn server_time(&self) -> Result<Option<ServerTime>, StoreError> {
        if self.conn.deployment() == "cluster" {
            return Ok(None);
        }
        if let Some(now) = self.clock.now() {
            return Ok(Some(now));
        }
        let backend = |e: RedisError| StoreError::backend(StoreOperation::Commit, e);
        let asked = std::time::Instant::now();
        let answer = self
            .conn
            .to_every_node(&redis::cmd("TIME"))
            .await
            .map_err(backend)?;
        self.count_round_trips(1);
        self.clock.read(
            clock::time_ms(answer).map_err(backend)?,
            asked,
            std::time::Instant::now(),
        );
        Ok(self.clock.now())
    }

    /// The commit script over the records `at`, and the store's `WAIT` after it.
    fn commit_call<'a>(&'a self, at: &'a [Location], commit: &'a CommitArgs) -> ScriptCall<'a> {
        ScriptCall {
            operation: StoreOperation::Commit,
            script: &self.scripts.commit,
            at,
            args: ScriptArgs::Commit(commit),
            wait: self.wait.as_ref(),
        }
    }

    /// Finishes a detached commit with what became of its commands, on the thread that
    /// learned it (its own, or the sweeper's). What needs another round trip (a `NOSCRIPT`
    /// answer, or a commit dropped unsent) goes on a task on `runtime`.
    fn finish_carried(self, commit: DetachedCommit, carried: Carried, runtime: &Handle) {
        let carried = match carried {
            Carried::Failed(e) => {
                return commit.finish(Err(StoreError::backend(StoreOperation::Commit, e)))
            }
            Carried::Answered(answers) => {
                let ints: Option<Vec<i64>> = answers
                    .iter()
                    .map(|a| match a {
                        Ok(Value::Int(n)) => Some(*n),
                        _ => None,
                    })
                    .collect();
                match ints {
                    Some(ints) if ints.len() == commit.keys().len() => {
                        let records = |k: usize| {
                            let key = std::slice::from_ref(&commit.keys()[k]);
                            let at = self.layouts.locate_known(key).unwrap_or_default();
                            at.first().map(|at| at.records().to_string())
                        };
                        let outcomes = commit_outcomes(ints, records);
                        return commit.finish(Ok(outcomes));
                    }
                    // An error (`NOSCRIPT`, say) or an odd answer: read as `commit` reads.
                    _ => Some(answers),
                }
            }
            // Never sent: sent now.
            Carried::Dropped => None,
        };
        runtime.spawn(async move {
            let (keys, token, ttl) = (commit.keys(), commit.token(), commit.ttl());
            let result = self.commit_with(keys, token, ttl, carried).await;
            commit.finish(result);
        });
    }
}

/// The outcomes of a commit's answers; a records hash that held values that were not stamps
/// (deleted by the commit as dead records) is logged, with its key (`records`: the records hash
/// of the commit's `k`th key, asked only then).
fn commit_outcomes(
    answers: Vec<i64>,
    records: impl Fn(usize) -> Option<String>,
) -> Vec<CommitOutcome> {
    answers
        .into_iter()
        .enumerate()
        .map(|(k, answer)| {
            let (outcome, bad) = scripts::commit_answer(answer);
            if bad > 0 {
                tracing::warn!(
                    key = records(k).unwrap_or_default(),
                    values = bad,
                    "a records hash held values that are not stamps (nor a meta field): read as dead records and deleted"
                );
            }
            match outcome {
                0 => CommitOutcome::Committed,
                2 => CommitOutcome::AlreadyConsumed,
                _ => CommitOutcome::Lost,
            }
        })
        .collect()
}

/// One script over a batch of records: what [`RedisStore::run`] sends.
struct ScriptCall<'a> {
    operation: StoreOperation,
    script: &'a LuaScript,
    at: &'a [Location],
    args: ScriptArgs<'a>,
    /// `WAIT` after the commands (commits with replicas to wait for).
    wait: Option<&'a (u32, Cmd)>,
}

/// What a script gets beside its keys.
enum ScriptArgs<'a> {
    /// The claim script: the owner value and the processing TTL in ms.
    Claim { owner: &'a str, ttl: &'a str },
    /// The commit script.
    Commit(&'a CommitArgs),
    /// The release script: the owner value.
    Release { owner: &'a str },
    /// The renew script: the owner value and the processing TTL in ms.
    Renew { owner: &'a str, ttl: &'a str },
}

/// The commit script's arguments but the record's own.
struct CommitArgs {
    owner: String,
    record_ttl_ms: u64,
    /// The most fields a hashtable may hold to be rewritten into a listpack.
    heal_below: u64,
    /// The server's time, or `None`: the script reads `TIME`.
    now: Option<ServerTime>,
}

impl CommitArgs {
    /// The arguments for committing the records `at`, kept `ttl`, with `token`. A TTL longer
    /// than a group keeps records ([`layout::MAX_KEPT_UNITS`]) is logged, once.
    fn new(
        at: &[Location],
        token: OwnerToken,
        ttl: Duration,
        heal_below: u64,
        now: Option<ServerTime>,
    ) -> Self {
        let record_ttl_ms = super::clamp_ttl(ttl).as_millis() as u64;
        if let Some(loc) = at
            .iter()
            .find(|loc| record_ttl_ms > loc.layout.longest_kept_ms())
        {
            static WARNED: std::sync::atomic::AtomicBool =
                std::sync::atomic::AtomicBool::new(false);
            if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(
                    record_ttl_ms,
                    kept_ms = loc.layout.longest_kept_ms(),
                    "a commit keeps records longer than the Redis store's layout can (60 units, 7.5 times the record_ttl of the store that laid the group out): they are kept that long; set RedisStoreBuilder::record_ttl to the listeners' record TTL"
                );
            }
        }
        CommitArgs {
            owner: owner_value(token),
            record_ttl_ms,
            heal_below,
            now,
        }
    }
}

impl<'a> ScriptCall<'a> {
    fn len(&self) -> usize {
        self.at.len()
    }

    /// `EVALSHA` of the script on the record at `k`.
    fn command(&self, k: usize) -> KeyedCommand<'a> {
        let loc = &self.at[k];
        let hash = self.script.script.get_hash();
        let cmd = match &self.args {
            ScriptArgs::Claim { owner, ttl } | ScriptArgs::Renew { owner, ttl } => {
                let mut cmd = sized_cmd("EVALSHA", 9, 2 * loc.claim.len() + 120);
                cmd.arg(hash)
                    .arg(2)
                    .arg(&loc.claim)
                    .arg(loc.records())
                    .arg(*owner)
                    .arg(*ttl)
                    .arg(&loc.field[..])
                    .arg(loc.layout.unit_ms);
                cmd
            }
            ScriptArgs::Commit(c) => commit_command(hash, loc, c),
            ScriptArgs::Release { owner } => {
                let mut cmd = sized_cmd("EVALSHA", 8, 2 * loc.claim.len() + 100);
                cmd.arg(hash)
                    .arg(2)
                    .arg(&loc.claim)
                    .arg(loc.records())
                    .arg(*owner)
                    .arg(&loc.field[..])
                    .arg(loc.layout.unit_ms);
                cmd
            }
        };
        KeyedCommand {
            key: &loc.claim,
            cmd,
        }
    }
}

/// `EVALSHA` of the commit script (`hash`) on the record at `loc` ([`scripts::COMMIT`] names
/// the arguments): with the server's time known, the unit, stamp and expiry are worked out
/// here, so that the script only writes them.
fn commit_command(hash: &str, loc: &Location, c: &CommitArgs) -> Cmd {
    let own_key = match loc.layout.shards_keep(c.record_ttl_ms) {
        true => 0,
        false => c.record_ttl_ms,
    };
    let unit_ms = loc.layout.unit_ms;
    let mut cmd = sized_cmd("EVALSHA", 17, 2 * loc.claim.len() + 220);
    cmd.arg(hash)
        .arg(2)
        .arg(&loc.claim)
        .arg(loc.records())
        .arg(&c.owner)
        .arg(&loc.field[..])
        .arg(own_key)
        .arg(loc.layout.meta());
    match c.now {
        Some(now) => {
            let kept = c.record_ttl_ms.min(loc.layout.longest_kept_ms());
            let dead_from = (now.hi + kept) / unit_ms + 1;
            let expire_at = dead_from * unit_ms + now.hi - now.lo + 1;
            cmd.arg(now.lo / unit_ms)
                .arg(dead_from % layout::STAMP_MODULUS)
                .arg(expire_at)
                .arg(expire_at - now.hi)
                .arg(c.heal_below)
                .arg(now.lo)
                .arg(now.hi);
        }
        None => {
            cmd.arg("").arg("").arg("").arg("");
            cmd.arg(c.heal_below).arg("").arg("");
        }
    }
    cmd.arg(c.record_ttl_ms);
    cmd
}

/// The major version in an `INFO server` answer (0 when absent).
fn server_major_version(info: &str) -> u32 {
    info.lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .and_then(|v| v.trim().split('.').next()?.parse().ok())
        .unwrap_or(0)
}

fn ttl_ms(ttl: Duration) -> String {
    super::clamp_ttl(ttl).as_millis().to_string()
}

impl DedupStore for RedisStore {
    fn claim<'a>(
        &'a self,
        keys: &'a [RecordKey],
        token: OwnerToken,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Vec<ClaimOutcome>, StoreError>> {
        Box::pin(async move {
            let (owner, ttl) = (owner_value(token), ttl_ms(ttl));
            let at = self
                .layouts
                .locate(&self.conn, keys, StoreOperation::Claim)
                .await?;
            if self.native_claim {
                return self.claim_native(&at, &owner, &ttl).await;
            }
            let call = ScriptCall {
                operation: StoreOperation::Claim,
                script: &self.scripts.claim,
                at: &at,
                args: ScriptArgs::Claim {
                    owner: &owner,
                    ttl: &ttl,
                },
                wait: None,
            };
            let answers = self.run(&call, None).await?;
            answers
                .into_iter()
                .map(|a| match a {
                    0 => Ok(ClaimOutcome::Claimed),
                    1 => Ok(ClaimOutcome::InFlight),
                    2 => Ok(ClaimOutcome::Consumed),
                    _ => Err(StoreError::CorruptRecord {
                        operation: StoreOperation::Claim,
                        detail: scripts::UNREADABLE_VALUE.to_owned(),
                    }),
                })
                .collect()
        })
    }

    fn commit<'a>(
        &'a self,
        keys: &'a [RecordKey],
        token: OwnerToken,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Vec<CommitOutcome>, StoreError>> {
        Box::pin(self.commit_with(keys, token, ttl, None))
    }

    /// Left for the calling thread's next pipeline (see [`RedisStoreBuilder::commit_linger`]);
    /// given back where a call could not carry it (a Cluster or Sentinel, `WAIT` after
    /// commits, a zero linger, a thread that may not block, outside a Tokio runtime).
    fn commit_detached(&self, commit: DetachedCommit) -> Option<DetachedCommit> {
        // With `WAIT` after commits the builder gives the lane no linger: it carries nothing.
        let Some(lane) = self.conn.blocking_lane() else {
            return Some(commit);
        };
        let Ok(runtime) = Handle::try_current() else {
            return Some(commit);
        };
        // Every group a commit touches was located by its claim; a group never seen (a commit
        // without a claim in this process) goes the awaited way, which reads its layout.
        let Some(at) = self.layouts.locate_known(commit.keys()) else {
            return Some(commit);
        };
        // The server's time, read by a claim already (else the awaited way reads it).
        let Some(now) = self.clock.now() else {
            return Some(commit);
        };
        let mut slot = Some(commit);
        let carried = lane.carry(&runtime, || {
            let commit = slot.take().expect("the rider is built once");
            let args = CommitArgs::new(
                &at,
                commit.token(),
                commit.ttl(),
                self.heal_below,
                Some(now),
            );
            let call = self.commit_call(&at, &args);
            let commands = (0..call.len()).map(|k| call.command(k).cmd).collect();
            let (store, spawn_on) = (self.clone(), runtime.clone());
            Rider::new(commands, move |carried| {
                store.finish_carried(commit, carried, &spawn_on)
            })
        });
        match carried {
            true => None,
            false => slot,
        }
    }

    fn release<'a>(
        &'a self,
        keys: &'a [RecordKey],
        token: OwnerToken,
    ) -> BoxFuture<'a, Result<Vec<bool>, StoreError>> {
        Box::pin(async move {
            let owner = owner_value(token);
            let at = self
                .layouts
                .locate(&self.conn, keys, StoreOperation::Release)
                .await?;
            let answers = self.run(&self.release_call(&at, &owner), None).await?;
            Ok(answers.into_iter().map(|a| a == 1).collect())
        })
    }

    fn renew<'a>(
        &'a self,
        keys: &'a [RecordKey],
        token: OwnerToken,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Vec<bool>, StoreError>> {
        Box::pin(async move {
            let (owner, ttl) = (owner_value(token), ttl_ms(ttl));
            let at = self
                .layouts
                .locate(&self.conn, keys, StoreOperation::Renew)
                .await?;
            let call = ScriptCall {
                operation: StoreOperation::Renew,
                script: &self.scripts.renew,
                at: &at,
                args: ScriptArgs::Renew {
                    owner: &owner,
                    ttl: &ttl,
                },
                wait: None,
            };
            let answers = self.run(&call, None).await?;
            Ok(answers.into_iter().map(|a| a == 1).collect())
        })
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}

/// What `testing::RedisStoreProbe` reads (feature `test-util`).
#[cfg(feature = "test-util")]
impl RedisStore {
    pub(crate) fn round_trips_so_far(&self) -> u64 {
        self.round_trips.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn script_of(operation: StoreOperation) -> Option<&'static str> {
        match operation {
            StoreOperation::Claim => Some(CLAIM),
            StoreOperation::Commit => Some(COMMIT),
            StoreOperation::Release => Some(RELEASE),
            StoreOperation::Renew => Some(RENEW),
            _ => None,
        }
    }

    pub(crate) fn claim_key_of(&self, key: &RecordKey) -> Option<String> {
        let at = self.layouts.locate_known(std::slice::from_ref(key))?;
        at.into_iter().next().map(|at| at.claim)
    }

    pub(crate) fn shared_connection(&self) -> RedisConnection {
        self.conn.clone()
    }
}
