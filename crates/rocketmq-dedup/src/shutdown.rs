//! What a listener's [`shutdown`](crate::DedupConcurrentListener::shutdown) finished.

/// The background work a listener's shutdown found, and what became of it.
///
/// A listener works in the background after the ack: commits written after the batch was
/// answered ([`ack_before_commit`](crate::DedupListenerBuilder::ack_before_commit), the default), and
/// commits that failed after a successful handler, retried for the commit retry window.
/// Shutdown waits for them until its timeout; a commit written by then is settled as usual,
/// one that is not is given up:
/// reported to [`DedupHandler::on_settled`](crate::DedupHandler::on_settled) as an error and
/// counted as `commit_failed` (its claim expires after the processing TTL).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Keys whose commit was in flight (written after the ack) or being retried when shutdown
    /// began.
    pub pending_commits: usize,
    /// Of those, the keys whose commit could not be written before the timeout.
    pub failed_commits: usize,
}

impl ShutdownReport {
    /// Whether everything pending was written.
    pub fn is_clean(&self) -> bool {
        self.failed_commits == 0
    }
}
