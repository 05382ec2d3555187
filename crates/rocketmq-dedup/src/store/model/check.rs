//! The checker: is there an order of a key's operations, each at some instant between its
//! call and its answer, in which the state machine ([`machine`](super::machine)) gives every
//! answer observed?
//!
//! Batches are not transactions, so each key is checked on its own. The search is depth
//! first over the whole history of a key, and stops at the first order that explains every
//! answer: it tries the calls that answered first before others, and a failed call's effect
//! only when nothing else gets further. A failed call may have been applied, at any instant
//! up to its answer and the grace after it, with any result, or not at all. States already
//! visited, or permitted by one visited, are not visited again, so a history with no valid
//! order is searched once through; past a budget of states the key is reported
//! inconclusive rather than searched for ever.

use std::collections::{BTreeSet, HashMap};

use super::machine::{step, Point, Record, Tolerance};
use super::workload::KeyCall;

/// What the search found wrong with a key.
#[derive(Debug, Clone)]
pub struct Violation {
    /// The key's index in the run.
    pub key: usize,
    /// The search gave up (too many states to try) instead of proving there is no order: a
    /// failure of the check, not necessarily of the store.
    pub inconclusive: bool,
    /// The calls around the furthest point any order reached, as observed.
    pub calls: Vec<String>,
    /// The states the key could be in there.
    pub before: Vec<String>,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.inconclusive {
            true => "the search gave up (too many states to try) around these calls",
            false => "no order of the calls explains their answers; no order gets past these",
        };
        writeln!(f, "key {}: {what}", self.key)?;
        writeln!(f, "  from any of: {}", self.before.join(" | "))?;
        for call in &self.calls {
            writeln!(f, "  {call}")?;
        }
        Ok(())
    }
}

/// The most search states one key may take before the check gives up.
const SEARCH_BUDGET: usize = 4_000_000;

/// Checks one key's calls (in any order).
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
    let search = Search {
        calls: &answered,
        failed: &failed,
        tolerance,
    };
    search.run().map_err(|(inconclusive, progress, points)| {
        let from = progress.base.saturating_sub(2);
        let calls = answered[from..answered.len().min(progress.base + 10)]
            .iter()
            .map(describe)
            .collect();
        let mut before: Vec<String> = points.iter().map(|p| format!("{:?}", p.record)).collect();
        before.dedup();
        Box::new(Violation {
            key,
            inconclusive,
            calls,
            before,
        })
    })
}

/// Which answered calls an order has taken so far: all below `base`, and `extra` above it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
struct Progress {
    base: usize,
    extra: BTreeSet<usize>,
}

impl Progress {
    fn is_done(&self, i: usize) -> bool {
        i < self.base || self.extra.contains(&i)
    }

    fn with(&self, i: usize) -> Progress {
        let mut next = self.clone();
        next.extra.insert(i);
        while next.extra.remove(&next.base) {
            next.base += 1;
        }
        next
    }
}

struct Search<'h> {
    calls: &'h [KeyCall],
    failed: &'h [KeyCall],
    tolerance: Tolerance,
}

/// Why the search failed: gave up (`true`) or proved it; the furthest progress, and the
/// states seen there.
type Failure = (bool, Progress, Vec<Point>);

impl Search<'_> {
    fn run(&self) -> Result<(), Failure> {
        let start = Point {
            record: Record::Absent,
            now: 0,
            pending: (0..self.failed.len()).collect(),
        };
        let mut stack = vec![(Progress::default(), start)];
        let mut seen = Seen::default();
        let mut furthest = (Progress::default(), Vec::new());
        while let Some((progress, mut point)) = stack.pop() {
            if progress.base == self.calls.len() {
                return Ok(());
            }
            // A failed call whose window closed did not take effect: forget it.
            point.pending.retain(|&f| self.failed[f].end >= point.now);
            if !seen.insert(&progress, &point) {
                continue;
            }
            if seen.visited > SEARCH_BUDGET {
                return Err((true, furthest.0, furthest.1));
            }
            if progress.base > furthest.0.base {
                furthest = (progress.clone(), Vec::new());
            }
            if progress.base == furthest.0.base && furthest.1.len() < 8 {
                furthest.1.push(point.clone());
            }
            self.push_next(&progress, &point, &mut stack);
        }
        Err((false, furthest.0, furthest.1))
    }

    /// Pushes the states one step on, the most promising last (popped first): answered calls
    /// by earliest answer, after the effects of failed calls.
    fn push_next(&self, progress: &Progress, point: &Point, stack: &mut Vec<(Progress, Point)>) {
        let candidates = self.candidates(progress);
        let horizon = candidates
            .iter()
            .map(|&i| self.calls[i].end)
            .max()
            .unwrap_or(0);
        for &f in &point.pending {
            if self.failed[f].start > horizon {
                continue;
            }
            for mut after in step(&self.failed[f], point, self.tolerance) {
                // Not applying a call that changes nothing leaves every option open.
                if after.record == point.record {
                    continue;
                }
                after.pending.remove(&f);
                stack.push((progress.clone(), after));
            }
        }
        let mut by_end = candidates;
        by_end.sort_by_key(|&i| std::cmp::Reverse(self.calls[i].end));
        for i in by_end {
            for after in step(&self.calls[i], point, self.tolerance) {
                stack.push((progress.with(i), after));
            }
        }
    }

    /// The answered calls that may take effect next: not taken, their batch predecessor
    /// taken, and none left untaken that ended before they began.
    fn candidates(&self, progress: &Progress) -> Vec<usize> {
        let mut out = Vec::new();
        let mut first_end = u64::MAX;
        for i in progress.base..self.calls.len() {
            let call = &self.calls[i];
            if call.start > first_end {
                break;
            }
            if progress.is_done(i) {
                continue;
            }
            first_end = first_end.min(call.end);
            let waits_for_earlier = (progress.base..i).any(|j| {
                let other = &self.calls[j];
                other.batch == call.batch && other.position < call.position && !progress.is_done(j)
            });
            if !waits_for_earlier {
                out.push(i);
            }
        }
        out.retain(|&i| self.calls[i].start <= first_end);
        out
    }
}

/// What a state still allows beyond its record: the earliest instant of its next operation,
/// and the failed calls that may still take effect.
#[derive(Debug, Clone)]
struct Leeway {
    now: u64,
    pending: BTreeSet<usize>,
}

impl Leeway {
    fn of(point: &Point) -> Self {
        Leeway {
            now: point.now,
            pending: point.pending.clone(),
        }
    }

    /// Whether a state with this leeway permits at least what one with `other` does (same
    /// record and progress): it is no later, and may still apply (or not) every call the
    /// other may.
    fn permits(&self, other: &Leeway) -> bool {
        self.now <= other.now && self.pending.is_superset(&other.pending)
    }
}

/// The search states visited, by progress and record: a state is skipped when a visited one
/// permits more.
#[derive(Default)]
struct Seen {
    by_progress: HashMap<(Progress, Record), Vec<Leeway>>,
    visited: usize,
}

impl Seen {
    /// Records the state; `false` when one visited permits more.
    fn insert(&mut self, progress: &Progress, point: &Point) -> bool {
        let leeway = Leeway::of(point);
        let kept = self
            .by_progress
            .entry((progress.clone(), point.record.clone()))
            .or_default();
        if kept.iter().any(|k| k.permits(&leeway)) {
            return false;
        }
        kept.retain(|k| !leeway.permits(k));
        kept.push(leeway);
        self.visited += 1;
        true
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
    use super::super::workload::{Answer, OpKind};
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
        slack: 0,
        lingering: false,
    };

    #[test]
    fn a_valid_history_passes_and_overlapping_calls_may_take_either_order() {
        use Answer::*;
        let calls = [
            call(OpKind::Claim, 1, (0, 10), Claimed),
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
        assert!(!violation.inconclusive);
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

    #[test]
    fn a_lingering_claim_defers_a_copy_once_where_allowed_and_never_runs_one_twice() {
        use Answer::*;
        let lingering = Tolerance {
            lingering: true,
            ..TOLERANCE
        };
        let committed = |ttl| {
            let mut c = call(OpKind::Commit, 1, (0, 10), Committed);
            c.ttl = Some(ttl);
            c
        };
        // Claim 2 found the record CONSUMED; once it expired, claim 3 found 2's claim.
        let deferred = [
            call(OpKind::Claim, 1, (0, 5), Claimed),
            committed(50_000),
            call(OpKind::Claim, 2, (20_000, 20_010), Consumed),
            call(OpKind::Claim, 3, (60_000, 60_010), InFlight),
            call(OpKind::Claim, 4, (200_000, 200_010), Claimed),
        ];
        assert!(
            check_key(0, &deferred, TOLERANCE).is_err(),
            "not allowed by default"
        );
        assert!(check_key(0, &deferred, lingering).is_ok());
        // Without a claim during the record's life, nothing lingers.
        let no_claim = [
            call(OpKind::Claim, 1, (0, 5), Claimed),
            committed(50_000),
            call(OpKind::Claim, 3, (60_000, 60_010), InFlight),
        ];
        assert!(check_key(0, &no_claim, lingering).is_err());
        // Two copies run after the expiry: never allowed.
        let twice = [
            call(OpKind::Claim, 1, (0, 5), Claimed),
            committed(50_000),
            call(OpKind::Claim, 2, (20_000, 20_010), Consumed),
            call(OpKind::Claim, 3, (60_000, 60_010), Claimed),
            call(OpKind::Claim, 4, (61_000, 61_010), Claimed),
        ];
        assert!(check_key(0, &twice, lingering).is_err());
        // The lingering claim lasts its TTL at most.
        let mut late = deferred;
        late[3] = call(OpKind::Claim, 3, (150_000, 150_010), InFlight);
        assert!(check_key(0, &late, lingering).is_err());
    }

    #[test]
    fn an_order_that_must_backtrack_is_found() {
        use Answer::*;
        // Greedy by earliest answer takes 2's claim first, then 1's claim answers InFlight:
        // wrong. Only 1 first, 2 second explains both answers.
        let calls = [
            call(OpKind::Claim, 1, (0, 50), Claimed),
            call(OpKind::Claim, 2, (10, 20), InFlight),
        ];
        assert!(check_key(0, &calls, TOLERANCE).is_ok());
    }
}
