//! The listeners: thin adapters from rocketmq-client-rust's listener traits to the dedup
//! [engine](crate::engine), which decides; each maps the decisions to its client's status.
//!
//! | the engine decides | [`DedupConcurrentListener`] answers | [`DedupOrderlyListener`] answers |
//! |---|---|---|
//! | processed, duplicate | CONSUME_SUCCESS | Success |
//! | any message must be retried | RECONSUME_LATER (retry topic) | SuspendCurrentQueueAMoment |

mod concurrent;
mod orderly;

use std::sync::Arc;
use std::time::Duration;

pub use self::concurrent::DedupConcurrentListener;
pub use self::orderly::DedupOrderlyListener;
pub use crate::engine::DECISION_TARGET;

use crate::config::DedupConfig;
use crate::engine::Engine;
use crate::shutdown::ShutdownReport;
use crate::stats::DedupStats;

/// The engine behind a listener handle, shared by its clones.
#[derive(Debug, Clone)]
struct Core {
    engine: Arc<Engine>,
}

impl Core {
    fn stats(&self) -> &Arc<DedupStats> {
        self.engine.stats()
    }

    fn config(&self) -> &DedupConfig {
        self.engine.config()
    }

    async fn shutdown(&self, timeout: Duration) -> ShutdownReport {
        self.engine.shutdown(timeout).await
    }
}
