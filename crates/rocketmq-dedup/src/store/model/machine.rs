//! The state machine of a record in time: what a call answers and leaves, when it takes
//! effect at some instant between its call and its answer, and when a record may have expired
//! (judged from the instants its write could have happened at, widened by the clock margin).
//!
//! # Lingering claims
//! A store may claim in two steps (the Redis store's native claim: `SET … NX` of the claim key,
//! then reading the record) and undo the claim it made on a record it found CONSUMED a moment
//! later. Where the check allows it ([`Tolerance::lingering`]), a claim that answers CONSUMED
//! leaves such a **lingering** claim of its token beside the record (unless one is there
//! already), which may vanish at any instant: while the record lives it changes no answer (its
//! own token's release, renewal or commit deletes it); once the record expires it is a claim of
//! its token (a claim of another token answers in flight) until it vanishes or its TTL ends.
//! That is the whole anomaly: a copy deferred once, never run twice, never lost.

use std::collections::BTreeSet;

use super::workload::{Answer, KeyCall, OpKind};

/// A key's record as the model sees it: times are microseconds since the run began.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Record {
    Absent,
    Consuming {
        claim: Claim,
        /// A lingering claim (see the module docs): it may vanish at any instant.
        lingering: bool,
    },
    Consumed {
        written: Span,
        ttl: Ttl,
        /// A lingering claim beside the record.
        lingering: Option<Claim>,
    },
}

/// A claim: its token, when it was written and its TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Claim {
    token: u64,
    written: Span,
    ttl: Ttl,
}

/// When the write that made a record happened: somewhere in `lo..=hi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Span {
    lo: u64,
    hi: u64,
}

/// A TTL in microseconds; `None`: longer than any run.
type Ttl = Option<u64>;

/// One way things may stand after some operations: the record, the earliest instant the
/// next operation can take effect at, and the failed calls that may still take effect.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Point {
    pub(super) record: Record,
    pub(super) now: u64,
    /// Indices into the key's failed calls.
    pub(super) pending: BTreeSet<usize>,
}

/// The clock tolerances of a check, in microseconds.
#[derive(Debug, Clone, Copy)]
pub(super) struct Tolerance {
    /// How far the store's clock and the recorded instants may disagree.
    pub(super) margin: u64,
    /// How long after its answer a failed call may still take effect.
    pub(super) grace: u64,
    /// How much longer than its TTL a store may keep a CONSUMED record.
    pub(super) slack: u64,
    /// Whether a claim that finds a record CONSUMED may leave a lingering claim
    /// (see the module docs).
    pub(super) lingering: bool,
}

/// The points after `call` takes effect at `point` (none when its answer is impossible; a
/// failed call takes effect with whatever answer).
pub(super) fn step(call: &KeyCall, point: &Point, tolerance: Tolerance) -> Vec<Point> {
    let earliest = point.now.max(call.start);
    if earliest > call.end {
        return Vec::new();
    }
    // The write that made the record came before this call took effect, so by its answer.
    let mut before = point.record.clone();
    let by_answer = call.end.div_ceil(1000) * 1000;
    match &mut before {
        Record::Absent => {}
        Record::Consuming { claim, .. } => claim.written.hi = claim.written.hi.min(by_answer),
        Record::Consumed {
            written, lingering, ..
        } => {
            written.hi = written.hi.min(by_answer);
            if let Some(claim) = lingering {
                claim.written.hi = claim.written.hi.min(by_answer);
            }
        }
    }
    let mut out = Vec::new();
    for (record, now) in expiries(&before, earliest, call.end, tolerance) {
        // Whole milliseconds, rounded outwards: a wider span permits more, never less.
        let now = now / 1000 * 1000;
        let written = Span {
            lo: now,
            hi: by_answer,
        };
        for record in lingering_vanished(record) {
            for (answer, after) in apply(call, &record, written, tolerance.lingering) {
                if call.answer.is_none_or(|seen| seen == answer) {
                    out.push(Point {
                        record: after,
                        now,
                        pending: point.pending.clone(),
                    });
                }
            }
        }
    }
    out
}

/// The record, and without its lingering claim once its record expired (it may have vanished
/// at any instant). While the record lives, a lingering claim changes no answer, so whether it
/// vanished is asked only when it matters: when another claim could have replaced it, and when
/// the record expires.
fn lingering_vanished(record: Record) -> Vec<Record> {
    match &record {
        Record::Consuming {
            lingering: true, ..
        } => vec![record, Record::Absent],
        _ => vec![record],
    }
}

/// The record as it may stand at an instant in `earliest..=latest`: still alive, or expired
/// (which moves the earliest instant to its expiry). A CONSUMED record may live up to the
/// tolerance's slack longer than its TTL.
fn expiries(
    record: &Record,
    earliest: u64,
    latest: u64,
    tolerance: Tolerance,
) -> Vec<(Record, u64)> {
    let margin = tolerance.margin;
    let (written, ttl, slack) = match record {
        Record::Absent => return vec![(Record::Absent, earliest)],
        Record::Consuming { claim, .. } => (&claim.written, &claim.ttl, 0),
        Record::Consumed { written, ttl, .. } => (written, ttl, tolerance.slack),
    };
    let Some(ttl) = *ttl else {
        return vec![(record.clone(), earliest)];
    };
    let mut out = Vec::new();
    let alive_until = written
        .hi
        .saturating_add(ttl)
        .saturating_add(slack)
        .saturating_add(margin);
    if earliest < alive_until {
        out.push((record.clone(), earliest));
    }
    let expired_from = written.lo.saturating_add(ttl).saturating_sub(margin);
    if latest >= expired_from {
        let at = earliest.max(expired_from);
        // An expired record leaves its lingering claim, while that lives.
        let left = match record {
            Record::Consumed {
                lingering: Some(claim),
                ..
            } => {
                let lives = claim.ttl.is_none_or(|ttl| {
                    at < claim.written.hi.saturating_add(ttl).saturating_add(margin)
                });
                lives.then_some(Record::Consuming {
                    claim: *claim,
                    lingering: true,
                })
            }
            _ => None,
        };
        out.push((Record::Absent, at));
        if let Some(left) = left {
            out.push((left, at));
        }
    }
    out
}

/// The state machine: the answers `call` may give on `record`, and the record after each.
/// `lingering`: a claim that finds the record CONSUMED may leave a lingering claim.
fn apply(call: &KeyCall, record: &Record, written: Span, lingering: bool) -> Vec<(Answer, Record)> {
    let claim = Claim {
        token: call.token,
        written,
        ttl: call.ttl,
    };
    match call.kind {
        OpKind::Claim => apply_claim(claim, record, lingering),
        OpKind::Commit => vec![apply_commit(claim, record)],
        OpKind::Release => vec![apply_release(claim.token, record)],
        OpKind::Renew => vec![apply_renew(claim, record)],
    }
}

/// What a claim may answer, and leave.
fn apply_claim(claim: Claim, record: &Record, lingering: bool) -> Vec<(Answer, Record)> {
    match record {
        Record::Absent => vec![(
            Answer::Claimed,
            Record::Consuming {
                claim,
                lingering: false,
            },
        )],
        Record::Consuming { claim: held, .. } if held.token == claim.token => {
            vec![(Answer::Claimed, record.clone())]
        }
        Record::Consuming { .. } => vec![(Answer::InFlight, record.clone())],
        // A claim on a CONSUMED record lingers, unless one lingers already (and it may have
        // vanished since: then this one lingers).
        Record::Consumed {
            written: at,
            ttl: kept,
            lingering: held,
        } if lingering => {
            let this = (
                Answer::Consumed,
                Record::Consumed {
                    written: *at,
                    ttl: *kept,
                    lingering: Some(claim),
                },
            );
            match held {
                None => vec![this],
                Some(_) => vec![this, (Answer::Consumed, record.clone())],
            }
        }
        Record::Consumed { .. } => vec![(Answer::Consumed, record.clone())],
    }
}

/// What a commit answers, and leaves.
fn apply_commit(claim: Claim, record: &Record) -> (Answer, Record) {
    match record {
        Record::Consumed { .. } => (
            Answer::AlreadyConsumed,
            without_lingering_of(record, claim.token),
        ),
        Record::Consuming { claim: held, .. } if held.token != claim.token => {
            (Answer::Lost, record.clone())
        }
        _ => (
            Answer::Committed,
            Record::Consumed {
                written: claim.written,
                ttl: claim.ttl,
                lingering: None,
            },
        ),
    }
}

/// What a release answers, and leaves. A lingering claim's release (or renewal) while its
/// record lives deletes it and answers as if there were none (the record says CONSUMED).
fn apply_release(token: u64, record: &Record) -> (Answer, Record) {
    match record {
        Record::Consuming { claim: held, .. } if held.token == token => {
            (Answer::Held(true), Record::Absent)
        }
        Record::Consumed { .. } => (Answer::Held(false), without_lingering_of(record, token)),
        _ => (Answer::Held(false), record.clone()),
    }
}

/// What a renewal answers, and leaves.
fn apply_renew(claim: Claim, record: &Record) -> (Answer, Record) {
    match record {
        Record::Consumed { .. } => (
            Answer::Held(false),
            without_lingering_of(record, claim.token),
        ),
        Record::Consuming {
            claim: held,
            lingering,
        } if held.token == claim.token => (
            Answer::Held(true),
            Record::Consuming {
                claim,
                lingering: *lingering,
            },
        ),
        _ => (Answer::Held(false), record.clone()),
    }
}

/// `record` without the lingering claim of `token`, if it has one.
fn without_lingering_of(record: &Record, token: u64) -> Record {
    match record {
        Record::Consumed {
            written,
            ttl,
            lingering: Some(held),
        } if held.token == token => Record::Consumed {
            written: *written,
            ttl: *ttl,
            lingering: None,
        },
        other => other.clone(),
    }
}
