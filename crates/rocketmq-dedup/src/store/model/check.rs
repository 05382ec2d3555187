//! The checker: is there an order of a key's operations, each at some instant between its
//! call and its answer, in which the state machine gives every answer observed?
//!
//! Batches are not transactions, so each key is checked on its own. A key's history is cut
//! where no operation is in flight; the set of states the key may be in is carried across
//! each cut. Within a piece, every order that respects real time (an operation that ended
//! before another began comes first) is searched; TTL expiry is decided per operation from
//! the instants its write could have happened at, widened by the clock margin. An operation
//! whose call failed may have been applied, at any instant up to its answer and the grace
//! after it, with any result; or not at all: failed calls do not decide where the history is
//! cut, they ride along as effects still pending.

use std::collections::{BTreeSet, HashMap};

use super::workload::{Answer, KeyCall, OpKind};

/// A key's record as the model sees it: times are microseconds since the run began.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Record {
    Absent,
    Consuming { token: u64, written: Span, ttl: Ttl },
    Consumed { written: Span, ttl: Ttl },
}

/// When the write that made a record happened: somewhere in `lo..=hi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Span {
    lo: u64,
    hi: u64,
}

/// A TTL in microseconds; `None`: longer than any run.
type Ttl = Option<u64>;

/// One way things may stand after some operations: the record, the earliest instant the
/// next operation can take effect at, and the failed calls that may still take effect.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Point {
    record: Record,
    now: u64,
    /// Indices into the key's failed calls.
    pending: BTreeSet<usize>,
}

impl Point {
    fn leeway(&self) -> Leeway {
        Leeway {
            now: self.now,
            pending: self.pending.clone(),
        }
    }
}

/// What the search found wrong with a key.
#[derive(Debug, Clone)]
pub struct Violation {
    /// The key's index in the run.
    pub key: usize,
    /// The search gave up (too many orders to try) instead of proving there is none: a
    /// failure of the check, not necessarily of the store.
    pub inconclusive: bool,
    /// The operations of the piece of history that has no valid order, as observed.
    pub calls: Vec<String>,
    /// The states the key could be in before that piece.
    pub before: Vec<String>,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.inconclusive {
            true => "the search gave up on these calls (too many orders)",
            false => "no order of these calls explains their answers",
        };
        writeln!(f, "key {}: {what}", self.key)?;
        writeln!(f, "  from any of: {}", self.before.join(" | "))?;
        for call in &self.calls {
            writeln!(f, "  {call}")?;
        }
        Ok(())
    }
}

/// The clock tolerances of a check, in microseconds.
#[derive(Debug, Clone, Copy)]
pub(super) struct Tolerance {
    /// How far the store's clock and the recorded instants may disagree.
    pub(super) margin: u64,
    /// How long after its answer a failed call may still take effect.
    pub(super) grace: u64,
}

/// Checks one key's calls (in any order); `Err` names the first piece that fails.
pub(super) fn check_key(
    key: usize,
    calls: &[KeyCall],
    tolerance: Tolerance,
) -> Result<(), Box<Violation>> {
    let (mut answered, mut failed): (Vec<KeyCall>, Vec<KeyCall>) =
        calls.iter().cloned().partition(|c| c.answer.is_some());
    for call in &mut failed {
        call.end = call.end.saturating_add(tolerance.grace);
    }
    answered.sort_by_key(|c| (c.start, c.batch, c.position));
    let mut points: Vec<Point> = Vec::from([Point {
        record: Record::Absent,
        now: 0,
        pending: (0..failed.len()).collect(),
    }]);
    for piece in pieces(&answered) {
        let next = search_piece(piece, &failed, &points, tolerance.margin);
        match next {
            Some(next) if !next.is_empty() => points = next,
            _ => {
                return Err(Box::new(Violation {
                    key,
                    inconclusive: next.is_none(),
                    calls: piece.iter().map(describe).collect(),
                    before: points.iter().map(|p| format!("{:?}", p.record)).collect(),
                }))
            }
        }
    }
    Ok(())
}

/// Cuts answered calls, sorted by start, where none is in flight.
fn pieces(calls: &[KeyCall]) -> Vec<&[KeyCall]> {
    let mut pieces = Vec::new();
    let (mut from, mut open_until) = (0, 0u64);
    for (i, call) in calls.iter().enumerate() {
        if i > from && call.start > open_until {
            pieces.push(&calls[from..i]);
            from = i;
        }
        open_until = open_until.max(call.end);
    }
    if from < calls.len() {
        pieces.push(&calls[from..]);
    }
    pieces
}

/// The most states the search of one piece may visit before it gives up.
const SEARCH_BUDGET: usize = 2_000_000;

/// Every point the piece can end in, from any of `points` (`None`: past the search budget).
/// Between the piece's calls, any pending failed call whose window is open may take effect.
fn search_piece(
    piece: &[KeyCall],
    failed: &[KeyCall],
    points: &[Point],
    margin: u64,
) -> Option<Vec<Point>> {
    let piece_end = piece.iter().map(|c| c.end).max().unwrap_or(0);
    let mut ends = Ends::default();
    let mut seen = Seen::default();
    let mut stack: Vec<(BTreeSet<usize>, Point)> = points
        .iter()
        .map(|p| (BTreeSet::new(), p.clone()))
        .collect();
    while let Some((done, mut point)) = stack.pop() {
        // A failed call whose window closed did not take effect: forget it.
        point.pending.retain(|&f| failed[f].end >= point.now);
        if done.len() == piece.len() {
            ends.add(point);
            continue;
        }
        if !seen.insert(&done, &point) {
            continue;
        }
        if seen.visited > SEARCH_BUDGET {
            return None;
        }
        // Pushed last, popped first: answered calls before failed calls' effects.
        let open = point
            .pending
            .iter()
            .filter(|&&f| failed[f].start <= piece_end);
        for &f in open {
            for mut after in step(&failed[f], &point, margin) {
                // Not applying a call that changes nothing leaves every option open.
                if after.record == point.record {
                    continue;
                }
                after.pending.remove(&f);
                stack.push((done.clone(), after));
            }
        }
        for next in candidates(piece, &done) {
            for after in step(&piece[next], &point, margin) {
                let mut done = done.clone();
                done.insert(next);
                stack.push((done, after));
            }
        }
    }
    Some(ends.into_points())
}

/// What a state still allows beyond its record: the earliest instant of its next operation,
/// and the failed calls that may still take effect.
#[derive(Debug, Clone)]
struct Leeway {
    now: u64,
    pending: BTreeSet<usize>,
}

impl Leeway {
    /// Whether a state with this leeway permits at least what one with `other` does (same
    /// record): it is no later, and may still apply (or not) every call the other may.
    fn permits(&self, other: &Leeway) -> bool {
        self.now <= other.now && self.pending.is_superset(&other.pending)
    }
}

/// Leeways none of which permits another: adding one that another permits changes nothing.
#[derive(Debug, Default)]
struct Leeways(Vec<Leeway>);

impl Leeways {
    /// Adds `leeway` unless one kept permits it; answers whether it was added.
    fn add(&mut self, leeway: Leeway) -> bool {
        if self.0.iter().any(|kept| kept.permits(&leeway)) {
            return false;
        }
        self.0.retain(|kept| !leeway.permits(kept));
        self.0.push(leeway);
        true
    }
}

/// The search states visited, by progress and record: a state is skipped when a visited one
/// permits more.
#[derive(Default)]
struct Seen {
    by_progress: HashMap<(BTreeSet<usize>, Record), Leeways>,
    visited: usize,
}

impl Seen {
    /// Records the state; `false` when one visited permits more.
    fn insert(&mut self, done: &BTreeSet<usize>, point: &Point) -> bool {
        let added = self
            .by_progress
            .entry((done.clone(), point.record.clone()))
            .or_default()
            .add(point.leeway());
        self.visited += usize::from(added);
        added
    }
}

/// The points a piece can end in, without the ones another permits more than.
#[derive(Default)]
struct Ends {
    by_record: HashMap<Record, Leeways>,
}

impl Ends {
    fn add(&mut self, point: Point) {
        let leeway = point.leeway();
        self.by_record.entry(point.record).or_default().add(leeway);
    }

    fn into_points(self) -> Vec<Point> {
        self.by_record
            .into_iter()
            .flat_map(|(record, kept)| {
                kept.0.into_iter().map(move |leeway| Point {
                    record: record.clone(),
                    now: leeway.now,
                    pending: leeway.pending,
                })
            })
            .collect()
    }
}

/// The answered calls that may take effect next: not done, their batch predecessor done, and
/// none left undone that ended before they began.
fn candidates(piece: &[KeyCall], done: &BTreeSet<usize>) -> Vec<usize> {
    let first_end = piece
        .iter()
        .enumerate()
        .filter(|(i, _)| !done.contains(i))
        .map(|(_, c)| c.end)
        .min()
        .unwrap_or(u64::MAX);
    piece
        .iter()
        .enumerate()
        .filter(|(i, c)| !done.contains(i) && c.start <= first_end)
        .filter(|(_, c)| match c.position {
            0 => true,
            p => piece
                .iter()
                .enumerate()
                .all(|(j, o)| o.batch != c.batch || o.position >= p || done.contains(&j)),
        })
        .map(|(i, _)| i)
        .collect()
}

/// The points after `call` takes effect at `point` (none when its answer is impossible; a
/// failed call takes effect with whatever answer).
fn step(call: &KeyCall, point: &Point, margin: u64) -> Vec<Point> {
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

fn describe(call: &KeyCall) -> String {
    let ttl = call
        .ttl
        .map_or_else(|| "huge".to_owned(), |t| format!("{}ms", t / 1000));
    let answer = call
        .answer
        .map_or_else(|| "failed".to_owned(), |a| format!("{a:?}"));
    format!(
        "{:>9.3}..{:>9.3} ms  {:?}(token {:x}, ttl {ttl}) -> {answer}  [batch {} #{}]",
        call.start as f64 / 1000.0,
        call.end as f64 / 1000.0,
        call.kind,
        call.token,
        call.batch,
        call.position,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(kind: OpKind, token: u64, span: (u64, u64), answer: Answer) -> KeyCall {
        KeyCall {
            kind,
            token,
            ttl: Some(100_000),
            start: span.0,
            end: span.1,
            answer: Some(answer),
            batch: span.0 as usize,
            position: 0,
        }
    }

    const TOLERANCE: Tolerance = Tolerance {
        margin: 1_000,
        grace: 0,
    };

    #[test]
    fn a_valid_history_passes_and_overlapping_calls_may_take_either_order() {
        use Answer::*;
        let calls = [
            call(OpKind::Claim, 1, (0, 10), Claimed),
            // Overlapping claims by 2 and 3: one of them may have come first... but 1 holds.
            call(OpKind::Claim, 2, (20, 40), InFlight),
            call(OpKind::Commit, 1, (30, 50), Committed),
            call(OpKind::Claim, 3, (35, 60), Consumed),
        ];
        assert!(check_key(0, &calls, TOLERANCE).is_ok());
    }

    #[test]
    fn a_commit_over_another_owner_is_caught() {
        use Answer::*;
        let calls = [
            call(OpKind::Claim, 1, (0, 10), Claimed),
            call(OpKind::Commit, 2, (20, 30), Committed),
        ];
        let violation = check_key(7, &calls, TOLERANCE).unwrap_err();
        assert_eq!(violation.key, 7);
        assert!(violation.to_string().contains("Commit"), "{violation}");
    }

    #[test]
    fn expiry_is_allowed_only_once_the_ttl_can_have_passed() {
        use Answer::*;
        let early = [
            call(OpKind::Claim, 1, (0, 10), Claimed),
            call(OpKind::Claim, 2, (50_000, 50_010), Claimed),
        ];
        assert!(
            check_key(0, &early, TOLERANCE).is_err(),
            "expired after half its TTL"
        );
        let late = [
            call(OpKind::Claim, 1, (0, 10), Claimed),
            call(OpKind::Claim, 2, (100_500, 100_510), Claimed),
        ];
        assert!(check_key(0, &late, TOLERANCE).is_ok(), "within the margin");
    }

    #[test]
    fn a_failed_call_may_or_may_not_have_applied() {
        use Answer::*;
        let mut failed = call(OpKind::Commit, 1, (20, 30), Committed);
        failed.answer = None;
        for later in [InFlight, Consumed] {
            let calls = [
                call(OpKind::Claim, 1, (0, 10), Claimed),
                failed.clone(),
                call(OpKind::Claim, 2, (40, 50), later),
            ];
            assert!(check_key(0, &calls, TOLERANCE).is_ok(), "{later:?}");
        }
    }
}
