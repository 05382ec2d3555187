//! The state machine over rows: given the rows a batch's keys have (locked, read with their
//! liveness by the database's clock), the answer for every key, applied in turn, and what to
//! write afterwards. Pure, so MySQL and PostgreSQL decide alike, and the same as the other
//! stores.

use std::collections::HashMap;
use std::time::Duration;

use crate::store::{ClaimOutcome, CommitOutcome, OwnerToken};

/// A row's state, as the batch sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Row {
    /// No row, or an expired one: absent for the state machine.
    Absent,
    /// CONSUMING, owned by this token (a live row).
    Consuming(i64),
    /// CONSUMED (a live row).
    Consumed,
}

impl Row {
    /// The state of a row read back: its status, owner and whether it is live.
    pub(crate) fn read(status: &str, owner: Option<i64>, live: bool) -> Row {
        match (live, status, owner) {
            (false, _, _) => Row::Absent,
            (true, CONSUMED, _) => Row::Consumed,
            (true, _, Some(owner)) => Row::Consuming(owner),
            // A CONSUMING row without an owner (written by the Java library): nobody's claim.
            (true, _, None) => Row::Consuming(0),
        }
    }
}

/// The status column's values (the Java library's).
pub(crate) const CONSUMING: &str = "CONSUMING";
/// See [`CONSUMING`].
pub(crate) const CONSUMED: &str = "CONSUMED";

/// What to leave in the table for one key once the batch is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Write {
    /// Upsert this status, owner and TTL (from the database's clock).
    Put {
        consumed: bool,
        owner: i64,
        ttl: Duration,
    },
    /// Delete the row.
    Delete,
}

/// The token as the table's `owner_token` column holds it (a signed 64-bit integer).
pub(crate) fn owner(token: OwnerToken) -> i64 {
    token.get() as i64
}

/// Keys' rows through a batch: `rows[i]` is key `i`'s state (keys may repeat: repeats share
/// a state by the key's first index).
#[derive(Debug)]
pub(crate) struct RowBatch {
    rows: HashMap<usize, Row>,
    writes: HashMap<usize, Write>,
    /// For each key, the index of its first occurrence.
    first: Vec<usize>,
}

impl RowBatch {
    /// `found[i]`: the row of key `i` (`same[i]`: the first index with the same key).
    pub(crate) fn new(found: Vec<Row>, first: Vec<usize>) -> Self {
        let rows = first.iter().map(|&f| (f, found[f])).collect();
        RowBatch {
            rows,
            writes: HashMap::new(),
            first,
        }
    }

    fn row(&self, i: usize) -> Row {
        self.rows[&self.first[i]]
    }

    fn set(&mut self, i: usize, row: Row, write: Write) {
        self.rows.insert(self.first[i], row);
        self.writes.insert(self.first[i], write);
    }

    /// Claims every key for `token`.
    pub(crate) fn claim(&mut self, token: OwnerToken, ttl: Duration) -> Vec<ClaimOutcome> {
        let owner = owner(token);
        (0..self.first.len())
            .map(|i| match self.row(i) {
                Row::Consumed => ClaimOutcome::Consumed,
                Row::Consuming(o) if o == owner => ClaimOutcome::Claimed,
                Row::Consuming(_) => ClaimOutcome::InFlight,
                Row::Absent => {
                    let put = Write::Put {
                        consumed: false,
                        owner,
                        ttl,
                    };
                    self.set(i, Row::Consuming(owner), put);
                    ClaimOutcome::Claimed
                }
            })
            .collect()
    }

    /// Commits every key for `token`.
    pub(crate) fn commit(&mut self, token: OwnerToken, ttl: Duration) -> Vec<CommitOutcome> {
        let owner = owner(token);
        (0..self.first.len())
            .map(|i| match self.row(i) {
                Row::Consumed => CommitOutcome::AlreadyConsumed,
                Row::Consuming(o) if o != owner => CommitOutcome::Lost,
                _ => {
                    let put = Write::Put {
                        consumed: true,
                        owner,
                        ttl,
                    };
                    self.set(i, Row::Consumed, put);
                    CommitOutcome::Committed
                }
            })
            .collect()
    }

    /// Releases every key `token` holds.
    pub(crate) fn release(&mut self, token: OwnerToken) -> Vec<bool> {
        let owner = owner(token);
        (0..self.first.len())
            .map(|i| {
                let held = self.row(i) == Row::Consuming(owner);
                if held {
                    self.set(i, Row::Absent, Write::Delete);
                }
                held
            })
            .collect()
    }

    /// Renews every key `token` holds.
    pub(crate) fn renew(&mut self, token: OwnerToken, ttl: Duration) -> Vec<bool> {
        let owner = owner(token);
        (0..self.first.len())
            .map(|i| {
                let held = self.row(i) == Row::Consuming(owner);
                if held {
                    let put = Write::Put {
                        consumed: false,
                        owner,
                        ttl,
                    };
                    self.set(i, Row::Consuming(owner), put);
                }
                held
            })
            .collect()
    }

    /// The writes to make, by the index of each key's first occurrence.
    pub(crate) fn writes(&self) -> impl Iterator<Item = (usize, Write)> + '_ {
        let mut writes: Vec<_> = self.writes.iter().map(|(&i, &w)| (i, w)).collect();
        writes.sort_by_key(|(i, _)| *i);
        writes.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(1);

    #[test]
    fn a_repeated_key_sees_its_earlier_occurrence() {
        let a = OwnerToken::random();
        let mut batch = RowBatch::new(vec![Row::Absent, Row::Absent], vec![0, 0]);
        assert_eq!(batch.claim(a, TTL), [ClaimOutcome::Claimed; 2]);
        assert_eq!(
            batch.commit(a, TTL),
            [CommitOutcome::Committed, CommitOutcome::AlreadyConsumed]
        );
        let writes: Vec<_> = batch.writes().collect();
        assert_eq!(writes.len(), 1, "one write per key: its last state");
        assert!(matches!(writes[0].1, Write::Put { consumed: true, .. }));
    }

    #[test]
    fn tokens_are_compared_and_nothing_is_written_for_others() {
        let (a, b) = (OwnerToken::random(), OwnerToken::random());
        let found = vec![Row::Consuming(owner(a)), Row::Consumed, Row::Absent];
        let mut batch = RowBatch::new(found, vec![0, 1, 2]);
        assert_eq!(batch.release(b), [false, false, false]);
        assert_eq!(
            batch.commit(b, TTL),
            [
                CommitOutcome::Lost,
                CommitOutcome::AlreadyConsumed,
                CommitOutcome::Committed
            ]
        );
        assert_eq!(batch.writes().map(|(i, _)| i).collect::<Vec<_>>(), [2]);
        assert_eq!(Row::read(CONSUMING, Some(7), false), Row::Absent);
        assert_eq!(Row::read(CONSUMED, None, true), Row::Consumed);
    }
}
