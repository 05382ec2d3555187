//! The one place the SQL stores meet the databases: what differs between MySQL and
//! PostgreSQL ([`Dialect`], one `impl` per database, in its module) and the statements
//! written once for both over sqlx's query builder ([`SharedStatements`]: the batch's read
//! and its last states as one upsert and one delete, an operator's statements, purging).
//! [`SqlDatabase`] is the two together, the bound the store and the inbox are written over.
//!
//! The shared statements need sqlx bounds (how each database encodes the columns, runs a
//! query, reads a row); they are stated once, on the blanket `impl` of [`SharedStatements`],
//! so that no user of [`SqlDatabase`] repeats them. (A single trait with these bounds as its
//! `where` clauses would make every user repeat them: Rust implies a trait's supertraits at
//! its users, not its other `where` clauses.)

use std::future::Future;
use std::time::Duration;

use sqlx::query::Query;
use sqlx::query_builder::Separated;
use sqlx::{
    ColumnIndex, Database, Decode, Encode, Executor, FromRow, IntoArguments, Pool, QueryBuilder,
    Row as _, Transaction, Type,
};

use super::decide::{Row, Write, CONSUMED, CONSUMING};
use super::table::{BatchColumns, KeyColumns, Table, TableFixes};
use super::{PurgeOptions, Purger};
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
    /// What follows the batch's `SELECT` to lock the rows it reads (`FOR UPDATE`), if the
    /// keys are not locked by [`lock_keys`](Self::lock_keys) instead.
    const LOCK_READ_ROWS: &'static str;

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

    /// Locks the batch's keys for the transaction, rows or not, before they are read; nothing
    /// where the read's own [`LOCK_READ_ROWS`](Self::LOCK_READ_ROWS) locks them.
    fn lock_keys<'a>(
        conn: &'a mut Self::Connection,
        batch: &'a BatchColumns,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send + 'a {
        let _ = (conn, batch);
        async { Ok(()) }
    }

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

/// A database the SQL stores and the inbox run on: `sqlx::MySql` (feature `mysql`) or
/// `sqlx::Postgres` (feature `postgres`). Sealed: the statements are the crate's.
// Sealed: its supertraits are the crate's own, so no other crate can implement it.
#[allow(private_bounds)]
pub trait SqlDatabase: Dialect + SharedStatements {}

impl<DB: Dialect + SharedStatements> SqlDatabase for DB {}

/// One live row as an operator reads it.
#[derive(Debug)]
pub(crate) struct AdminRow {
    /// `CONSUMING` or `CONSUMED`.
    pub(crate) status: String,
    /// A claim's owner token.
    pub(crate) owner: Option<i64>,
    /// Milliseconds until it expires.
    pub(crate) left_ms: i64,
}

/// Rows of a scope, by state.
#[derive(Debug)]
pub(crate) struct RowCounts {
    /// Live CONSUMING rows.
    pub(crate) consuming: i64,
    /// Live CONSUMED rows.
    pub(crate) consumed: i64,
    /// Expired rows (not purged yet).
    pub(crate) expired: i64,
}

/// The key columns, in the table's order.
pub(crate) const KEY_COLUMNS: &str = "application_name, topic, tag, msg_uniq_key";

/// Binds a key's columns in a tuple of the builder.
pub(crate) fn push_key<DB>(tuple: &mut Separated<'_, DB, &'static str>, key: &KeyColumns)
where
    DB: Database,
    for<'t> Vec<u8>: Encode<'t, DB> + Type<DB>,
{
    tuple.push_bind(key.application_name.clone());
    tuple.push_bind(key.topic.clone());
    tuple.push_bind(key.tag.clone());
    tuple.push_bind(key.msg_uniq_key.clone());
}

/// Binds a key's columns, in order, to a query's next placeholders.
pub(crate) fn bind_key<'q, DB>(
    query: Query<'q, DB, DB::Arguments>,
    key: &'q KeyColumns,
) -> Query<'q, DB, DB::Arguments>
where
    DB: Database,
    DB::Arguments: Send,
    for<'t> &'q [u8]: Encode<'t, DB> + Type<DB>,
{
    query
        .bind(key.application_name.as_slice())
        .bind(key.topic.as_slice())
        .bind(key.tag.as_slice())
        .bind(key.msg_uniq_key.as_slice())
}

/// A TTL in milliseconds, as stores keep it (see [`crate::store::clamp_ttl`]).
pub(crate) fn ttl_ms(ttl: std::time::Duration) -> i64 {
    crate::store::clamp_ttl(ttl).as_millis() as i64
}

/// Pushes `WHERE` conditions that match `key`'s row.
fn push_key_match<DB>(query: &mut QueryBuilder<DB>, key: &KeyColumns)
where
    DB: Database,
    for<'t> Vec<u8>: Encode<'t, DB> + Type<DB>,
{
    query.push(" WHERE application_name = ");
    query.push_bind(key.application_name.clone());
    query.push(" AND topic = ");
    query.push_bind(key.topic.clone());
    query.push(" AND tag = ");
    query.push_bind(key.tag.clone());
    query.push(" AND msg_uniq_key = ");
    query.push_bind(key.msg_uniq_key.clone());
}

/// The statements of this module as methods of a database: the store and the inbox call them
/// on any [`SqlDatabase`], which has them (a supertrait) without naming
/// sqlx's bounds.
pub(crate) trait SharedStatements: Dialect {
    /// Locks the batch's keys ([`Dialect::lock_keys`]) and reads the rows of its distinct keys
    /// (absent ones as [`Row::Absent`], liveness by the database's clock), indexed like the
    /// batch, locking them ([`Dialect::LOCK_READ_ROWS`]).
    fn read<'a>(
        conn: &'a mut Self::Connection,
        table: &'a Table,
        batch: &'a BatchColumns,
    ) -> impl Future<Output = Result<Vec<Row>, sqlx::Error>> + Send + 'a;

    /// Writes the last state of each written key: one upsert ([`Dialect::UPSERT`] after the
    /// values) and one delete.
    fn write<'a>(
        conn: &'a mut Self::Connection,
        table: &'a Table,
        batch: &'a BatchColumns,
        writes: &'a [(usize, Write)],
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send + 'a;

    /// An operator's read of one row while it is live: status, owner token, milliseconds
    /// left.
    fn admin_inspect<'a>(
        pool: &'a Pool<Self>,
        table: &'a Table,
        key: &'a KeyColumns,
    ) -> impl Future<Output = Result<Option<AdminRow>, sqlx::Error>> + Send + 'a;

    /// Deletes one row, whatever its state; answers the rows deleted.
    fn admin_forget<'a>(
        pool: &'a Pool<Self>,
        table: &'a Table,
        key: &'a KeyColumns,
    ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send + 'a;

    /// Rows of one application name, or of one topic and tag in it: live CONSUMING, live
    /// CONSUMED, expired.
    fn admin_counts<'a>(
        pool: &'a Pool<Self>,
        table: &'a Table,
        namespace: &'a [u8],
        topic_and_tag: Option<(&'a [u8], &'a [u8])>,
    ) -> impl Future<Output = Result<RowCounts, sqlx::Error>> + Send + 'a;

    /// Deletes up to `batch` expired rows ([`Dialect::purge_statement`]); answers how many.
    fn purge<'a>(
        pool: &'a Pool<Self>,
        table: &'a Table,
        batch: u32,
    ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send + 'a;

    /// Starts the purge job of `table` on `pool`.
    fn start_purger(pool: &Pool<Self>, table: &Table, options: PurgeOptions) -> Option<Purger> {
        let (pool, owned) = (pool.clone(), table.clone());
        let delete = move || {
            let (pool, table) = (pool.clone(), owned.clone());
            async move { Self::purge(&pool, &table, options.batch).await }
        };
        Purger::start(table.name(), options, delete)
    }

    /// Runs a migration's statements.
    fn migrate(
        pool: &Pool<Self>,
        sql: String,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send + '_;
}

impl<DB> SharedStatements for DB
where
    DB: Dialect,
    for<'t> Vec<u8>: Encode<'t, DB> + Type<DB>,
    for<'t> &'static str: Encode<'t, DB> + Type<DB>,
    for<'t> Option<i64>: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
    for<'r> (String, Option<i64>, i64): FromRow<'r, DB::Row>,
    for<'r> (i64, i64, i64): FromRow<'r, DB::Row>,
    DB::Arguments: IntoArguments<DB>,
    for<'e> &'e mut DB::Connection: Executor<'e, Database = DB>,
    for<'e> &'e Pool<DB>: Executor<'e, Database = DB>,
    usize: ColumnIndex<DB::Row>,
    for<'r> Vec<u8>: Decode<'r, DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'r> Option<i64>: Decode<'r, DB>,
    for<'r> i64: Decode<'r, DB>,
{
    async fn read(
        conn: &mut DB::Connection,
        table: &Table,
        batch: &BatchColumns,
    ) -> Result<Vec<Row>, sqlx::Error> {
        DB::lock_keys(conn, batch).await?;
        let mut query = QueryBuilder::<DB>::new(format!(
            "SELECT {KEY_COLUMNS}, status, owner_token, \
             CAST(CASE WHEN expire_time > {} THEN 1 ELSE 0 END AS {}) FROM {} WHERE ({KEY_COLUMNS}) IN",
            DB::NOW_MS,
            DB::INTEGER,
            table.name()
        ));
        query.push_tuples(batch.distinct(), |mut tuple, (_, key)| {
            push_key(&mut tuple, key);
        });
        query.push(DB::LOCK_READ_ROWS);
        let mut found = vec![Row::Absent; batch.columns.len()];
        for row in query.build().fetch_all(&mut *conn).await? {
            let key = KeyColumns::read(&row)?;
            let status: String = row.try_get(4)?;
            let (owner, live): (Option<i64>, i64) = (row.try_get(5)?, row.try_get(6)?);
            if let Some(i) = batch.index_of(&key) {
                found[i] = Row::read(&status, owner, live != 0);
            }
        }
        Ok(found)
    }

    async fn write(
        conn: &mut DB::Connection,
        table: &Table,
        batch: &BatchColumns,
        writes: &[(usize, Write)],
    ) -> Result<(), sqlx::Error> {
        let puts: Vec<_> = writes
            .iter()
            .filter_map(|&(i, w)| match w {
                Write::Put {
                    consumed,
                    owner,
                    ttl,
                } => Some((&batch.columns[i], consumed, owner, ttl)),
                Write::Delete => None,
            })
            .collect();
        if !puts.is_empty() {
            let mut query = QueryBuilder::<DB>::new(format!(
                "INSERT INTO {} ({KEY_COLUMNS}, status, owner_token, expire_time) ",
                table.name()
            ));
            query.push_values(puts, |mut row, (key, consumed, owner, ttl)| {
                push_key(&mut row, key);
                row.push_bind(if consumed { CONSUMED } else { CONSUMING });
                row.push_bind(owner);
                row.push(DB::NOW_MS)
                    .push_unseparated(" + ")
                    .push_bind_unseparated(ttl_ms(ttl));
            });
            query.push(DB::UPSERT);
            query.build().execute(&mut *conn).await?;
        }
        let deletes: Vec<_> = writes
            .iter()
            .filter(|(_, w)| *w == Write::Delete)
            .map(|&(i, _)| &batch.columns[i])
            .collect();
        if !deletes.is_empty() {
            let mut query = QueryBuilder::<DB>::new(format!(
                "DELETE FROM {} WHERE ({KEY_COLUMNS}) IN",
                table.name()
            ));
            query.push_tuples(deletes, |mut tuple, key| push_key(&mut tuple, key));
            query.build().execute(&mut *conn).await?;
        }
        Ok(())
    }

    async fn admin_inspect(
        pool: &Pool<DB>,
        table: &Table,
        key: &KeyColumns,
    ) -> Result<Option<AdminRow>, sqlx::Error> {
        let mut query = QueryBuilder::<DB>::new(format!(
            "SELECT status, owner_token, CAST(expire_time - {} AS {}) FROM {}",
            DB::NOW_MS,
            DB::INTEGER,
            table.name()
        ));
        push_key_match(&mut query, key);
        query.push(format!(" AND expire_time >= {}", DB::NOW_MS));
        let row: Option<(String, Option<i64>, i64)> =
            query.build_query_as().fetch_optional(pool).await?;
        Ok(row.map(|(status, owner, left_ms)| AdminRow {
            status,
            owner,
            left_ms,
        }))
    }

    async fn admin_forget(
        pool: &Pool<DB>,
        table: &Table,
        key: &KeyColumns,
    ) -> Result<u64, sqlx::Error> {
        let mut query = QueryBuilder::<DB>::new(format!("DELETE FROM {}", table.name()));
        push_key_match(&mut query, key);
        Ok(DB::rows_affected(&query.build().execute(pool).await?))
    }

    async fn admin_counts(
        pool: &Pool<DB>,
        table: &Table,
        namespace: &[u8],
        topic_and_tag: Option<(&[u8], &[u8])>,
    ) -> Result<RowCounts, sqlx::Error> {
        let count = |rows: String| {
            format!(
                "CAST(COALESCE(SUM(CASE WHEN {rows} THEN 1 ELSE 0 END), 0) AS {})",
                DB::INTEGER
            )
        };
        let now_ms = DB::NOW_MS;
        let mut query = QueryBuilder::<DB>::new(format!(
            "SELECT {}, {}, {} FROM {} WHERE application_name = ",
            count(format!(
                "status = '{CONSUMING}' AND expire_time >= {now_ms}"
            )),
            count(format!("status = '{CONSUMED}' AND expire_time >= {now_ms}")),
            count(format!("expire_time < {now_ms}")),
            table.name()
        ));
        query.push_bind(namespace.to_vec());
        if let Some((topic, tag)) = topic_and_tag {
            query.push(" AND topic = ").push_bind(topic.to_vec());
            query.push(" AND tag = ").push_bind(tag.to_vec());
        }
        let (consuming, consumed, expired) = query.build_query_as().fetch_one(pool).await?;
        Ok(RowCounts {
            consuming,
            consumed,
            expired,
        })
    }

    async fn purge(pool: &Pool<DB>, table: &Table, batch: u32) -> Result<u64, sqlx::Error> {
        let sql = DB::purge_statement(table, batch);
        let done = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(pool).await?;
        Ok(DB::rows_affected(&done))
    }

    async fn migrate(pool: &Pool<DB>, sql: String) -> Result<(), sqlx::Error> {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(pool)
            .await?;
        Ok(())
    }
}
