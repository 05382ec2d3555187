//! The listener's background work, owned: every task is tracked, and a deadline set by
//! shutdown (or by dropping the listener) tells them all when to stop.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::shutdown::ShutdownReport;

/// Tracks background tasks and the keys they carry.
#[derive(Debug)]
pub(crate) struct Background {
    tracker: TaskTracker,
    /// `Some(instant)` once shutdown (or drop) has begun: every task ends by then.
    deadline: watch::Sender<Option<Instant>>,
    runtime: Handle,
    /// Keys whose commit a task is retrying now.
    pending_keys: AtomicUsize,
    /// Keys given up since the listener started.
    given_up_keys: AtomicUsize,
}

impl Background {
    pub(crate) fn new(runtime: Handle) -> Self {
        Background {
            tracker: TaskTracker::new(),
            deadline: watch::Sender::new(None),
            runtime,
            pending_keys: AtomicUsize::new(0),
            given_up_keys: AtomicUsize::new(0),
        }
    }

    /// Runs `task`, which carries `keys` keys, in the background.
    pub(crate) fn spawn(&self, keys: usize, task: impl Future<Output = ()> + Send + 'static) {
        self.pending_keys.fetch_add(keys, Ordering::SeqCst);
        self.tracker.spawn_on(task, &self.runtime);
    }

    /// A task carrying `keys` keys ended; `given_up` when they were not written.
    pub(crate) fn finished(&self, keys: usize, given_up: bool) {
        self.pending_keys.fetch_sub(keys, Ordering::SeqCst);
        if given_up {
            self.given_up_keys.fetch_add(keys, Ordering::SeqCst);
        }
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
        let pending = self.pending_keys.load(Ordering::SeqCst);
        let given_up_before = self.given_up_keys.load(Ordering::SeqCst);
        self.deadline.send_replace(Some(Instant::now() + timeout));
        self.tracker.close();
        self.tracker.wait().await;
        ShutdownReport {
            pending_commits: pending,
            failed_commits: self.given_up_keys.load(Ordering::SeqCst) - given_up_before,
        }
    }

    /// The listener is gone: every task stops now, reporting what it gives up.
    pub(crate) fn abandon(&self) {
        self.deadline.send_replace(Some(Instant::now()));
        self.tracker.close();
    }
}
