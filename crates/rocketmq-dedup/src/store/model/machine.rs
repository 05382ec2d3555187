//! The state machine of a record in time: what a call answers and leaves, when it takes
//! effect at some instant between its call and its answer, and when a record may have expired
//! (judged from the instants its write could have happened at, widened by the clock margin).

use std::collections::BTreeSet;

use super::workload::{Answer, KeyCall, OpKind};

/// A key's record as the model sees it: times are microseconds since the run began.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Record {
    Absent,
    Consuming { token: u64, written: Span, ttl: Ttl },
    Consumed { written: Span, ttl: Ttl },
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

/// The points after `call` takes effect at `point` (none when its answer is impossible; a
/// failed call takes effect with whatever answer).
pub(super) fn step(call: &KeyCall, point: &Point, margin: u64) -> Vec<Point> {
    let earliest = point.now.max(call.start);
    if earliest > call.end {
        return Vec::new();
    }
    // The write that made the record came before this call took effect, so by its answer.
    let mut before = point.record.clone();
    if let Record::Consuming { written, .. } | Record::Consumed { written, .. } = &mut before {
        written.hi = written.hi.min(call.end.div_ceil(1000) * 1000);
    }
    let mut out = Vec::new();
    for (record, now) in expiries(&before, earliest, call.end, margin) {
        // Whole milliseconds, rounded outwards: a wider span permits more, never less.
        let now = now / 1000 * 1000;
        let written = Span {
            lo: now,
            hi: call.end.div_ceil(1000) * 1000,
        };
        let (answer, after) = apply(call, &record, written);
        if call.answer.is_none_or(|seen| seen == answer) {
            out.push(Point {
                record: after,
                now,
                pending: point.pending.clone(),
            });
        }
    }
    out
}

/// The record as it may stand at an instant in `earliest..=latest`: still alive, or expired
/// (which moves the earliest instant to its expiry).
fn expiries(record: &Record, earliest: u64, latest: u64, margin: u64) -> Vec<(Record, u64)> {
    let (written, ttl) = match record {
        Record::Absent => return vec![(Record::Absent, earliest)],
        Record::Consuming { written, ttl, .. } | Record::Consumed { written, ttl } => {
            (written, ttl)
        }
    };
    let Some(ttl) = *ttl else {
        return vec![(record.clone(), earliest)];
    };
    let mut out = Vec::new();
    let alive_until = written.hi.saturating_add(ttl).saturating_add(margin);
    if earliest < alive_until {
        out.push((record.clone(), earliest));
    }
    let expired_from = written.lo.saturating_add(ttl).saturating_sub(margin);
    if latest >= expired_from {
        out.push((Record::Absent, earliest.max(expired_from)));
    }
    out
}

/// The state machine: the answer of `call` on `record`, and the record after it.
fn apply(call: &KeyCall, record: &Record, written: Span) -> (Answer, Record) {
    let ttl = call.ttl;
    let mine = |r: &Record| matches!(r, Record::Consuming { token, .. } if *token == call.token);
    match call.kind {
        OpKind::Claim => match record {
            Record::Absent => (
                Answer::Claimed,
                Record::Consuming {
                    token: call.token,
                    written,
                    ttl,
                },
            ),
            Record::Consuming { .. } if mine(record) => (Answer::Claimed, record.clone()),
            Record::Consuming { .. } => (Answer::InFlight, record.clone()),
            Record::Consumed { .. } => (Answer::Consumed, record.clone()),
        },
        OpKind::Commit => match record {
            Record::Consumed { .. } => (Answer::AlreadyConsumed, record.clone()),
            Record::Consuming { .. } if !mine(record) => (Answer::Lost, record.clone()),
            _ => (Answer::Committed, Record::Consumed { written, ttl }),
        },
        OpKind::Release if mine(record) => (Answer::Held(true), Record::Absent),
        OpKind::Release => (Answer::Held(false), record.clone()),
        OpKind::Renew if mine(record) => (
            Answer::Held(true),
            Record::Consuming {
                token: call.token,
                written,
                ttl,
            },
        ),
        OpKind::Renew => (Answer::Held(false), record.clone()),
    }
}
