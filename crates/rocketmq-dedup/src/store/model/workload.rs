//! The workload: seeded workers that call a store concurrently on a few keys, and the record
//! of every call (what it asked, when it was called, when and what it answered).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::ModelOptions;
use crate::record_key::{KeyParts, RecordKey};
use crate::store::contract::commit_detached_awaited;
use crate::store::{ClaimOutcome, CommitOutcome, DedupStore, OwnerToken};

/// The four operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum OpKind {
    Claim,
    Commit,
    Release,
    Renew,
}

/// One key's answer within a call's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Answer {
    Claimed,
    InFlight,
    Consumed,
    Committed,
    AlreadyConsumed,
    Lost,
    /// Release and renew: whether the caller's claim was held.
    Held(bool),
}

/// One key's part of a call: what the model checks.
#[derive(Debug, Clone)]
pub(super) struct KeyCall {
    pub(super) kind: OpKind,
    pub(super) token: u64,
    /// Microseconds; `None`: longer than the run (a huge TTL, cut by the store).
    pub(super) ttl: Option<u64>,
    /// When the call was made and when it answered, in microseconds since the run began.
    pub(super) start: u64,
    pub(super) end: u64,
    /// `None`: the call failed, so whether (and how) it applied is unknown.
    pub(super) answer: Option<Answer>,
    /// Which call this is part of, and where in its batch the key stands.
    pub(super) batch: usize,
    pub(super) position: usize,
}

/// The calls of a run, split by key, and what it did.
#[derive(Debug, Default)]
pub(super) struct History {
    pub(super) by_key: Vec<Vec<KeyCall>>,
    pub(super) calls: usize,
    pub(super) failed_calls: usize,
    /// Calls answered with a number of entries other than the number of keys.
    pub(super) malformed_answers: usize,
}

/// One worker's view: its current claim token, the tokens it used before (stale ones), and
/// tokens that never claimed anything.
struct Tokens {
    current: OwnerToken,
    old: Vec<OwnerToken>,
}

impl Tokens {
    fn pick(&mut self, rng: &mut fastrand::Rng) -> OwnerToken {
        match rng.u8(..100) {
            0..=69 => self.current,
            70..=89 if !self.old.is_empty() => self.old[rng.usize(..self.old.len())],
            _ => OwnerToken::random(),
        }
    }

    fn renew(&mut self) {
        self.old.push(self.current);
        if self.old.len() > 8 {
            self.old.remove(0);
        }
        self.current = OwnerToken::random();
    }
}

/// Runs the workload against `store` and records it.
pub(super) async fn run<S: DedupStore + ?Sized>(store: Arc<S>, options: &ModelOptions) -> History {
    let run = fastrand::u64(..);
    let keys: Arc<Vec<RecordKey>> = Arc::new(
        (0..options.keys)
            .map(|k| {
                RecordKey::new(KeyParts {
                    prefix: "model",
                    namespace: "group",
                    topic: "Topic",
                    tag: None,
                    key: &format!("{run:x}-{k}"),
                })
            })
            .collect(),
    );
    let began = Instant::now();
    let workers: Vec<_> = (0..options.workers)
        .map(|w| {
            let (store, keys) = (store.clone(), keys.clone());
            let (seed, ops) = (options.seed.wrapping_add(w as u64), options.ops_per_worker);
            let grace = options.failed_call_grace;
            let record_ttl = options.record_ttl;
            tokio::spawn(async move {
                let plan = Plan {
                    seed,
                    ops,
                    grace,
                    record_ttl,
                };
                worker(&*store, &keys, plan, began, w).await
            })
        })
        .collect();
    let mut history = History {
        by_key: vec![Vec::new(); options.keys],
        ..Default::default()
    };
    for worker in workers {
        let (calls, malformed) = worker.await.expect("a model worker panicked");
        history.malformed_answers += malformed;
        for (key, call) in calls {
            history.calls += usize::from(call.position == 0);
            history.failed_calls += usize::from(call.position == 0 && call.answer.is_none());
            history.by_key[key].push(call);
        }
    }
    history
}

/// What one worker does: its seed, its calls, how long it backs off after a failed one, and
/// the TTL of its commits (random when `None`).
struct Plan {
    seed: u64,
    ops: usize,
    grace: Duration,
    record_ttl: Option<Duration>,
}

async fn worker<S: DedupStore + ?Sized>(
    store: &S,
    keys: &[RecordKey],
    plan: Plan,
    began: Instant,
    worker: usize,
) -> (Vec<(usize, KeyCall)>, usize) {
    let mut rng = fastrand::Rng::with_seed(plan.seed);
    let mut malformed = 0;
    let mut tokens = Tokens {
        current: OwnerToken::random(),
        old: Vec::new(),
    };
    let mut out = Vec::new();
    for op in 0..plan.ops {
        let kind = draw_kind(&mut rng);
        if kind == OpKind::Claim && rng.u8(..4) == 0 {
            tokens.renew();
        }
        let token = tokens.pick(&mut rng);
        // One to three keys, sometimes the same one twice.
        let picked: Vec<usize> = (0..rng.usize(1..=3))
            .map(|_| rng.usize(..keys.len()))
            .collect();
        let batch: Vec<RecordKey> = picked.iter().map(|&k| keys[k].clone()).collect();
        let ttl = draw_ttl(&mut rng, kind, plan.record_ttl);
        // Half the commits are detached, as a listener's background commits are.
        let detached = kind == OpKind::Commit && rng.bool();
        let start = micros(began);
        let answers = call(store, kind, detached, &batch, token, ttl).await;
        let end = micros(began);
        let answers = match answers {
            Some(a) if a.len() != batch.len() => {
                malformed += 1;
                None
            }
            other => other,
        };
        out.extend(picked.iter().enumerate().map(|(position, &key)| {
            let call = KeyCall {
                kind,
                token: token.get(),
                ttl: (ttl != Duration::MAX).then_some(ttl.as_micros() as u64),
                start,
                end,
                answer: answers.as_ref().map(|a| a[position]),
                batch: worker * 1_000_000 + op,
                position,
            };
            (key, call)
        }));
        pause(&mut rng, answers.is_none(), plan.grace).await;
    }
    (out, malformed)
}

/// A call's kind: claims most, then commits, releases and renewals.
fn draw_kind(rng: &mut fastrand::Rng) -> OpKind {
    match rng.u8(..100) {
        0..=34 => OpKind::Claim,
        35..=59 => OpKind::Commit,
        60..=79 => OpKind::Release,
        _ => OpKind::Renew,
    }
}

/// A call's TTL: a commit's is the record TTL when one is given; else 20-300 ms, or huge.
fn draw_ttl(rng: &mut fastrand::Rng, kind: OpKind, record_ttl: Option<Duration>) -> Duration {
    match (rng.u8(..100), record_ttl) {
        (_, Some(ttl)) if kind == OpKind::Commit => ttl,
        (0..=4, _) => Duration::MAX,
        _ => Duration::from_millis(rng.u64(20..=300)),
    }
}

/// The pause after a call: a consumer backs off when its store fails, at least as long as a
/// failed call may still take effect (so few answered calls overlap one); else now and then
/// a short one.
async fn pause(rng: &mut fastrand::Rng, failed: bool, grace: Duration) {
    if failed {
        let backoff = Duration::from_millis(rng.u64(20..60));
        tokio::time::sleep(grace + backoff).await;
    } else if rng.u8(..3) == 0 {
        tokio::time::sleep(Duration::from_micros(rng.u64(100..3_000))).await;
    }
}

/// Makes one call (a commit through `commit_detached` when `detached`); `None` when it
/// failed.
async fn call<S: DedupStore + ?Sized>(
    store: &S,
    kind: OpKind,
    detached: bool,
    keys: &[RecordKey],
    token: OwnerToken,
    ttl: Duration,
) -> Option<Vec<Answer>> {
    let answers = match kind {
        OpKind::Claim => store
            .claim(keys, token, ttl)
            .await
            .ok()?
            .into_iter()
            .map(|o| match o {
                ClaimOutcome::Claimed => Answer::Claimed,
                ClaimOutcome::InFlight => Answer::InFlight,
                ClaimOutcome::Consumed => Answer::Consumed,
            })
            .collect(),
        OpKind::Commit => match detached {
            true => commit_detached_awaited(store, keys, token, ttl).await,
            false => store.commit(keys, token, ttl).await,
        }
        .ok()?
        .into_iter()
        .map(|o| match o {
            CommitOutcome::Committed => Answer::Committed,
            CommitOutcome::AlreadyConsumed => Answer::AlreadyConsumed,
            CommitOutcome::Lost => Answer::Lost,
        })
        .collect(),
        OpKind::Release => store
            .release(keys, token)
            .await
            .ok()?
            .into_iter()
            .map(Answer::Held)
            .collect(),
        OpKind::Renew => store
            .renew(keys, token, ttl)
            .await
            .ok()?
            .into_iter()
            .map(Answer::Held)
            .collect(),
    };
    Some(answers)
}

fn micros(began: Instant) -> u64 {
    began.elapsed().as_micros() as u64
}
