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

use std::time::Duration;

use sqlx::mysql::{MySql, MySqlDatabaseError, MySqlPool};
use sqlx::{AssertSqlSafe, Row as _, Transaction};

use super::database::{bind_key, ttl_ms, Dialect, InboxStatements};
use super::decide::{owner, Row, CONSUMED};
use super::schema::{self, Column, FixSyntax};
use super::table::{KeyColumns, Table, TableFixes};
use super::Failure;
use crate::inbox::InboxClaim;
use crate::record_key::RecordKey;
use crate::store::OwnerToken;

/// The dedup store in MySQL / MariaDB; see [`SqlStore`](super::SqlStore).
pub type MySqlStore = super::SqlStore<MySql>;
/// The transactional inbox in MySQL / MariaDB; see [`SqlInbox`](super::SqlInbox).
///
/// The claim's `INSERT` waits for another transaction that inserted the same key at most the
/// lock wait, in whole seconds (InnoDB's `innodb_lock_wait_timeout`, set for that statement
/// alone: `SET STATEMENT … FOR` on MariaDB, a `SET_VAR` hint on MySQL 8).
pub type MySqlInbox = super::SqlInbox<MySql>;

impl Dialect for MySql {
    const STORE_KIND: &'static str = "mysql";
    const INBOX_KIND: &'static str = "mysql-inbox";
    /// The schema, as shipped in `migrations/mysql`.
    const MIGRATION: &'static str =
        include_str!("../../../migrations/mysql/20261124000000_t_rocketmq_dedup.sql");
    const NOW_MS: &'static str = NOW_MS;
    const INTEGER: &'static str = "SIGNED";
    const UPSERT: &'static str =
        " ON DUPLICATE KEY UPDATE status = VALUES(status), owner_token = VALUES(owner_token), expire_time = VALUES(expire_time)";
    /// Rows and, for absent keys, their gaps.
    const LOCK_READ_ROWS: &'static str = " FOR UPDATE";

    /// The table's columns from `information_schema`; the purge job's index is one whose
    /// first column is `expire_time`.
    async fn table_fixes(pool: &MySqlPool, table: &Table) -> Result<TableFixes, sqlx::Error> {
        let rows: Vec<(String, String, Option<i64>, Option<String>)> = sqlx::query_as(
            "SELECT CONVERT(COLUMN_NAME USING utf8mb4), CONVERT(DATA_TYPE USING utf8mb4), \
             CAST(CHARACTER_MAXIMUM_LENGTH AS SIGNED), CONVERT(COLLATION_NAME USING utf8mb4) \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
        )
        .bind(table.name())
        .fetch_all(pool)
        .await?;
        let indexed: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() \
             AND TABLE_NAME = ? AND COLUMN_NAME = 'expire_time' AND SEQ_IN_INDEX = 1",
        )
        .bind(table.name())
        .fetch_one(pool)
        .await?;
        let columns: Vec<Column> = rows
            .into_iter()
            .map(|(name, data_type, length, collation)| Column {
                binary: matches!(data_type.as_str(), "varbinary" | "binary" | "blob"),
                name,
                length,
                collation,
            })
            .collect();
        let syntax = FixSyntax {
            key_column: |name| format!("MODIFY {name} VARBINARY(255) NOT NULL"),
            owner_token: "ADD COLUMN owner_token BIGINT NULL",
            expire_index: (indexed == 0)
                .then(|| format!("ADD KEY {}_expire_time (expire_time)", table.name())),
        };
        Ok(schema::fixes(&columns, &syntax))
    }

    fn purge_statement(table: &Table, batch: u32) -> String {
        format!(
            "DELETE FROM {} WHERE expire_time < {NOW_MS} LIMIT {batch}",
            table.name()
        )
    }

    fn rows_affected(result: &sqlx::mysql::MySqlQueryResult) -> u64 {
        result.rows_affected()
    }

    /// What a MySQL / MariaDB error means to the store, by its error number.
    fn classify_database(db: &dyn sqlx::error::DatabaseError) -> Failure {
        match db
            .try_downcast_ref::<MySqlDatabaseError>()
            .map(|e| e.number())
        {
            // ER_LOCK_DEADLOCK
            Some(1213) => Failure::Deadlock,
            // ER_LOCK_WAIT_TIMEOUT
            Some(1205) => Failure::LockTimeout,
            // ER_OPTION_PREVENTS_STATEMENT (--read-only), ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION
            Some(1290) | Some(1792) | Some(1836) => Failure::ReadOnly,
            // ER_ACCESS_DENIED_ERROR, ER_DBACCESS_DENIED_ERROR
            Some(1045) | Some(1044) => Failure::AuthFailed,
            _ => Failure::Other,
        }
    }

    /// The claim's statements, the lock wait bound in the server's own syntax.
    async fn prepare_inbox(
        pool: &MySqlPool,
        table: &Table,
        lock_wait: Duration,
    ) -> Result<InboxStatements, sqlx::Error> {
        let version: String = sqlx::query_scalar("SELECT VERSION()")
            .fetch_one(pool)
            .await?;
        let seconds = lock_wait.as_secs_f64().ceil().max(1.0) as u64;
        let bounded = |statement: String| match version.contains("MariaDB") {
            true => format!("SET STATEMENT innodb_lock_wait_timeout = {seconds} FOR {statement}"),
            false => statement.replacen(
                ' ',
                &format!(" /*+ SET_VAR(innodb_lock_wait_timeout = {seconds}) */ "),
                1,
            ),
        };
        let name = table.name();
        let key = "application_name = ? AND topic = ? AND tag = ? AND msg_uniq_key = ?";
        Ok(InboxStatements {
            insert: bounded(format!(
                "INSERT INTO {name} (application_name, topic, tag, msg_uniq_key, status, owner_token, expire_time) VALUES (?, ?, ?, ?, '{CONSUMED}', ?, {NOW_MS} + ?)"
            )),
            select: bounded(format!(
                "SELECT status, owner_token, CAST(expire_time > {NOW_MS} AS SIGNED) FROM {name} WHERE {key} FOR UPDATE"
            )),
            take_over: format!(
                "UPDATE {name} SET status = '{CONSUMED}', owner_token = ?, expire_time = {NOW_MS} + ? WHERE {key}"
            ),
            lock_wait,
        })
    }

    /// Claims `key` in `tx`; see [`crate::inbox::Inbox::claim`].
    async fn inbox_claim(
        statements: &InboxStatements,
        tx: &mut Transaction<'static, MySql>,
        key: &RecordKey,
        token: OwnerToken,
        ttl: Duration,
    ) -> Result<InboxClaim, sqlx::Error> {
        let columns = KeyColumns::of(key);
        let ttl = ttl_ms(ttl);
        let insert = sqlx::query(AssertSqlSafe(statements.insert.as_str()));
        let inserted = bind_key(insert, &columns)
            .bind(owner(token))
            .bind(ttl)
            .execute(&mut **tx)
            .await;
        match inserted.as_ref().map_err(Self::classify) {
            Ok(_) => return Ok(InboxClaim::Claimed),
            Err(Failure::Duplicate) => {}
            Err(Failure::LockTimeout) => return Ok(InboxClaim::InFlight),
            Err(_) => return inserted.map(|_| InboxClaim::Claimed),
        }
        // A committed record: processed, or expired (then it is ours to take over).
        let select = sqlx::query(AssertSqlSafe(statements.select.as_str()));
        let found = bind_key(select, &columns).fetch_optional(&mut **tx).await;
        let row = match found {
            Ok(Some(row)) => row,
            Ok(None) => return Ok(InboxClaim::InFlight),
            Err(e) if Self::classify(&e) == Failure::LockTimeout => {
                return Ok(InboxClaim::InFlight)
            }
            Err(e) => return Err(e),
        };
        let live: i64 = row.try_get(2)?;
        match Row::read(&row.try_get::<String, _>(0)?, row.try_get(1)?, live != 0) {
            Row::Consumed => Ok(InboxClaim::Consumed),
            Row::Consuming(_) => Ok(InboxClaim::InFlight),
            Row::Absent => {
                let update = sqlx::query(AssertSqlSafe(statements.take_over.as_str()))
                    .bind(owner(token))
                    .bind(ttl);
                bind_key(update, &columns).execute(&mut **tx).await?;
                Ok(InboxClaim::Claimed)
            }
        }
    }
}

/// Now, in milliseconds since the epoch, by the database's clock.
const NOW_MS: &str = "CAST(ROUND(UNIX_TIMESTAMP(NOW(3)) * 1000) AS SIGNED)";
