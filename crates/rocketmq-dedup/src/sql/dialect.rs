//! What differs between MySQL and PostgreSQL: the statements. The store and the inbox are
//! written once over [`SqlDatabase`](super::SqlDatabase); each database implements
//! [`Dialect`] with its own statements, in its module.

use std::future::Future;
use std::time::Duration;

use sqlx::{Database, Pool, Transaction};

use super::decide::Row;
use super::schema::TableFixes;
use super::table::{BatchColumns, Table};
use crate::inbox::InboxClaim;
use crate::record_key::RecordKey;
use crate::store::OwnerToken;

/// The inbox's statements, prepared once per pool in the server's own syntax.
#[derive(Debug)]
pub(crate) struct InboxStatements {
    /// Inserts a record, CONSUMED: key columns, owner, TTL in ms.
    pub(crate) insert: String,
    /// Reads a record's status, owner and liveness, locking it: key columns.
    pub(crate) select: String,
    /// Takes an expired record over: owner, TTL in ms, key columns.
    pub(crate) take_over: String,
    /// How long to wait for another transaction that holds a record (MySQL puts it into
    /// the statements instead).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) lock_wait: Duration,
}

/// What a database error means to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// A deadlock victim or a serialization failure: try the transaction again.
    Deadlock,
    /// A lock wait ran out.
    LockTimeout,
    /// The database refuses writes.
    ReadOnly,
    /// A unique key already holds the row.
    Duplicate,
    /// The server refused the credentials.
    AuthFailed,
    /// Anything else.
    Other,
}

/// What differs between the databases: their statements (see the module docs).
pub(crate) trait Dialect: Database {
    /// The store's name in logs and metrics.
    const STORE_KIND: &'static str;
    /// The inbox's name in logs and metrics.
    const INBOX_KIND: &'static str;
    /// The shipped schema (for the default table name).
    const MIGRATION: &'static str;
    /// The database's clock, in Unix milliseconds, as an SQL expression.
    const NOW_MS: &'static str;
    /// The database's name of a 64-bit integer in a `CAST` (`SIGNED`, `BIGINT`).
    const INTEGER: &'static str;
    /// What follows the batch's `INSERT … VALUES` to update the rows that exist.
    const UPSERT: &'static str;

    /// A pool of `max_connections` on `url`.
    fn connect(
        url: &str,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> impl Future<Output = Result<Pool<Self>, sqlx::Error>> + Send {
        sqlx::pool::PoolOptions::<Self>::new()
            .max_connections(max_connections)
            .acquire_timeout(acquire_timeout)
            .connect(url)
    }

    /// Locks the batch's keys (rows or not) for the transaction and reads their rows.
    fn read<'a>(
        conn: &'a mut Self::Connection,
        table: &'a Table,
        batch: &'a BatchColumns,
    ) -> impl Future<Output = Result<Vec<Row>, sqlx::Error>> + Send + 'a;

    /// What `table`, if it exists, lacks (see [`super::schema`]); nothing when it is absent.
    fn table_fixes<'a>(
        pool: &'a Pool<Self>,
        table: &'a Table,
    ) -> impl Future<Output = Result<TableFixes, sqlx::Error>> + Send + 'a;

    /// The statement that deletes up to `batch` expired rows.
    fn purge_statement(table: &Table, batch: u32) -> String;

    /// The rows a statement changed.
    fn rows_affected(result: &Self::QueryResult) -> u64;

    /// What an error means: a unique key violation, else what the database's own error says
    /// ([`Self::classify_database`]).
    fn classify(err: &sqlx::Error) -> Failure {
        match err.as_database_error() {
            None => Failure::Other,
            Some(db) if db.is_unique_violation() => Failure::Duplicate,
            Some(db) => Self::classify_database(db),
        }
    }

    /// What an error the database answered means, by its own code.
    fn classify_database(db: &dyn sqlx::error::DatabaseError) -> Failure;

    /// Prepares the inbox's statements (waiting at most `lock_wait` for a held record).
    fn prepare_inbox<'a>(
        pool: &'a Pool<Self>,
        table: &'a Table,
        lock_wait: Duration,
    ) -> impl Future<Output = Result<InboxStatements, sqlx::Error>> + Send + 'a;

    /// Inserts `key`'s record, CONSUMED, in `tx`; see [`crate::inbox::Inbox::claim`].
    fn inbox_claim<'a>(
        statements: &'a InboxStatements,
        tx: &'a mut Transaction<'static, Self>,
        key: &'a RecordKey,
        token: OwnerToken,
        ttl: Duration,
    ) -> impl Future<Output = Result<InboxClaim, sqlx::Error>> + Send + 'a;
}
