//! [`MySqlInbox`]: the transactional inbox in MySQL / MariaDB.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::mysql::{MySql, MySqlPool};
use sqlx::{AssertSqlSafe, Row as _, Transaction};

use super::queries::{self, NOW_MS};
use crate::error::{StoreError, StoreOperation};
use crate::inbox::{Inbox, InboxClaim};
use crate::record_key::RecordKey;
use crate::sql::decide::{owner, Row, CONSUMED};
use crate::sql::table::{KeyColumns, Table, DEFAULT_TABLE};
use crate::sql::{store_error, Failure, PurgeOptions, Purger};
use crate::store::OwnerToken;

/// The transactional inbox on a MySQL or MariaDB pool (the application's: its handler writes
/// there); see [`crate::inbox`].
///
/// The claim is an `INSERT` of the record, CONSUMED, in the message's transaction: it waits
/// for another transaction that inserted the same key at most the lock wait (whole seconds:
/// InnoDB's `innodb_lock_wait_timeout`, set for that statement only), then the message is
/// deferred. Clones share the pool and the purge job.
#[derive(Clone)]
pub struct MySqlInbox {
    pool: MySqlPool,
    table: Table,
    /// The claim's statement, with the lock wait bound in the server's own syntax.
    insert_sql: Arc<str>,
    select_sql: Arc<str>,
    take_over_sql: Arc<str>,
    purger: Option<Arc<Purger>>,
}

impl fmt::Debug for MySqlInbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MySqlInbox")
            .field("table", &self.table.name())
            .finish_non_exhaustive()
    }
}

/// Configures a [`MySqlInbox`].
#[derive(Debug)]
pub struct MySqlInboxBuilder {
    pool: MySqlPool,
    table: String,
    lock_wait: Duration,
    purge: PurgeOptions,
}

impl MySqlInboxBuilder {
    /// Default wait for another transaction that holds a message's record.
    pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(1);

    /// The table (default [`DEFAULT_TABLE`]).
    pub fn table(mut self, name: impl Into<String>) -> Self {
        self.table = name.into();
        self
    }

    /// How long a claim waits for another transaction that holds the record (default
    /// [`Self::DEFAULT_LOCK_WAIT`]; rounded up to whole seconds, at least one).
    pub fn lock_wait(mut self, wait: Duration) -> Self {
        self.lock_wait = wait;
        self
    }

    /// How expired records are purged (default [`PurgeOptions::default`]).
    pub fn purge(mut self, options: PurgeOptions) -> Self {
        self.purge = options;
        self
    }

    /// Learns the server's flavour (the lock-wait syntax differs) and starts the purge job.
    pub async fn connect(self) -> Result<MySqlInbox, StoreError> {
        let connect = |e: sqlx::Error| StoreError::backend(StoreOperation::Connect, e);
        let table =
            Table::new(&self.table).map_err(|e| StoreError::backend(StoreOperation::Connect, e))?;
        let version: String = sqlx::query_scalar("SELECT VERSION()")
            .fetch_one(&self.pool)
            .await
            .map_err(connect)?;
        let seconds = self.lock_wait.as_secs_f64().ceil().max(1.0) as u64;
        let bounded = |statement: &str| match version.contains("MariaDB") {
            true => format!("SET STATEMENT innodb_lock_wait_timeout = {seconds} FOR {statement}"),
            false => statement.replacen(
                ' ',
                &format!(" /*+ SET_VAR(innodb_lock_wait_timeout = {seconds}) */ "),
                1,
            ),
        };
        let name = table.name();
        let key = "application_name = ? AND topic = ? AND tag = ? AND msg_uniq_key = ?";
        let insert_sql = bounded(&format!(
            "INSERT INTO {name} (application_name, topic, tag, msg_uniq_key, status, owner_token, expire_time) VALUES (?, ?, ?, ?, '{CONSUMED}', ?, {NOW_MS} + ?)"
        ));
        let select_sql = bounded(&format!(
            "SELECT status, owner_token, CAST(expire_time > {NOW_MS} AS SIGNED) FROM {name} WHERE {key} FOR UPDATE"
        ));
        let take_over_sql = format!(
            "UPDATE {name} SET status = '{CONSUMED}', owner_token = ?, expire_time = {NOW_MS} + ? WHERE {key}"
        );
        let purger = queries::start_purger(&self.pool, &table, self.purge);
        Ok(MySqlInbox {
            pool: self.pool,
            table,
            insert_sql: insert_sql.into(),
            select_sql: select_sql.into(),
            take_over_sql: take_over_sql.into(),
            purger,
        })
    }
}

impl MySqlInbox {
    /// A builder for an inbox on `pool`.
    pub fn builder(pool: MySqlPool) -> MySqlInboxBuilder {
        MySqlInboxBuilder {
            pool,
            table: DEFAULT_TABLE.to_owned(),
            lock_wait: MySqlInboxBuilder::DEFAULT_LOCK_WAIT,
            purge: PurgeOptions::default(),
        }
    }

    /// Creates the table unless it exists (the shipped migration).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let sql = self.table.migration(super::MIGRATION);
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(&self.pool)
            .await
            .map_err(|e| StoreError::backend(StoreOperation::Connect, e))?;
        Ok(())
    }

    /// The pool.
    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    /// Stops the purge job.
    pub async fn shutdown(&self) {
        if let Some(purger) = &self.purger {
            purger.stop().await;
        }
    }

    async fn claim_in(
        &self,
        tx: &mut Transaction<'static, MySql>,
        key: &RecordKey,
        token: OwnerToken,
        ttl: Duration,
    ) -> Result<InboxClaim, sqlx::Error> {
        let columns = KeyColumns::of(key);
        let ttl = queries::ttl_ms(ttl);
        let inserted = bind_key(
            sqlx::query(AssertSqlSafe(self.insert_sql.clone())),
            &columns,
        )
        .bind(owner(token))
        .bind(ttl)
        .execute(&mut **tx)
        .await;
        match inserted.as_ref().map_err(queries::classify) {
            Ok(_) => return Ok(InboxClaim::Claimed),
            Err(Failure::Duplicate) => {}
            Err(Failure::LockTimeout) => return Ok(InboxClaim::InFlight),
            Err(_) => return inserted.map(|_| InboxClaim::Claimed),
        }
        // A committed record: processed, or expired (then it is ours to take over).
        let found = bind_key(
            sqlx::query(AssertSqlSafe(self.select_sql.clone())),
            &columns,
        )
        .fetch_optional(&mut **tx)
        .await;
        let row = match found {
            Ok(Some(row)) => row,
            Ok(None) => return Ok(InboxClaim::InFlight),
            Err(e) if queries::classify(&e) == Failure::LockTimeout => {
                return Ok(InboxClaim::InFlight)
            }
            Err(e) => return Err(e),
        };
        let live: i64 = row.try_get(2)?;
        match Row::read(&row.try_get::<String, _>(0)?, row.try_get(1)?, live != 0) {
            Row::Consumed => Ok(InboxClaim::Consumed),
            Row::Consuming(_) => Ok(InboxClaim::InFlight),
            Row::Absent => {
                let update = sqlx::query(AssertSqlSafe(self.take_over_sql.clone()))
                    .bind(owner(token))
                    .bind(ttl);
                bind_key(update, &columns).execute(&mut **tx).await?;
                Ok(InboxClaim::Claimed)
            }
        }
    }
}

fn bind_key<'q>(
    query: sqlx::query::Query<'q, MySql, sqlx::mysql::MySqlArguments>,
    key: &KeyColumns,
) -> sqlx::query::Query<'q, MySql, sqlx::mysql::MySqlArguments> {
    query
        .bind(key.application_name.clone())
        .bind(key.topic.clone())
        .bind(key.tag.clone())
        .bind(key.msg_uniq_key.clone())
}

fn error(operation: StoreOperation, err: sqlx::Error) -> StoreError {
    store_error(operation, queries::classify(&err), err)
}

impl Inbox for MySqlInbox {
    type Database = MySql;

    fn begin(&self) -> BoxFuture<'_, Result<Transaction<'static, MySql>, StoreError>> {
        Box::pin(async move {
            self.pool
                .begin()
                .await
                .map_err(|e| error(StoreOperation::Begin, e))
        })
    }

    fn claim<'a>(
        &'a self,
        tx: &'a mut Transaction<'static, MySql>,
        key: &'a RecordKey,
        token: OwnerToken,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<InboxClaim, StoreError>> {
        Box::pin(async move {
            self.claim_in(tx, key, token, ttl)
                .await
                .map_err(|e| error(StoreOperation::Claim, e))
        })
    }

    fn commit(&self, tx: Transaction<'static, MySql>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            tx.commit()
                .await
                .map_err(|e| error(StoreOperation::Commit, e))
        })
    }

    fn kind(&self) -> &'static str {
        "mysql-inbox"
    }
}
