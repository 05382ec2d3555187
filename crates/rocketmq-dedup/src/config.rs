//! Listener configuration: policies and their defaults.

use std::time::Duration;

use crate::key::KeyStrategy;
use crate::record_key::{KeyLayout, DEFAULT_PREFIX};

/// What the listener does when the dedup store cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StoreErrorPolicy {
    /// Run no handler and answer RECONSUME_LATER: nothing is acked unprocessed, and nothing is
    /// processed twice because of the outage. The default.
    #[default]
    FailClosed,
    /// Run the handler without deduplication (counted and logged as
    /// `processed_without_dedup`): messages keep flowing, duplicates may be processed.
    FailOpen,
}

/// What the listener does with a message whose dedup key cannot be derived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyFallback {
    /// Deduplicate by the unique id (`UNIQ_KEY`, else message id). The default.
    #[default]
    UniqueId,
    /// Answer RECONSUME_LATER: the message is retried and, after the group's max reconsume
    /// times, lands in the dead-letter queue. Nothing is lost.
    Retry,
    /// Run the handler without deduplication.
    NoDedup,
}

/// The listener's settings; built by [`DedupListenerBuilder`](crate::DedupListenerBuilder).
#[derive(Debug, Clone)]
pub struct DedupConfig {
    pub(crate) namespace: String,
    pub(crate) prefix: String,
    pub(crate) processing_ttl: Duration,
    pub(crate) record_ttl: Duration,
    pub(crate) renew_interval: Option<Duration>,
    pub(crate) store_timeout: Duration,
    pub(crate) store_error_policy: StoreErrorPolicy,
    pub(crate) key_fallback: KeyFallback,
    pub(crate) key_strategy: Option<KeyStrategy>,
    pub(crate) handler_concurrency: usize,
    pub(crate) max_reconsume_times: i32,
    pub(crate) commit_retry_window: Duration,
    pub(crate) in_flight_wait: Duration,
    pub(crate) key_layout: KeyLayout,
}

impl DedupConfig {
    /// Default CONSUMING TTL. Renewal keeps a long handler's claim alive, so this bounds only
    /// how long a crashed consumer's claim blocks redelivery.
    pub const DEFAULT_PROCESSING_TTL: Duration = Duration::from_secs(30);
    /// Default CONSUMED TTL: how long duplicates are recognised.
    pub const DEFAULT_RECORD_TTL: Duration = Duration::from_secs(24 * 60 * 60);
    /// Default timeout of each store call.
    pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_secs(3);
    /// Default number of a batch's handlers that run at once.
    pub const DEFAULT_HANDLER_CONCURRENCY: usize = 1;
    /// RocketMQ's default max reconsume times of a consumer group.
    pub const DEFAULT_MAX_RECONSUME_TIMES: i32 = 16;
    /// Default time a failed commit is retried in the background.
    pub const DEFAULT_COMMIT_RETRY_WINDOW: Duration = Duration::from_secs(60);
    /// Default wait for a key that another batch of the same listener is processing.
    pub const DEFAULT_IN_FLIGHT_WAIT: Duration = Duration::from_secs(5);
    /// Longest namespace or prefix, in bytes.
    pub const MAX_NAME_BYTES: usize = 255;

    pub(crate) fn new() -> Self {
        DedupConfig {
            namespace: String::new(),
            prefix: DEFAULT_PREFIX.to_owned(),
            processing_ttl: Self::DEFAULT_PROCESSING_TTL,
            record_ttl: Self::DEFAULT_RECORD_TTL,
            renew_interval: None,
            store_timeout: Self::DEFAULT_STORE_TIMEOUT,
            store_error_policy: StoreErrorPolicy::default(),
            key_fallback: KeyFallback::default(),
            key_strategy: None,
            handler_concurrency: Self::DEFAULT_HANDLER_CONCURRENCY,
            max_reconsume_times: Self::DEFAULT_MAX_RECONSUME_TIMES,
            commit_retry_window: Self::DEFAULT_COMMIT_RETRY_WINDOW,
            in_flight_wait: Self::DEFAULT_IN_FLIGHT_WAIT,
            key_layout: KeyLayout::default(),
        }
    }

    /// The namespace of record keys (the consumer group unless configured).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The CONSUMING TTL.
    pub fn processing_ttl(&self) -> Duration {
        self.processing_ttl
    }

    /// The CONSUMED TTL.
    pub fn record_ttl(&self) -> Duration {
        self.record_ttl
    }

    /// How often a running handler's claim is renewed: a third of the processing TTL unless set.
    pub fn renew_interval(&self) -> Duration {
        self.renew_interval.unwrap_or(self.processing_ttl / 3)
    }

    /// The timeout of each store call.
    pub fn store_timeout(&self) -> Duration {
        self.store_timeout
    }

    /// The store outage policy.
    pub fn store_error_policy(&self) -> StoreErrorPolicy {
        self.store_error_policy
    }

    /// The bad-key fallback.
    pub fn key_fallback(&self) -> KeyFallback {
        self.key_fallback
    }
}
