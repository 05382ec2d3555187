//! After the handlers: commit the keys whose handler succeeded, release the others, and keep
//! trying a commit that failed (in the background, owned by [`Background`](super::background)).

use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, error, warn};

use super::Shared;
use crate::error::{StoreError, StoreOperation};
use crate::handler::DedupHandler;
use crate::record_key::RecordKey;
use crate::stats::Event;
use crate::store::{CommitOutcome, OwnerToken};

/// The longest wait between two attempts of a background commit.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

impl<H: DedupHandler> Shared<H> {
    /// Commits the keys of successful handlers. A failed call is retried in the background
    /// for the commit retry window: the handlers already succeeded, so their messages are
    /// acked either way.
    pub(super) async fn commit(self: &Arc<Self>, keys: Vec<RecordKey>, token: OwnerToken) {
        if keys.is_empty() {
            return;
        }
        let ttl = self.config.record_ttl;
        let sent_at = tokio::time::Instant::now();
        let call = self.store.commit(&keys, token, ttl);
        match self.calls.call(StoreOperation::Commit, call).await {
            Ok(outcomes) => self.settled(&keys, outcomes, sent_at),
            Err(err) if self.config.commit_retry_window.is_zero() => {
                self.give_up_commit(&keys, &err)
            }
            Err(_) => {
                self.stats.event(Event::CommitDeferred, keys.len() as u64);
                warn!(
                    keys = keys.len(),
                    window_s = self.config.commit_retry_window.as_secs(),
                    "commit failed after the handlers succeeded; acking, and retrying the commit in the background"
                );
                let shared = Arc::clone(self);
                self.background
                    .spawn(keys.len(), shared.retry_commit(keys, token));
            }
        }
    }

    /// Retries a commit until it lands, the window passes, or the listener's shutdown
    /// deadline comes; settles the keys either way.
    async fn retry_commit(self: Arc<Self>, keys: Vec<RecordKey>, token: OwnerToken) {
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
                self.background.finished(keys.len(), false);
            }
            None => {
                self.give_up_commit(&keys, &last_err);
                self.background.finished(keys.len(), true);
            }
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
