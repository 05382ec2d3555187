//! SQL dedup stores: the seed's `t_rocketmq_dedup` table in MySQL / MariaDB (feature `mysql`)
//! or PostgreSQL (feature `postgres`), used two ways.
//!
//! - As a [`DedupStore`](crate::DedupStore) (`MySqlStore`, `PostgresStore`): claims, commits,
//!   releases and renewals are rows, as the Redis store's records are keys. Each batch call is
//!   one transaction: the batch's keys are locked, their rows read (with their liveness by the
//!   database's clock), the state machine decides every answer (`decide`), and the rows are
//!   written in one statement. Shared by every consumer of the group; the same guarantee as
//!   Redis, and the same window: a consumer killed between its handler's effect and its commit.
//! - As a transactional inbox (`MySqlInbox`, `PostgresInbox`): the handler gets the open
//!   database transaction in which its record was inserted; the two commit together, so the
//!   handler's database writes take effect exactly once, crashes included.
//!
//! The table's semantics are written once, over [`SqlDatabase`] (`store`, `inbox`, and
//! `decide`, the state machine), and so are the statements both databases take in one form
//! (`database`: the batch's read, upsert and delete, an operator's reads); what differs
//! between the databases (how a batch's keys are locked, the inbox's claim, purging, error
//! codes, the clock) is one `impl` per database (`mysql`, `postgres`).
//!
//! The schema is shipped as migrations (`migrations/mysql`, `migrations/postgres`, also
//! applied by the stores' `migrate`). Expired rows count as absent; each store runs a purge
//! job ([`PurgeOptions`]) that deletes them in bounded batches until the store is shut down.

mod database;
pub(crate) mod decide;
mod inbox;
mod purge;
mod schema;
mod store;
pub(crate) mod table;

#[cfg(feature = "mysql")]
pub mod mysql;
#[cfg(feature = "postgres")]
pub mod postgres;

pub(crate) use database::Failure;
pub use database::SqlDatabase;
pub use inbox::{SqlInbox, SqlInboxBuilder};
pub use purge::PurgeOptions;
pub use store::{SqlStore, SqlStoreBuilder};

pub(crate) use purge::{purge_once, Purger};

use crate::error::{StoreError, StoreOperation, DEADLOCK_ATTEMPTS};

/// The store error for a database error of `failure` kind.
pub(crate) fn store_error(
    operation: StoreOperation,
    failure: Failure,
    err: sqlx::Error,
) -> StoreError {
    match failure {
        Failure::LockTimeout => StoreError::LockTimeout { operation },
        Failure::Deadlock => StoreError::Deadlock {
            operation,
            attempts: DEADLOCK_ATTEMPTS,
        },
        Failure::ReadOnly => StoreError::ReadOnly { operation },
        Failure::AuthFailed => StoreError::AuthFailed { source: err.into() },
        Failure::Duplicate | Failure::Other => StoreError::backend(operation, err),
    }
}

/// The store error for a failed connect: a bad URL, an unreachable server, refused
/// credentials and a failed TLS handshake are told apart.
pub(crate) fn connect_error(failure: Failure, err: sqlx::Error) -> StoreError {
    match err {
        _ if failure == Failure::AuthFailed => StoreError::AuthFailed { source: err.into() },
        sqlx::Error::Configuration(e) => StoreError::BadUrl {
            reason: e.to_string(),
        },
        sqlx::Error::Tls(e) => StoreError::TlsFailed { source: e },
        sqlx::Error::Io(e) => StoreError::Unreachable { source: e.into() },
        sqlx::Error::PoolTimedOut => StoreError::Unreachable { source: err.into() },
        err => store_error(StoreOperation::Connect, failure, err),
    }
}
