//! Decisions and counters: what the listener did with each message ([`DedupStats`] has the
//! metrics).

use std::sync::atomic::{AtomicU64, Ordering};

/// What the listener decided for one message. Each decision is also one DEBUG event on the
/// tracing target `rocketmq_dedup::decision` (`RUST_LOG=rocketmq_dedup::decision=debug`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Decision {
    /// Claimed, handled, committed: acked.
    Processed,
    /// Already CONSUMED (or a copy of another message in the same batch that was processed):
    /// acked without running the handler.
    Duplicate,
    /// Another consumer holds a live claim: RECONSUME_LATER without running the handler.
    DeferredInFlight,
    /// The handler returned an error: claim released, RECONSUME_LATER.
    HandlerFailed,
    /// The handler panicked: claim released, RECONSUME_LATER.
    HandlerPanicked,
    /// The store could not answer and the policy is fail-closed: RECONSUME_LATER.
    StoreUnavailable,
    /// Handled without deduplication (fail-open policy, or a bad key with
    /// [`KeyFallback::NoDedup`](crate::KeyFallback::NoDedup)).
    ProcessedWithoutDedup,
    /// The key could not be derived and the fallback is
    /// [`KeyFallback::Retry`](crate::KeyFallback::Retry): RECONSUME_LATER.
    KeyRejected,
    /// Part of a batch that is retried as a whole because another message in it must be.
    /// Its own outcome is already recorded; it will come back as a duplicate.
    RetriedWithBatch,
    /// Not run because an earlier message of its in-order batch must be retried first (the
    /// orderly listener): it comes back with the batch and runs then.
    Postponed,
}

impl Decision {
    /// All decisions.
    pub const ALL: [Decision; 10] = [
        Decision::Processed,
        Decision::Duplicate,
        Decision::DeferredInFlight,
        Decision::HandlerFailed,
        Decision::HandlerPanicked,
        Decision::StoreUnavailable,
        Decision::ProcessedWithoutDedup,
        Decision::KeyRejected,
        Decision::RetriedWithBatch,
        Decision::Postponed,
    ];

    /// The snake-case name used in logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Processed => "processed",
            Decision::Duplicate => "duplicate",
            Decision::DeferredInFlight => "deferred_in_flight",
            Decision::HandlerFailed => "handler_failed",
            Decision::HandlerPanicked => "handler_panicked",
            Decision::StoreUnavailable => "store_unavailable",
            Decision::ProcessedWithoutDedup => "processed_without_dedup",
            Decision::KeyRejected => "key_rejected",
            Decision::RetriedWithBatch => "retried_with_batch",
            Decision::Postponed => "postponed",
        }
    }

    /// Whether the message must be redelivered (the batch answers RECONSUME_LATER).
    pub(crate) fn needs_retry(self) -> bool {
        matches!(
            self,
            Decision::DeferredInFlight
                | Decision::HandlerFailed
                | Decision::HandlerPanicked
                | Decision::StoreUnavailable
                | Decision::KeyRejected
                | Decision::Postponed
        )
    }

    /// The decision for a copy of a message, in the same batch, decided as `self`: a copy
    /// follows the first.
    pub(crate) fn for_copy(self) -> Decision {
        match self {
            Decision::Processed | Decision::ProcessedWithoutDedup | Decision::Duplicate => {
                Decision::Duplicate
            }
            Decision::HandlerFailed | Decision::HandlerPanicked => Decision::RetriedWithBatch,
            other => other,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Things that happen besides the per-message decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Event {
    /// A store call failed or timed out.
    StoreError,
    /// A dedup key could not be derived (the fallback then applied).
    KeyError,
    /// A renewal or commit found the claim taken by another owner.
    ClaimLost,
    /// A commit found the key already CONSUMED by another owner: the handler ran twice.
    DuplicateEffect,
    /// The commit after a successful handler failed at first; it is retried in the background
    /// (the message is acked: its effect happened).
    CommitDeferred,
    /// The commit could not be written within the commit retry window; the claim expires after
    /// the processing TTL, and a copy delivered after that runs again.
    CommitFailed,
    /// Releasing a failed handler's claim failed; it expires after the processing TTL.
    ReleaseFailed,
    /// A message was deferred on its last reconsume attempts: the next deferral may send it
    /// to the dead-letter queue unprocessed.
    DeferredNearDeadLetter,
    /// An inbox transaction was a deadlock victim (everything in it rolled back) and the
    /// message ran again at once.
    TransactionRetried,
}

impl Event {
    /// All events.
    pub const ALL: [Event; 9] = [
        Event::StoreError,
        Event::KeyError,
        Event::ClaimLost,
        Event::DuplicateEffect,
        Event::CommitDeferred,
        Event::CommitFailed,
        Event::ReleaseFailed,
        Event::DeferredNearDeadLetter,
        Event::TransactionRetried,
    ];

    /// The snake-case name used in logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::StoreError => "store_error",
            Event::KeyError => "key_error",
            Event::ClaimLost => "claim_lost",
            Event::DuplicateEffect => "duplicate_effect",
            Event::CommitDeferred => "commit_deferred",
            Event::CommitFailed => "commit_failed",
            Event::ReleaseFailed => "release_failed",
            Event::DeferredNearDeadLetter => "deferred_near_dead_letter",
            Event::TransactionRetried => "transaction_retried",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Counters of one listener, updated lock-free: what the listener did with each message.
///
/// Every decision is counted twice: here (read with
/// [`DedupConcurrentListener::stats`](crate::DedupConcurrentListener::stats), no setup needed)
/// and through the [`metrics`] facade, for whatever exporter the application installs:
///
/// | metric | labels | meaning |
/// |---|---|---|
/// | `rocketmq_dedup_messages_total` | `decision` | one per message, by [`Decision`] |
/// | `rocketmq_dedup_events_total` | `event` | store errors, lost claims, failed commits, … ([`Event`]) |
/// | `rocketmq_dedup_store_seconds` | `op`, `store` | latency of each store call |
/// | `rocketmq_dedup_answers_total` | `status` | messages answered `consume_success` or `reconsume_later` |
#[derive(Debug, Default)]
pub struct DedupStats {
    decisions: [AtomicU64; Decision::ALL.len()],
    events: [AtomicU64; Event::ALL.len()],
    acked: AtomicU64,
    retried: AtomicU64,
}

impl DedupStats {
    pub(crate) fn decide(&self, decision: Decision) {
        self.decisions[decision.index()].fetch_add(1, Ordering::Relaxed);
        metrics::counter!("rocketmq_dedup_messages_total", "decision" => decision.as_str())
            .increment(1);
    }

    pub(crate) fn event(&self, event: Event, n: u64) {
        if n == 0 {
            return;
        }
        self.events[event.index()].fetch_add(n, Ordering::Relaxed);
        metrics::counter!("rocketmq_dedup_events_total", "event" => event.as_str()).increment(n);
    }

    pub(crate) fn answer(&self, messages: u64, retry: bool) {
        let (counter, status) = if retry {
            (&self.retried, "reconsume_later")
        } else {
            (&self.acked, "consume_success")
        };
        counter.fetch_add(messages, Ordering::Relaxed);
        metrics::counter!("rocketmq_dedup_answers_total", "status" => status).increment(messages);
    }

    /// How many messages were answered CONSUME_SUCCESS (acked).
    pub fn messages_acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// How many messages were answered RECONSUME_LATER (sent back for redelivery).
    pub fn messages_retried(&self) -> u64 {
        self.retried.load(Ordering::Relaxed)
    }

    /// How many messages got `decision`.
    pub fn decisions(&self, decision: Decision) -> u64 {
        self.decisions[decision.index()].load(Ordering::Relaxed)
    }

    /// How many times `event` happened.
    pub fn events(&self, event: Event) -> u64 {
        self.events[event.index()].load(Ordering::Relaxed)
    }

    /// A one-line summary, `decision=count …`, for logs and examples.
    pub fn summary(&self) -> String {
        let decisions = Decision::ALL
            .iter()
            .map(|d| (d.as_str(), self.decisions(*d)));
        let events = Event::ALL.iter().map(|e| (e.as_str(), self.events(*e)));
        let answers = [
            ("acked", self.messages_acked()),
            ("retried", self.messages_retried()),
        ];
        answers
            .into_iter()
            .chain(decisions)
            .chain(events)
            .filter(|(_, n)| *n > 0)
            .map(|(name, n)| format!("{name}={n}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}
