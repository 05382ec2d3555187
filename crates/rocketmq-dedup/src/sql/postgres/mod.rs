//! PostgreSQL (feature `postgres`): [`PostgresStore`], a [`DedupStore`](crate::DedupStore) in
//! the seed's `t_rocketmq_dedup` table, and [`PostgresInbox`], the transactional inbox.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use rocketmq_dedup::sql::postgres::PostgresStore;
//!
//! let store = PostgresStore::builder("postgres://app:secret@127.0.0.1:5432/shop")
//!     .connect()
//!     .await?;
//! store.migrate().await?; // CREATE TABLE IF NOT EXISTS t_rocketmq_dedup (…)
//! # Ok(()) }
//! ```
//!
//! PostgreSQL has no gap locks, so a transaction locks its keys with transaction-scoped
//! advisory locks (ids from the record keys' fingerprints, taken in id order), whether their
//! rows exist or not. Expiry uses `clock_timestamp()`, not the transaction's start.

mod inbox;
pub(crate) mod queries;

use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::postgres::{PgPool, PgPoolOptions, Postgres};
use sqlx::{Pool, Transaction};

use super::decide::{Row, Write};
use super::dialect::{Dialect, InboxStatements};
use super::table::{BatchColumns, KeyColumns, Table};
use super::{Failure, PurgeOptions, Purger};
use crate::inbox::InboxClaim;
use crate::record_key::RecordKey;
use crate::store::OwnerToken;

/// The schema, as shipped in `migrations/postgres`.
pub const MIGRATION: &str =
    include_str!("../../../migrations/postgres/20261124000000_t_rocketmq_dedup.sql");

/// The dedup store in PostgreSQL; see [`SqlStore`](super::store::SqlStore).
pub type PostgresStore = super::store::SqlStore<Postgres>;
/// Configures a [`PostgresStore`].
pub type PostgresStoreBuilder = super::store::SqlStoreBuilder<Postgres>;
/// The transactional inbox in PostgreSQL; see [`SqlInbox`](super::inbox::SqlInbox).
///
/// The claim takes the key's advisory lock (`pg_try_advisory_xact_lock`, tried until the lock
/// wait runs out, so nothing is set on the transaction the handler goes on using), then
/// inserts the record.
pub type PostgresInbox = super::inbox::SqlInbox<Postgres>;
/// Configures a [`PostgresInbox`].
pub type PostgresInboxBuilder = super::inbox::SqlInboxBuilder<Postgres>;

super::store::sql_store_for!(Postgres, "postgres://user:password@host:port/database");
super::inbox::sql_inbox_for!(Postgres);

impl Dialect for Postgres {
    const STORE_KIND: &'static str = "postgres";
    const INBOX_KIND: &'static str = "postgres-inbox";
    const MIGRATION: &'static str = MIGRATION;

    fn connect(
        url: &str,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> BoxFuture<'_, Result<PgPool, sqlx::Error>> {
        Box::pin(
            PgPoolOptions::new()
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
        Box::pin(async move {
            queries::lock_keys(conn, batch).await?;
            queries::select_rows(conn, table, batch).await
        })
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
        _pool: &'a Pool<Self>,
        table: &'a Table,
        lock_wait: Duration,
    ) -> BoxFuture<'a, Result<InboxStatements, sqlx::Error>> {
        Box::pin(async move { Ok(inbox::statements(table, lock_wait)) })
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
