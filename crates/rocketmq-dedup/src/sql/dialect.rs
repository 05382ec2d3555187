//! What differs between MySQL and PostgreSQL: the statements. The stores and the inbox are
//! written once over this trait; each database implements it.

use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::{Database, Pool, Transaction};

use super::decide::{Row, Write};
use super::table::{BatchColumns, KeyColumns, Table};

/// One live row as an operator reads it: status, owner token, milliseconds left.
pub(crate) type AdminRow = (String, Option<i64>, i64);
use super::{Failure, PurgeOptions, Purger};
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

/// A database the SQL stores run on.
pub(crate) trait Dialect: Database {
    /// The store's name in logs and metrics.
    const STORE_KIND: &'static str;
    /// The inbox's name in logs and metrics.
    const INBOX_KIND: &'static str;
    /// The shipped schema (for the default table name).
    const MIGRATION: &'static str;

    /// A pool of `max_connections` on `url`.
    fn connect(
        url: &str,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> BoxFuture<'_, Result<Pool<Self>, sqlx::Error>>;

    /// Locks the batch's keys (rows or not) for the transaction and reads their rows.
    fn read<'a>(
        conn: &'a mut Self::Connection,
        table: &'a Table,
        batch: &'a BatchColumns,
    ) -> BoxFuture<'a, Result<Vec<Row>, sqlx::Error>>;

    /// Writes the keys' last states.
    fn write<'a>(
        conn: &'a mut Self::Connection,
        table: &'a Table,
        batch: &'a BatchColumns,
        writes: &'a [(usize, Write)],
    ) -> BoxFuture<'a, Result<(), sqlx::Error>>;

    /// Starts the purge job.
    fn start_purger(pool: &Pool<Self>, table: &Table, options: PurgeOptions) -> Option<Purger>;

    /// Deletes up to `batch` expired rows.
    fn purge<'a>(
        pool: &'a Pool<Self>,
        table: &'a Table,
        batch: u32,
    ) -> BoxFuture<'a, Result<u64, sqlx::Error>>;

    /// An operator's read of one live row.
    fn admin_inspect<'a>(
        pool: &'a Pool<Self>,
        table: &'a Table,
        key: &'a KeyColumns,
    ) -> BoxFuture<'a, Result<Option<AdminRow>, sqlx::Error>>;

    /// Deletes one row; answers the rows deleted.
    fn admin_forget<'a>(
        pool: &'a Pool<Self>,
        table: &'a Table,
        key: &'a KeyColumns,
    ) -> BoxFuture<'a, Result<u64, sqlx::Error>>;

    /// Live CONSUMING, live CONSUMED and expired rows of one application name, or of one
    /// topic and tag in it.
    fn admin_counts<'a>(
        pool: &'a Pool<Self>,
        table: &'a Table,
        namespace: &'a [u8],
        topic_and_tag: Option<(&'a [u8], &'a [u8])>,
    ) -> BoxFuture<'a, Result<(i64, i64, i64), sqlx::Error>>;

    /// Runs a migration's statements.
    fn migrate<'a>(pool: &'a Pool<Self>, sql: String) -> BoxFuture<'a, Result<(), sqlx::Error>>;

    /// What an error means.
    fn classify(err: &sqlx::Error) -> Failure;

    /// Prepares the inbox's statements (waiting at most `lock_wait` for a held record).
    fn prepare_inbox<'a>(
        pool: &'a Pool<Self>,
        table: &'a Table,
        lock_wait: Duration,
    ) -> BoxFuture<'a, Result<InboxStatements, sqlx::Error>>;

    /// Inserts `key`'s record, CONSUMED, in `tx`; see [`crate::inbox::Inbox::claim`].
    fn inbox_claim<'a>(
        statements: &'a InboxStatements,
        tx: &'a mut Transaction<'static, Self>,
        key: &'a RecordKey,
        token: OwnerToken,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<InboxClaim, sqlx::Error>>;
}
