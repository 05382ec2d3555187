//! Errors, named by the operation that failed.

use std::time::Duration;

/// The error a [`DedupHandler`](crate::DedupHandler) returns when it could not process a message.
///
/// Any error type converts into it with `?` or `.into()`. The listener releases the claim and
/// lets RocketMQ redeliver the message.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a dedup key could not be derived from a message.
///
/// A key error never panics and never loses the message: the listener logs it, counts it and
/// applies the configured [`KeyFallback`](crate::KeyFallback).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The derived key is empty.
    #[error("dedup key is empty")]
    Empty,
    /// The derived key is longer than 64 KiB.
    #[error("dedup key is {len} bytes, more than the limit of {max}")]
    TooLong {
        /// Length of the rejected key in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The derived key is not valid UTF-8.
    #[error("dedup key is not valid UTF-8 (first bad byte at offset {valid_up_to})")]
    NotUtf8 {
        /// Offset of the first byte that is not UTF-8.
        valid_up_to: usize,
    },
    /// The message has neither a unique id (UNIQ_KEY) nor a message id.
    #[error("message has neither a UNIQ_KEY property nor a message id")]
    MissingUniqueId,
    /// The message has no KEYS property.
    #[error("message has no KEYS")]
    MissingKeys,
    /// The message has no tag but the key strategy is tag-qualified.
    #[error("message has no tag")]
    MissingTag,
    /// The message has no body.
    #[error("message has no body")]
    MissingBody,
    /// The body is larger than the JSON strategy parses.
    #[error("message body is {len} bytes, more than the {max} bytes parsed as JSON")]
    BodyTooLarge {
        /// Body length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The body is not valid JSON.
    #[error("message body is not valid JSON: {reason}")]
    InvalidJson {
        /// What serde_json reported (position and category, never the body).
        reason: String,
    },
    /// The JSON pointer names no field in the body.
    #[error("JSON pointer {pointer:?} names no field in the message body")]
    MissingField {
        /// The pointer that was looked up.
        pointer: String,
    },
    /// The JSON field is an object, an array or null, not a string, number or boolean.
    #[error("JSON field {pointer:?} is not a string, number or boolean")]
    NotScalar {
        /// The pointer that was looked up.
        pointer: String,
    },
    /// A user-supplied key function failed.
    #[error("custom dedup key function failed: {0}")]
    Custom(String),
}

/// A dedup store operation that did not complete.
///
/// The listener treats every store error the same way, by its
/// [`StoreErrorPolicy`](crate::StoreErrorPolicy): fail-closed (the default) redelivers the
/// message later without running the handler.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store did not answer in time.
    #[error("dedup store {operation} timed out after {timeout:?}")]
    Timeout {
        /// The operation that timed out.
        operation: StoreOperation,
        /// The configured timeout.
        timeout: Duration,
    },
    /// The store is unreachable or answered with an error.
    #[error("dedup store {operation} failed")]
    Backend {
        /// The operation that failed.
        operation: StoreOperation,
        /// The store client's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// A record in the store is not in a format this library wrote.
    #[error("dedup store {operation} found an unreadable record: {detail}")]
    CorruptRecord {
        /// The operation that read the record.
        operation: StoreOperation,
        /// What was wrong with it (never the record's content).
        detail: String,
    },
    /// The in-memory store is full of live records.
    #[error("in-memory dedup store is full ({capacity} live records)")]
    CapacityExceeded {
        /// The configured capacity.
        capacity: usize,
    },
    /// A database lock stayed held by another transaction past the lock wait (MySQL 1205,
    /// PostgreSQL 55P03).
    #[error("dedup store {operation} waited too long for a lock another transaction holds")]
    LockTimeout {
        /// The operation that waited.
        operation: StoreOperation,
    },
    /// The database chose this transaction as a deadlock victim every time it was tried
    /// (MySQL 1213, PostgreSQL 40P01).
    #[error("dedup store {operation} deadlocked {attempts} times")]
    Deadlock {
        /// The operation that deadlocked.
        operation: StoreOperation,
        /// How many times it was tried.
        attempts: u32,
    },
    /// The database refuses writes (a read-only server or replica).
    #[error("dedup store {operation} failed: the database is read-only")]
    ReadOnly {
        /// The operation that wanted to write.
        operation: StoreOperation,
    },
    /// The dedup table exists but lacks what the store needs (a table the Java library
    /// created: no `owner_token`, case-folding or short key columns). Nothing was written.
    #[error("dedup table {table} does not fit the store ({problems}); run `{statement}`, or let migrate() run it")]
    TableUnfit {
        /// The table.
        table: String,
        /// What it lacks.
        problems: String,
        /// The statement that makes it fit.
        statement: String,
    },
    /// The store URL is malformed or names no deployment this store serves.
    #[error("bad dedup store URL: {reason}")]
    BadUrl {
        /// What is wrong (never the URL itself: it may hold a password).
        reason: String,
    },
    /// No server could be reached while connecting (refused, no route, connect timeout).
    #[error("dedup store unreachable")]
    Unreachable {
        /// The client's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The server refused the credentials (wrong user or password, or none given).
    #[error("dedup store refused the credentials")]
    AuthFailed {
        /// The client's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The TLS handshake failed (an untrusted certificate, a name mismatch, no TLS there).
    #[error("dedup store TLS handshake failed")]
    TlsFailed {
        /// The client's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

impl StoreError {
    /// Builds a [`StoreError::Backend`] from any error.
    pub fn backend(
        operation: StoreOperation,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        StoreError::Backend {
            operation,
            source: source.into(),
        }
    }

    /// Whether trying the same operation again later may succeed (timeouts, lost connections,
    /// a full in-memory store). A corrupt record is not retryable.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            StoreError::CorruptRecord { .. }
                | StoreError::TableUnfit { .. }
                | StoreError::BadUrl { .. }
                | StoreError::AuthFailed { .. }
                | StoreError::TlsFailed { .. }
        )
    }

    /// The operation that failed, when known.
    pub fn operation(&self) -> Option<StoreOperation> {
        match self {
            StoreError::Timeout { operation, .. }
            | StoreError::Backend { operation, .. }
            | StoreError::CorruptRecord { operation, .. }
            | StoreError::LockTimeout { operation }
            | StoreError::Deadlock { operation, .. }
            | StoreError::ReadOnly { operation } => Some(*operation),
            StoreError::CapacityExceeded { .. } => Some(StoreOperation::Claim),
            StoreError::TableUnfit { .. }
            | StoreError::BadUrl { .. }
            | StoreError::Unreachable { .. }
            | StoreError::AuthFailed { .. }
            | StoreError::TlsFailed { .. } => Some(StoreOperation::Connect),
        }
    }

    /// A short name of the kind of failure, for logs and the `error` label of
    /// `rocketmq_dedup_store_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Timeout { .. } => "timeout",
            StoreError::Backend { .. } => "backend",
            StoreError::CorruptRecord { .. } => "corrupt_record",
            StoreError::CapacityExceeded { .. } => "capacity_exceeded",
            StoreError::LockTimeout { .. } => "lock_timeout",
            StoreError::Deadlock { .. } => "deadlock",
            StoreError::ReadOnly { .. } => "read_only",
            StoreError::TableUnfit { .. } => "table_unfit",
            StoreError::BadUrl { .. } => "bad_url",
            StoreError::Unreachable { .. } => "unreachable",
            StoreError::AuthFailed { .. } => "auth_failed",
            StoreError::TlsFailed { .. } => "tls_failed",
        }
    }
}

/// How many times a transaction the database picks as a deadlock victim is tried in all (a SQL
/// store's batch call, an inbox's message); [`StoreError::Deadlock`] reports it.
#[cfg(feature = "sql")]
pub(crate) const DEADLOCK_ATTEMPTS: u32 = 5;

/// A short random pause before a deadlocked transaction is tried again.
#[cfg(feature = "sql")]
pub(crate) async fn deadlock_backoff(attempt: u32) {
    let ms = fastrand::u64(1..=5 * u64::from(attempt));
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
}

/// The store operations, for errors, logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreOperation {
    /// Claiming keys before the handler runs.
    Claim,
    /// Marking keys consumed after the handler succeeded.
    Commit,
    /// Deleting claims after the handler failed.
    Release,
    /// Extending claims while the handler runs.
    Renew,
    /// Connecting to the store.
    Connect,
    /// Deleting expired records (the SQL stores' purge job).
    Purge,
    /// Beginning a transactional inbox's transaction.
    Begin,
    /// An operator's call ([`RecordAdmin`](crate::store::admin::RecordAdmin)).
    Admin,
}

impl StoreOperation {
    /// The lower-case name used in logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreOperation::Claim => "claim",
            StoreOperation::Commit => "commit",
            StoreOperation::Release => "release",
            StoreOperation::Renew => "renew",
            StoreOperation::Connect => "connect",
            StoreOperation::Purge => "purge",
            StoreOperation::Begin => "begin",
            StoreOperation::Admin => "admin",
        }
    }
}

impl std::fmt::Display for StoreOperation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A listener or store configuration that cannot work, rejected when it is built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No namespace was given; use the consumer group.
    #[error("a namespace is required (use the consumer group)")]
    MissingNamespace,
    /// A text setting is empty or too long.
    #[error("{setting} must be 1..={max} bytes, got {len}")]
    BadLength {
        /// The setting.
        setting: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A duration setting is out of range.
    #[error("{setting} is {value:?}: {reason}")]
    BadDuration {
        /// The setting.
        setting: &'static str,
        /// The rejected value.
        value: Duration,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// A count setting is zero.
    #[error("{setting} must be at least 1")]
    Zero {
        /// The setting.
        setting: &'static str,
    },
    /// A SQL table name that is not a plain identifier.
    #[error("table name {name:?} is not a plain identifier (letters, digits and _, at most 64)")]
    BadTableName {
        /// The rejected name (its first 80 characters).
        name: String,
    },
    /// No dedup store was given: the store is an explicit choice (a
    /// [`MemoryStore`](crate::store::MemoryStore) deduplicates within one process only).
    #[error("a dedup store is required: set one with .store(…) (MemoryStore for one process, RedisStore across consumers)")]
    MissingStore,
    /// No Tokio runtime was available and none could be started.
    #[error("could not start the listener's Tokio runtime: {0}")]
    Runtime(String),
}

/// The `source()` chain of an error (not the error itself), joined with `: `.
pub(crate) fn source_chain(err: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut cur = err.source();
    while let Some(e) = cur {
        parts.push(e.to_string());
        cur = e.source();
    }
    parts.join(": ")
}
