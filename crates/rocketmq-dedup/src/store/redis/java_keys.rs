//! [`JavaKeys`]: a Redis store that also honours, and writes, the Java library's keys, so
//! that Java (RocketMQDedupListener) and Rust consumers can share a group while it moves
//! over.
//!
//! The Java library keeps one string key per record, `MSGDEDUP:<app>:<topic>[:<tag>]:<key>`
//! (the tag segment only when the message has a tag), holding `CONSUMING` (a claim, with the
//! processing TTL) or `CONSUMED` (with the record TTL). Around each call of the Redis store
//! it wraps, [`JavaKeys`] does what a Java consumer would:
//!
//! - claim: the Java keys are read first. A key that is `CONSUMED` is answered
//!   [`ClaimOutcome::Consumed`], one that is `CONSUMING` [`ClaimOutcome::InFlight`] (unless
//!   the Rust record is consumed, or held by this very token: claims stay idempotent); the
//!   others are claimed in the Rust store, and where that claim won, `SET <java key>
//!   CONSUMING NX PX <ttl>` follows, with the TTL the Rust claim has left (`PTTL`). A Java
//!   key a Java consumer took or finished in between wins: the Rust claim is released;
//! - commit: the Rust commit, then `SET <java key> CONSUMED PX <record ttl>` where it
//!   committed;
//! - release: the Java key is deleted while it says `CONSUMING`, then the Rust release;
//! - renew: the Rust renew, then `PEXPIRE <java key>` where it renewed.
//!
//! The Java key's parts are the record key's: the listener's namespace is the Java
//! `applicationName`, and the tag is in the key only when the key strategy is tag-qualified
//! ([`KeyStrategy::tag_qualified`](crate::KeyStrategy::tag_qualified)), which the Java
//! library always is. A compact key (parts hashed together) has no Java key and is left to
//! the Rust store alone.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use rocketmq_dedup::store::{JavaKeys, RedisStore};
//!
//! let store = JavaKeys::new(RedisStore::builder("redis://127.0.0.1:6379").connect().await?);
//! # let _ = store; Ok(()) }
//! ```
//!
//! A claim costs three more pipelines (and one per key that meets a Java `CONSUMING` key), the
//! other calls one more, and
//! a commit after the ack is awaited on a task rather than carried by the next claim: use it
//! while Java consumers remain, then go back to the plain store.

use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use redis::{Cmd, Value};

use super::connection::Lane;
use super::pipeline::KeyedCommand;
use super::RedisStore;
use crate::error::{StoreError, StoreOperation};
use crate::record_key::RecordKey;
use crate::store::admin::{RecordAdmin, RecordState};
use crate::store::{clamp_ttl, ClaimOutcome, CommitOutcome, DedupStore, OwnerToken};

/// The Java library's key prefix.
pub(crate) const JAVA_KEY_PREFIX: &str = "MSGDEDUP";
const CONSUMING: &[u8] = b"CONSUMING";
const CONSUMED: &[u8] = b"CONSUMED";

/// A [`RedisStore`] that also honours and writes the Java library's keys (see the module
/// docs).
#[derive(Clone, Debug)]
pub struct JavaKeys {
    store: RedisStore,
}

/// What a Java key said to a claim.
#[derive(Clone, Copy, PartialEq, Eq)]
enum JavaClaim {
    /// No Java key, or a compact record key: the Rust store decides.
    Absent,
    /// It was `CONSUMED`.
    Consumed,
    /// It was `CONSUMING` (or anything else).
    Consuming,
}

impl JavaKeys {
    /// Wraps `store`.
    pub fn new(store: RedisStore) -> Self {
        JavaKeys { store }
    }

    /// The Java library's key of `key`, when it has parts.
    pub fn java_key(key: &RecordKey) -> Option<String> {
        let parts = key.parts()?;
        let tag = match parts.tag.is_empty() {
            true => String::new(),
            false => format!(":{}", parts.tag),
        };
        Some(format!(
            "{JAVA_KEY_PREFIX}:{}:{}{tag}:{}",
            parts.namespace, parts.topic, parts.key
        ))
    }

    /// Sends one command per Java key (built by `cmd`); answers one value per record key
    /// (`None` where it has no Java key or `only` is false).
    async fn send(
        &self,
        operation: StoreOperation,
        keys: &[RecordKey],
        only: impl Fn(usize) -> bool,
        cmd: impl Fn(usize, &str) -> Cmd,
    ) -> Result<Vec<Option<Value>>, StoreError> {
        let java: Vec<Option<String>> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| only(i).then(|| Self::java_key(k)).flatten())
            .collect();
        self.send_to(operation, &java, cmd).await
    }

    /// Sends one command (built by `cmd`) to each key of `targets` that is `Some`, one
    /// pipeline per server; answers one value per target (`None` where it is `None`).
    async fn send_to(
        &self,
        operation: StoreOperation,
        targets: &[Option<String>],
        cmd: impl Fn(usize, &str) -> Cmd,
    ) -> Result<Vec<Option<Value>>, StoreError> {
        let commands: Vec<KeyedCommand<'_>> = targets
            .iter()
            .enumerate()
            .filter_map(|(i, key)| {
                key.as_deref().map(|key| KeyedCommand {
                    key,
                    cmd: cmd(i, key),
                })
            })
            .collect();
        if commands.is_empty() {
            return Ok(vec![None; targets.len()]);
        }
        let sent = self
            .store
            .conn
            .send(commands, None, Lane::Multiplexed)
            .await
            .map_err(|e| StoreError::backend(operation, e))?;
        let mut answers = sent.answers.into_iter();
        targets
            .iter()
            .map(|key| match key {
                None => Ok(None),
                Some(_) => match answers.next() {
                    Some(Ok(value)) => Ok(Some(value)),
                    Some(Err(e)) => Err(StoreError::backend(operation, e)),
                    None => Err(StoreError::CorruptRecord {
                        operation,
                        detail: "fewer answers than commands".to_owned(),
                    }),
                },
            })
            .collect()
    }

    /// What each Java key of `keys` holds.
    async fn read_java(&self, keys: &[RecordKey]) -> Result<Vec<JavaClaim>, StoreError> {
        let values = self
            .send(
                StoreOperation::Claim,
                keys,
                |_| true,
                |_, key| {
                    let mut cmd = redis::cmd("GET");
                    cmd.arg(key);
                    cmd
                },
            )
            .await?;
        Ok(values.into_iter().map(java_claim).collect())
    }

    /// `SET … CONSUMING NX PX <ttl> GET` for the first occurrence of each key with a `ttl`
    /// (milliseconds); answers what each key held before (its later occurrences follow the
    /// first).
    async fn set_java_claims(
        &self,
        keys: &[RecordKey],
        ttl: &[Option<u64>],
    ) -> Result<Vec<JavaClaim>, StoreError> {
        let first: Vec<usize> = (0..keys.len())
            .map(|i| keys[..i].iter().position(|k| k == &keys[i]).unwrap_or(i))
            .collect();
        let values = self
            .send(
                StoreOperation::Claim,
                keys,
                |i| first[i] == i && ttl[i].is_some(),
                |i, key| {
                    let mut cmd = redis::cmd("SET");
                    cmd.arg(key)
                        .arg(CONSUMING)
                        .arg("NX")
                        .arg("PX")
                        .arg(ttl[i].unwrap_or(1))
                        .arg("GET");
                    cmd
                },
            )
            .await?;
        let before: Vec<JavaClaim> = values.into_iter().map(java_claim).collect();
        Ok((0..keys.len()).map(|i| before[first[i]]).collect())
    }

    /// How long the Rust claim of each key `won` has left, at most `cap` milliseconds, read
    /// now (`PTTL`, one pipeline per server); `None` where it was not won or its claim is gone.
    /// A claim again with the same token keeps the claim's TTL (the contract), so the Java key
    /// written for it must not get a fresh one.
    async fn claims_left(
        &self,
        keys: &[RecordKey],
        won: &[bool],
        cap: u64,
    ) -> Result<Vec<Option<u64>>, StoreError> {
        // The claim just located every key; a store that forgot the layouts since (a `NOSCRIPT`
        // answer in between) has a fresh claim's bound only.
        let Some(at) = self.store.layouts.locate_known(keys) else {
            return Ok(won.iter().map(|&won| won.then_some(cap)).collect());
        };
        let claims: Vec<Option<String>> = (0..keys.len())
            .map(|i| won[i].then(|| at[i].claim.clone()))
            .collect();
        let asked = Instant::now();
        let pttl = |_: usize, key: &str| {
            let mut cmd = redis::cmd("PTTL");
            cmd.arg(key);
            cmd
        };
        let answers = self.send_to(StoreOperation::Claim, &claims, pttl).await?;
        let spent = asked.elapsed().as_millis() as u64;
        answers
            .into_iter()
            .map(|answer| match answer {
                None => Ok(None),
                // `-2`: the claim is gone; `-1` (no TTL) is never written by the store.
                Some(Value::Int(left)) => Ok(u64::try_from(left)
                    .ok()
                    .map(|ms| ms.saturating_sub(spent).min(cap))
                    .filter(|&ms| ms > 0)),
                Some(_) => Err(StoreError::CorruptRecord {
                    operation: StoreOperation::Claim,
                    detail: "a claim key's PTTL was not a number".to_owned(),
                }),
            })
            .collect()
    }

    /// What the Java keys of `keys` say, a `CONSUMING` one read beside its Rust record; and
    /// which of those this token holds (a claim again).
    async fn read_java_beside(
        &self,
        keys: &[RecordKey],
        token: OwnerToken,
    ) -> Result<(Vec<JavaClaim>, Vec<bool>), StoreError> {
        let mut said = self.read_java(keys).await?;
        let mut ours = vec![false; keys.len()];
        for i in 0..keys.len() {
            if said[i] == JavaClaim::Consuming {
                said[i] = self.java_claim_beside(&keys[i], token).await?;
                ours[i] = said[i] == JavaClaim::Absent;
            }
        }
        Ok((said, ours))
    }

    /// The Rust claim of the keys no Java key decided; the others answered as their Java key
    /// said.
    async fn claim_rust(
        &self,
        keys: &[RecordKey],
        said: &[JavaClaim],
        token: OwnerToken,
        ttl: Duration,
    ) -> Result<Vec<ClaimOutcome>, StoreError> {
        let mut outcomes: Vec<ClaimOutcome> = said
            .iter()
            .map(|s| match s {
                JavaClaim::Consumed => ClaimOutcome::Consumed,
                _ => ClaimOutcome::InFlight,
            })
            .collect();
        let to_claim: Vec<usize> = (0..keys.len())
            .filter(|&i| said[i] == JavaClaim::Absent)
            .collect();
        let batch: Vec<RecordKey> = to_claim.iter().map(|&i| keys[i].clone()).collect();
        let claimed = self.store.claim(&batch, token, ttl).await?;
        for (&i, outcome) in to_claim.iter().zip(claimed) {
            outcomes[i] = outcome;
        }
        Ok(outcomes)
    }

    /// The Java claims of what this token won, set after the Rust ones with what each Rust
    /// claim has left (so a Java claim never outlives its Rust claim, a claim again included).
    /// One a Java consumer took or finished meanwhile wins: the Rust claim is released and the
    /// outcome is the Java key's.
    async fn claim_java(
        &self,
        keys: &[RecordKey],
        said: &[JavaClaim],
        ours: &[bool],
        outcomes: &mut [ClaimOutcome],
        token: OwnerToken,
        ttl_ms: u64,
    ) -> Result<(), StoreError> {
        let won: Vec<bool> = (0..keys.len())
            .map(|i| said[i] == JavaClaim::Absent && outcomes[i] == ClaimOutcome::Claimed)
            .collect();
        let ttl = self.claims_left(keys, &won, ttl_ms).await?;
        let before = self.set_java_claims(keys, &ttl).await?;
        let mut lost = Vec::new();
        for i in 0..keys.len() {
            let taken = match before[i] {
                JavaClaim::Consumed => Some(ClaimOutcome::Consumed),
                JavaClaim::Consuming if !ours[i] => Some(ClaimOutcome::InFlight),
                _ => None,
            };
            if let (true, Some(outcome)) = (won[i], taken) {
                outcomes[i] = outcome;
                lost.push(keys[i].clone());
            }
        }
        if !lost.is_empty() {
            self.store.release(&lost, token).await?;
        }
        Ok(())
    }

    /// What a Java `CONSUMING` key of `key` means beside its Rust record: consumed when the
    /// record is; the Rust store's to decide when `token` holds the record (a claim again);
    /// else in flight.
    async fn java_claim_beside(
        &self,
        key: &RecordKey,
        token: OwnerToken,
    ) -> Result<JavaClaim, StoreError> {
        Ok(match self.store.inspect(key).await? {
            RecordState::Consumed { .. } => JavaClaim::Consumed,
            RecordState::Consuming { owner, .. } if owner == token.get() => JavaClaim::Absent,
            _ => JavaClaim::Consuming,
        })
    }
}

/// What a Java key's value (from `GET`, or `SET … GET`) says.
fn java_claim(value: Option<Value>) -> JavaClaim {
    match value {
        None | Some(Value::Nil) => JavaClaim::Absent,
        Some(Value::BulkString(v)) if v == CONSUMED => JavaClaim::Consumed,
        Some(_) => JavaClaim::Consuming,
    }
}

fn ttl_ms(ttl: Duration) -> u64 {
    clamp_ttl(ttl).as_millis() as u64
}

/// `ttl` less the time since `started` (at least a millisecond): a Java key written after the
/// Rust record ends no later than the record, which was written after `started`.
fn ttl_left_ms(ttl: Duration, started: Instant) -> u64 {
    ttl_ms(clamp_ttl(ttl).saturating_sub(started.elapsed()))
}

impl DedupStore for JavaKeys {
    fn claim<'a>(
        &'a self,
        keys: &'a [RecordKey],
        token: OwnerToken,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Vec<ClaimOutcome>, StoreError>> {
        Box::pin(async move {
            let started = Instant::now();
            let (said, ours) = self.read_java_beside(keys, token).await?;
            let mut outcomes = self.claim_rust(keys, &said, token, ttl).await?;
            let ttl_ms = ttl_left_ms(ttl, started);
            self.claim_java(keys, &said, &ours, &mut outcomes, token, ttl_ms)
                .await?;
            Ok(outcomes)
        })
    }

    fn commit<'a>(
        &'a self,
        keys: &'a [RecordKey],
        token: OwnerToken,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Vec<CommitOutcome>, StoreError>> {
        Box::pin(async move {
            let started = Instant::now();
            let outcomes = self.store.commit(keys, token, ttl).await?;
            let ttl_ms = ttl_left_ms(ttl, started);
            // Only a record this commit wrote: an earlier one's Java key has its own TTL.
            let consumed = |i: usize| outcomes[i] == CommitOutcome::Committed;
            self.send(StoreOperation::Commit, keys, consumed, |_, key| {
                let mut cmd = redis::cmd("SET");
                cmd.arg(key).arg(CONSUMED).arg("PX").arg(ttl_ms);
                cmd
            })
            .await?;
            Ok(outcomes)
        })
    }

    fn release<'a>(
        &'a self,
        keys: &'a [RecordKey],
        token: OwnerToken,
    ) -> BoxFuture<'a, Result<Vec<bool>, StoreError>> {
        Box::pin(async move {
            // The Java claim goes first, so it never outlives the Rust one.
            self.send(StoreOperation::Release, keys, |_| true, |_, key| del(key))
                .await?;
            let released = self.store.release(keys, token).await?;
            Ok(released)
        })
    }

    fn renew<'a>(
        &'a self,
        keys: &'a [RecordKey],
        token: OwnerToken,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Vec<bool>, StoreError>> {
        Box::pin(async move {
            let started = Instant::now();
            let renewed = self.store.renew(keys, token, ttl).await?;
            let ttl_ms = ttl_left_ms(ttl, started);
            self.send(
                StoreOperation::Renew,
                keys,
                |i| renewed[i],
                |_, key| {
                    let mut cmd = redis::cmd("PEXPIRE");
                    cmd.arg(key).arg(ttl_ms);
                    cmd
                },
            )
            .await?;
            Ok(renewed)
        })
    }

    fn kind(&self) -> &'static str {
        "redis-java-keys"
    }
}

/// Deletes a Java key while it is a claim (never a `CONSUMED` another call wrote since).
fn del(key: &str) -> Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
    )
    .arg(1)
    .arg(key)
    .arg(CONSUMING);
    cmd
}
