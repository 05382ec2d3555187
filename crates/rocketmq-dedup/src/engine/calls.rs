//! Store calls as the listener makes them: bounded by the store timeout, timed into the
//! `rocketmq_dedup_store_seconds` histogram, and logged and counted (the `store_error` event,
//! and `rocketmq_dedup_store_errors_total{op, error}`) when they fail.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use crate::config::DedupConfig;
use crate::error::{StoreError, StoreOperation};
use crate::stats::{DedupStats, Event};

/// Makes store calls for one listener.
#[derive(Debug, Clone)]
pub(crate) struct StoreCalls {
    pub(crate) kind: &'static str,
    pub(crate) timeout: Duration,
    pub(crate) stats: Arc<DedupStats>,
}

impl StoreCalls {
    /// Calls to a store of `kind`, within `config`'s store timeout, counted in `stats`.
    pub(crate) fn new(kind: &'static str, config: &DedupConfig, stats: Arc<DedupStats>) -> Self {
        StoreCalls {
            kind,
            timeout: config.store_timeout,
            stats,
        }
    }

    /// Runs `call` (a store operation) within the store timeout, and records it.
    pub(crate) async fn call<T>(
        &self,
        operation: StoreOperation,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = self.within_timeout(operation, call).await;
        self.record(operation, started.elapsed(), &result);
        result
    }

    /// Runs `call` within the store timeout (a timeout is its error); records nothing.
    pub(crate) async fn within_timeout<T>(
        &self,
        operation: StoreOperation,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Timeout { operation, timeout }),
        }
    }

    /// Records a call that took `elapsed`: its latency, and its error if it failed.
    pub(crate) fn record<T>(
        &self,
        operation: StoreOperation,
        elapsed: Duration,
        result: &Result<T, StoreError>,
    ) {
        metrics::histogram!("rocketmq_dedup_store_seconds", "op" => operation.as_str(), "store" => self.kind)
            .record(elapsed.as_secs_f64());
        let latency_us = elapsed.as_micros() as u64;
        match result {
            Ok(_) => debug!(op = operation.as_str(), latency_us, "store call"),
            Err(err) => {
                self.stats.event(Event::StoreError, 1);
                metrics::counter!("rocketmq_dedup_store_errors_total", "op" => operation.as_str(), "error" => err.kind())
                    .increment(1);
                warn!(
                    op = operation.as_str(),
                    latency_us,
                    error = %err,
                    cause = %crate::error::source_chain(err),
                    "dedup store call failed"
                );
            }
        }
    }
}
