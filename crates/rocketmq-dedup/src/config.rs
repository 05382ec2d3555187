//! Listener settings: their defaults, their limits, and the check that rejects a configuration
//! that cannot work when the listener is built (a [`ConfigError`]).

use std::time::Duration;

use crate::error::ConfigError;
use crate::record_key::DEFAULT_PREFIX;

/// What the listener does when the dedup store cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StoreErrorPolicy {
    /// Run no handler and answer "later" (RECONSUME_LATER, or a suspended queue in the orderly
    /// listener): nothing is acked unprocessed, and nothing is processed twice because of the
    /// outage. The default.
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
    /// Answer "later": the message is retried and, after the group's max reconsume times,
    /// lands in the dead-letter queue. Nothing is lost.
    Retry,
    /// Run the handler without deduplication.
    NoDedup,
}

/// The listener's settings, set through
/// [`DedupListenerBuilder`](crate::DedupListenerBuilder) and checked when the listener is built
/// (the first setting that cannot work is a [`ConfigError`]). A listener's `Debug` shows them.
#[derive(Debug, Clone)]
pub(crate) struct DedupConfig {
    pub(crate) namespace: String,
    pub(crate) prefix: String,
    pub(crate) processing_ttl: Duration,
    pub(crate) record_ttl: Duration,
    pub(crate) renew_interval: Option<Duration>,
    pub(crate) store_timeout: Duration,
    pub(crate) store_error_policy: StoreErrorPolicy,
    pub(crate) key_fallback: KeyFallback,
    pub(crate) handler_concurrency: usize,
    pub(crate) max_reconsume_times: i32,
    pub(crate) commit_retry_window: Duration,
    pub(crate) ack_before_commit: bool,
    pub(crate) near_cache_capacity: usize,
    pub(crate) in_flight_wait: Duration,
    pub(crate) suspend_time: Duration,
}

impl DedupConfig {
    /// Default CONSUMING TTL. Renewal keeps a long handler's claim alive, so this bounds only
    /// how long a crashed consumer's claim blocks redelivery.
    pub(crate) const DEFAULT_PROCESSING_TTL: Duration = Duration::from_secs(30);
    /// Default CONSUMED TTL: how long duplicates are recognised.
    pub(crate) const DEFAULT_RECORD_TTL: Duration = crate::store::DEFAULT_RECORD_TTL;
    /// Default timeout of each store call.
    pub(crate) const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_secs(3);
    /// Default number of a batch's handlers that run at once.
    pub(crate) const DEFAULT_HANDLER_CONCURRENCY: usize = 1;
    /// RocketMQ's default max reconsume times of a consumer group.
    pub(crate) const DEFAULT_MAX_RECONSUME_TIMES: i32 = 16;
    /// Default time a failed commit is retried in the background.
    pub(crate) const DEFAULT_COMMIT_RETRY_WINDOW: Duration = Duration::from_secs(60);
    /// Default wait for a key that another batch of the same listener is processing.
    pub(crate) const DEFAULT_IN_FLIGHT_WAIT: Duration = Duration::from_secs(5);
    /// Default number of keys the near-cache remembers.
    pub(crate) const DEFAULT_NEAR_CACHE_CAPACITY: usize = 10_000;
    /// Default time the orderly listener suspends a queue whose next message cannot run now
    /// (RocketMQ's own default `suspendCurrentQueueTimeMillis`).
    pub(crate) const DEFAULT_SUSPEND_TIME: Duration = Duration::from_secs(1);
    /// Longest namespace or prefix, in bytes.
    pub(crate) const MAX_NAME_BYTES: usize = 255;
    /// Longest TTL accepted (a year): a longer one is almost certainly a unit mistake, and
    /// stores turn expiry instants into numbers that must not overflow.
    pub(crate) const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 60 * 60);
    /// Shortest processing TTL accepted.
    pub(crate) const MIN_PROCESSING_TTL: Duration = Duration::from_millis(100);
    /// The orderly suspend time RocketMQ accepts: it clamps anything else to 10 ms ..= 30 s.
    pub(crate) const SUSPEND_TIME_RANGE: (Duration, Duration) =
        (Duration::from_millis(10), Duration::from_secs(30));

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
            handler_concurrency: Self::DEFAULT_HANDLER_CONCURRENCY,
            max_reconsume_times: Self::DEFAULT_MAX_RECONSUME_TIMES,
            commit_retry_window: Self::DEFAULT_COMMIT_RETRY_WINDOW,
            ack_before_commit: true,
            near_cache_capacity: Self::DEFAULT_NEAR_CACHE_CAPACITY,
            in_flight_wait: Self::DEFAULT_IN_FLIGHT_WAIT,
            suspend_time: Self::DEFAULT_SUSPEND_TIME,
        }
    }

    /// The defaults of an orderly listener: RocketMQ's orderly consumers retry a suspended
    /// queue without limit, so nothing is near a dead letter by default.
    pub(crate) fn orderly() -> Self {
        DedupConfig {
            max_reconsume_times: i32::MAX,
            ..Self::new()
        }
    }

    /// Checks every setting and their combinations; the first one that cannot work is the
    /// error.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.namespace.is_empty() {
            return Err(ConfigError::MissingNamespace);
        }
        for (setting, value) in [("namespace", &self.namespace), ("key_prefix", &self.prefix)] {
            if value.is_empty() || value.len() > Self::MAX_NAME_BYTES {
                return Err(ConfigError::BadLength {
                    setting,
                    len: value.len(),
                    max: Self::MAX_NAME_BYTES,
                });
            }
        }
        self.validate_durations()?;
        if self.handler_concurrency == 0 {
            return Err(ConfigError::Zero {
                setting: "handler_concurrency",
            });
        }
        Ok(())
    }

    fn validate_durations(&self) -> Result<(), ConfigError> {
        let bad = |setting, value, reason| {
            Err(ConfigError::BadDuration {
                setting,
                value,
                reason,
            })
        };
        let (ttl, record) = (self.processing_ttl, self.record_ttl);
        if ttl < Self::MIN_PROCESSING_TTL {
            return bad("processing_ttl", ttl, "must be at least 100ms");
        }
        if ttl > Self::MAX_TTL {
            return bad("processing_ttl", ttl, "must be at most 365 days");
        }
        if record < ttl {
            return bad("record_ttl", record, "must be at least the processing TTL");
        }
        if record > Self::MAX_TTL {
            return bad("record_ttl", record, "must be at most 365 days");
        }
        let renew = self.renew_interval();
        if renew.is_zero() || renew >= ttl {
            return bad(
                "renew_interval",
                renew,
                "must be more than zero and less than the processing TTL",
            );
        }
        if self.store_timeout.is_zero() {
            return bad(
                "store_timeout",
                self.store_timeout,
                "must be more than zero",
            );
        }
        let (shortest, longest) = Self::SUSPEND_TIME_RANGE;
        if !(shortest..=longest).contains(&self.suspend_time) {
            return bad(
                "suspend_time",
                self.suspend_time,
                "must be 10ms ..= 30s (RocketMQ clamps the suspension to that range)",
            );
        }
        Ok(())
    }

    /// How often a running handler's claim is renewed: a third of the processing TTL unless set.
    pub(crate) fn renew_interval(&self) -> Duration {
        self.renew_interval.unwrap_or(self.processing_ttl / 3)
    }
}
