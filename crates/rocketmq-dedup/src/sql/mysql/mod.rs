//! MySQL / MariaDB (feature `mysql`): [`MySqlStore`], a [`DedupStore`](crate::DedupStore) in
//! the seed's `t_rocketmq_dedup` table, and [`MySqlInbox`], the transactional inbox.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use rocketmq_dedup::sql::mysql::MySqlStore;
//!
//! let store = MySqlStore::builder("mysql://app:secret@127.0.0.1:3306/shop")
//!     .connect()
//!     .await?;
//! store.migrate().await?; // CREATE TABLE IF NOT EXISTS t_rocketmq_dedup (…)
//! # Ok(()) }
//! ```
//!
//! Keys are locked with `SELECT … FOR UPDATE`, which in InnoDB also locks the gap where an
//! absent key's row would go; two transactions that want the same absent keys can deadlock
//! there, and the one InnoDB rolls back is tried again.

mod inbox;
pub(crate) mod queries;

use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::mysql::{MySql, MySqlPool, MySqlPoolOptions};
use sqlx::{Pool, Transaction};

use super::decide::{Row, Write};
use super::dialect::{Dialect, InboxStatements};
use super::table::{BatchColumns, KeyColumns, Table};
use super::{Failure, PurgeOptions, Purger};
use crate::inbox::InboxClaim;
use crate::record_key::RecordKey;
use crate::store::OwnerToken;

/// The schema, as shipped in `migrations/mysql`.
pub const MIGRATION: &str =
    include_str!("../../../migrations/mysql/20261124000000_t_rocketmq_dedup.sql");

/// The dedup store in MySQL / MariaDB; see [`SqlStore`](super::store::SqlStore).
pub type MySqlStore = super::store::SqlStore<MySql>;
/// Configures a [`MySqlStore`].
pub type MySqlStoreBuilder = super::store::SqlStoreBuilder<MySql>;
/// The transactional inbox in MySQL / MariaDB; see [`SqlInbox`](super::inbox::SqlInbox).
///
/// The claim's `INSERT` waits for another transaction that inserted the same key at most the
/// lock wait, in whole seconds (InnoDB's `innodb_lock_wait_timeout`, set for that statement
/// alone: `SET STATEMENT … FOR` on MariaDB, a `SET_VAR` hint on MySQL 8).
pub type MySqlInbox = super::inbox::SqlInbox<MySql>;
/// Configures a [`MySqlInbox`].
pub type MySqlInboxBuilder = super::inbox::SqlInboxBuilder<MySql>;

super::store::sql_store_for!(MySql, "mysql://user:password@host:port/database");
super::inbox::sql_inbox_for!(MySql);

impl Dialect for MySql {
    const STORE_KIND: &'static str = "mysql";
    const INBOX_KIND: &'static str = "mysql-inbox";
    const MIGRATION: &'static str = MIGRATION;

    fn connect(
        url: &str,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> BoxFuture<'_, Result<MySqlPool, sqlx::Error>> {
        Box::pin(
            MySqlPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(acquire_timeout)
                .connect(url),
        )
    }

    fn read<'a>(
        conn: &'a mut Self::Connection,
        table: &'a Table,
        batch: &'a BatchColumns,
    ) -> BoxFuture<'a, Result<Vec<Row>, sqlx::Error>> {
        Box::pin(queries::select_rows(conn, table, batch, true))
    }

    fn write<'a>(
        conn: &'a mut Self::Connection,
        table: &'a Table,
        batch: &'a BatchColumns,
        writes: &'a [(usize, Write)],
    ) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(queries::write(conn, table, batch, writes))
    }

    fn start_purger(pool: &Pool<Self>, table: &Table, options: PurgeOptions) -> Option<Purger> {
        queries::start_purger(pool, table, options)
    }

    fn purge<'a>(
        pool: &'a Pool<Self>,
        table: &'a Table,
        batch: u32,
    ) -> BoxFuture<'a, Result<u64, sqlx::Error>> {
        Box::pin(queries::purge(pool, table, batch))
    }

    fn admin_inspect<'a>(
        pool: &'a Pool<Self>,
        table: &'a Table,
        key: &'a KeyColumns,
    ) -> BoxFuture<'a, Result<Option<super::dialect::AdminRow>, sqlx::Error>> {
        Box::pin(queries::admin_inspect(pool, table, key))
    }

    fn admin_forget<'a>(
        pool: &'a Pool<Self>,
        table: &'a Table,
        key: &'a KeyColumns,
    ) -> BoxFuture<'a, Result<u64, sqlx::Error>> {
        Box::pin(queries::admin_forget(pool, table, key))
    }

    fn admin_counts<'a>(
        pool: &'a Pool<Self>,
        table: &'a Table,
        namespace: &'a [u8],
        topic_and_tag: Option<(&'a [u8], &'a [u8])>,
    ) -> BoxFuture<'a, Result<(i64, i64, i64), sqlx::Error>> {
        Box::pin(queries::admin_counts(pool, table, namespace, topic_and_tag))
    }

    fn migrate<'a>(pool: &'a Pool<Self>, sql: String) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(async move {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    fn classify(err: &sqlx::Error) -> Failure {
        queries::classify(err)
    }

    fn prepare_inbox<'a>(
        pool: &'a Pool<Self>,
        table: &'a Table,
        lock_wait: Duration,
    ) -> BoxFuture<'a, Result<InboxStatements, sqlx::Error>> {
        Box::pin(inbox::prepare(pool, table, lock_wait))
    }

    fn inbox_claim<'a>(
        statements: &'a InboxStatements,
        tx: &'a mut Transaction<'static, Self>,
        key: &'a RecordKey,
        token: OwnerToken,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<InboxClaim, sqlx::Error>> {
        Box::pin(inbox::claim(statements, tx, key, token, ttl))
    }
}
