//! The listener's background work, owned: every task and every commit the store writes in
//! its own time is tracked, and a deadline set by shutdown (or by dropping the listener)
//! tells them all when to stop.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tokio_util::task::TaskTracker;

use crate::shutdown::ShutdownReport;

/// Tracks background tasks, and the background commits with the keys they carry.
#[derive(Debug)]
pub(crate) struct Background {
    tracker: TaskTracker,
    /// `Some(instant)` once shutdown (or drop) has begun: every task ends by then.
    deadline: watch::Sender<Option<Instant>>,
    runtime: Handle,
    keys: Arc<KeyCounts>,
}

/// The keys of background commits.
#[derive(Debug, Default)]
struct KeyCounts {
    /// Keys whose commit is in flight or being retried now.
    pending: AtomicUsize,
    /// Keys given up since the listener started.
    given_up: AtomicUsize,
}

/// A background commit of some keys, in flight: shutdown waits for it while it lives. Dropped
/// without [`written`](Self::written), its keys count as given up.
#[derive(Debug)]
pub(crate) struct Tracked {
    keys: usize,
    written: bool,
    counts: Arc<KeyCounts>,
    _token: TaskTrackerToken,
}

impl Tracked {
    /// The commit was written (whatever it found).
    pub(crate) fn written(mut self) {
        self.written = true;
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.counts.pending.fetch_sub(self.keys, Ordering::SeqCst);
        if !self.written {
            self.counts.given_up.fetch_add(self.keys, Ordering::SeqCst);
        }
    }
}

impl Background {
    pub(crate) fn new(runtime: Handle) -> Self {
        Background {
            tracker: TaskTracker::new(),
            deadline: watch::Sender::new(None),
            runtime,
            keys: Arc::default(),
        }
    }

    /// A background commit of `keys` keys begins.
    pub(crate) fn track(&self, keys: usize) -> Tracked {
        self.keys.pending.fetch_add(keys, Ordering::SeqCst);
        Tracked {
            keys,
            written: false,
            counts: Arc::clone(&self.keys),
            _token: self.tracker.token(),
        }
    }

    /// Runs `task` in the background.
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.tracker.spawn_on(task, &self.runtime);
    }

    /// Resolves at the shutdown deadline (never, while there is none).
    pub(crate) fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut deadline = self.deadline.subscribe();
        async move {
            loop {
                let current = *deadline.borrow_and_update();
                match current {
                    Some(at) => return tokio::time::sleep_until(at).await,
                    None => {
                        if deadline.changed().await.is_err() {
                            return std::future::pending().await;
                        }
                    }
                }
            }
        }
    }

    /// Gives the background tasks until `timeout` to finish, then waits for them to end.
    pub(crate) async fn drain(&self, timeout: Duration) -> ShutdownReport {
        let pending = self.keys.pending.load(Ordering::SeqCst);
        let given_up_before = self.keys.given_up.load(Ordering::SeqCst);
        self.deadline.send_replace(Some(Instant::now() + timeout));
        self.tracker.close();
        self.tracker.wait().await;
        ShutdownReport {
            pending_commits: pending,
            failed_commits: self.keys.given_up.load(Ordering::SeqCst) - given_up_before,
        }
    }

    /// The listener is gone: every task stops now, reporting what it gives up.
    pub(crate) fn abandon(&self) {
        self.deadline.send_replace(Some(Instant::now()));
        self.tracker.close();
    }
}
