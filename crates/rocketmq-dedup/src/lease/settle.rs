//! After the handlers: commit the keys whose handler succeeded (on the ack path, or detached
//! from it), release the others, and keep trying a commit that failed (in the background,
//! owned by [`Background`](super::background)).

use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, error, warn};

use super::background::Tracked;
use super::LeaseProcessor;
use crate::engine::inflight::Registration;
use crate::error::{StoreError, StoreOperation};
use crate::handler::DedupHandler;
use crate::record_key::RecordKey;
use crate::stats::Event;
use crate::store::{CommitOutcome, DetachedCommit, OwnerToken};

/// The longest wait between two attempts of a background commit.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

impl<H: DedupHandler> LeaseProcessor<H> {
    /// Commits the keys of successful handlers, on the ack path. A failed call is retried in
    /// the background for the commit retry window: the handlers already succeeded, so their
    /// messages are acked either way.
    pub(super) async fn commit(self: &Arc<Self>, keys: Vec<RecordKey>, token: OwnerToken) {
        if keys.is_empty() {
            return;
        }
        let sent_at = tokio::time::Instant::now();
        let call = self.store.commit(&keys, token, self.config.record_ttl);
        let result = self.calls.call(StoreOperation::Commit, call).await;
        self.committed(&keys, token, result, sent_at, None);
    }

    /// Commits the keys of successful handlers off the ack path: the store writes the commit
    /// in its own time ([`DedupStore::commit_detached`](crate::DedupStore::commit_detached)), or a task awaits it when the store
    /// gives it back. Tracked either way, so shutdown waits for it; `holds` keep this
    /// process's copies of the keys waiting until it is written.
    pub(super) fn commit_detached(
        self: &Arc<Self>,
        keys: Vec<RecordKey>,
        token: OwnerToken,
        holds: Vec<Registration>,
    ) {
        let tracked = self.background.track(keys.len());
        let sent_at = tokio::time::Instant::now();
        let processor = Arc::clone(self);
        let ttl = self.config.record_ttl;
        let commit = DetachedCommit::new(keys, token, ttl, move |keys, result| {
            processor
                .calls
                .record(StoreOperation::Commit, sent_at.elapsed(), &result);
            // This may run on another batch's thread (the one whose call carried the commit):
            // a panic in the handler's `on_settled` must not reach that batch.
            let settle = || processor.committed(keys, token, result, sent_at, Some(tracked));
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(settle)).is_err() {
                error!("the handler's on_settled panicked after a background commit");
            }
            drop(holds);
        });
        if let Some(commit) = self.store.commit_detached(commit) {
            let processor = Arc::clone(self);
            self.background.spawn(async move {
                let call = processor
                    .store
                    .commit(commit.keys(), commit.token(), commit.ttl());
                let result = processor
                    .calls
                    .within_timeout(StoreOperation::Commit, call)
                    .await;
                commit.finish(result);
            });
        }
    }

    /// What a commit's answer leads to: the keys settled, the commit retried in the
    /// background (tracked by `tracked`, or anew), or given up.
    fn committed(
        self: &Arc<Self>,
        keys: &[RecordKey],
        token: OwnerToken,
        result: Result<Vec<CommitOutcome>, StoreError>,
        sent_at: tokio::time::Instant,
        tracked: Option<Tracked>,
    ) {
        match result {
            Ok(outcomes) => {
                self.settled(keys, outcomes, sent_at);
                if let Some(tracked) = tracked {
                    tracked.written();
                }
            }
            Err(err) if self.config.commit_retry_window.is_zero() => {
                self.give_up_commit(keys, &err)
            }
            Err(_) => {
                self.stats.event(Event::CommitDeferred, keys.len() as u64);
                warn!(
                    keys = keys.len(),
                    window_s = self.config.commit_retry_window.as_secs(),
                    "commit failed after the handlers succeeded; acking, and retrying the commit in the background"
                );
                let tracked = tracked.unwrap_or_else(|| self.background.track(keys.len()));
                let processor = Arc::clone(self);
                self.background
                    .spawn(processor.retry_commit(keys.to_vec(), token, tracked));
            }
        }
    }

    /// Retries a commit until it lands, the window passes, or the listener's shutdown
    /// deadline comes; settles the keys either way.
    async fn retry_commit(
        self: Arc<Self>,
        keys: Vec<RecordKey>,
        token: OwnerToken,
        tracked: Tracked,
    ) {
        let window_end = tokio::time::Instant::now() + self.config.commit_retry_window;
        let stopped = self.background.stopped();
        tokio::pin!(stopped);
        let ttl = self.config.record_ttl;
        let mut backoff = Duration::from_millis(100);
        let mut last_err = StoreError::Timeout {
            operation: StoreOperation::Commit,
            timeout: Duration::ZERO,
        };
        let written = loop {
            let pause =
                backoff.min(window_end.saturating_duration_since(tokio::time::Instant::now()));
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = &mut stopped => break None,
            }
            let sent_at = tokio::time::Instant::now();
            let call = self
                .calls
                .call(StoreOperation::Commit, self.store.commit(&keys, token, ttl));
            let result = tokio::select! {
                result = call => result,
                () = &mut stopped => break None,
            };
            match result {
                Ok(outcomes) => break Some((outcomes, sent_at)),
                Err(err) if tokio::time::Instant::now() >= window_end => {
                    last_err = err;
                    break None;
                }
                Err(err) => last_err = err,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        };
        match written {
            Some((outcomes, sent_at)) => {
                debug!(keys = keys.len(), "deferred commit written");
                self.settled(&keys, outcomes, sent_at);
                tracked.written();
            }
            // `tracked` dropped unwritten: the keys count as given up.
            None => self.give_up_commit(&keys, &last_err),
        }
    }

    /// Reports written commits: counted, told to the handler, and (commits on the ack path)
    /// the CONSUMED keys remembered in the near-cache until the record's TTL counted from
    /// `sent_at` (the store started it later).
    fn settled(
        &self,
        keys: &[RecordKey],
        outcomes: Vec<CommitOutcome>,
        sent_at: tokio::time::Instant,
    ) {
        let consumed = keys.iter().zip(&outcomes).filter(|(_, o)| {
            matches!(o, CommitOutcome::Committed | CommitOutcome::AlreadyConsumed)
        });
        // With `ack_before_commit` the keys went in at the ack already (`settle`).
        if !self.config.ack_before_commit {
            self.near
                .insert(consumed.map(|(k, _)| k), sent_at + self.config.record_ttl);
        }
        let count = |which| outcomes.iter().filter(|o| **o == which).count();
        let (lost, twice) = (
            count(CommitOutcome::Lost),
            count(CommitOutcome::AlreadyConsumed),
        );
        self.stats.event(Event::ClaimLost, lost as u64);
        self.stats.event(Event::DuplicateEffect, twice as u64);
        if lost + twice > 0 {
            warn!(
                lost,
                already_consumed = twice,
                "commit found claims taken over: a handler may have run twice"
            );
        }
        for (key, outcome) in keys.iter().zip(outcomes) {
            self.handler.on_settled(key, Ok(outcome));
        }
    }

    fn give_up_commit(&self, keys: &[RecordKey], err: &StoreError) {
        self.stats.event(Event::CommitFailed, keys.len() as u64);
        error!(
            keys = keys.len(),
            error = %err,
            "commit could not be written; the claims expire after the processing TTL, and a copy delivered after that runs again"
        );
        for key in keys {
            self.handler.on_settled(key, Err(err));
        }
    }

    /// Deletes the claims of handlers that failed or did not run.
    pub(super) async fn release(&self, keys: Vec<RecordKey>, token: OwnerToken) {
        if keys.is_empty() {
            return;
        }
        let call = self.store.release(&keys, token);
        if self
            .calls
            .call(StoreOperation::Release, call)
            .await
            .is_err()
        {
            self.stats.event(Event::ReleaseFailed, keys.len() as u64);
        }
    }
}
