//! The purge job a SQL store owns: it deletes expired rows in bounded batches every purge
//! interval, until the store is shut down or dropped.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How a SQL store purges expired rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgeOptions {
    /// Time between purges (default 60 s; zero: no purge job).
    pub interval: Duration,
    /// Rows deleted per statement (default 1 000); a purge repeats it while it deletes this
    /// many.
    pub batch: u32,
}

impl PurgeOptions {
    /// Default time between purges.
    pub(crate) const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
    /// Default rows per DELETE.
    pub(crate) const DEFAULT_BATCH: u32 = 1000;
}

impl Default for PurgeOptions {
    fn default() -> Self {
        PurgeOptions {
            interval: Self::DEFAULT_INTERVAL,
            batch: Self::DEFAULT_BATCH,
        }
    }
}

/// The running purge job; it stops when dropped, or when [`Purger::stop`]ped.
#[derive(Debug)]
pub(crate) struct Purger {
    cancel: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Purger {
    /// Starts the job: `delete` deletes up to `options.batch` expired rows and answers how
    /// many it deleted.
    pub(crate) fn start<F, Fut>(table: &str, options: PurgeOptions, delete: F) -> Option<Self>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<u64, sqlx::Error>> + Send,
    {
        if options.interval.is_zero() {
            return None;
        }
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        let table = table.to_owned();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(options.interval) => {}
                }
                let purged = tokio::select! {
                    () = stop.cancelled() => return,
                    purged = purge_once(&delete, options.batch) => purged,
                };
                match purged {
                    Ok(0) => debug!(table = %table, "purge: no expired rows"),
                    Ok(rows) => info!(table = %table, rows, "purge: expired rows deleted"),
                    Err(err) => {
                        warn!(table = %table, error = %err, "purge failed; trying again next interval")
                    }
                }
            }
        });
        Some(Purger {
            cancel,
            task: Mutex::new(Some(task)),
        })
    }

    /// Stops the job and waits for it to end (a purge under way is abandoned: its DELETE
    /// commits or rolls back on its own).
    pub(crate) async fn stop(&self) {
        self.cancel.cancel();
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Drop for Purger {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Deletes batches until one comes back short; answers the rows deleted.
pub(crate) async fn purge_once<F, Fut>(delete: &F, batch: u32) -> Result<u64, sqlx::Error>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<u64, sqlx::Error>>,
{
    let mut total = 0;
    loop {
        let deleted = delete().await?;
        total += deleted;
        metrics::counter!("rocketmq_dedup_purged_rows_total").increment(deleted);
        if deleted < u64::from(batch) {
            return Ok(total);
        }
        // Leave room for the consumers' own statements between batches.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
