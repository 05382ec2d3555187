//! The MySQL / MariaDB dedup store ([`MySqlStore`]) and transactional inbox
//! ([`MySqlInbox`]), over the seed's `t_rocketmq_dedup` table.
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

mod inbox;
pub(crate) mod queries;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::mysql::{MySqlPool, MySqlPoolOptions};

pub use self::inbox::{MySqlInbox, MySqlInboxBuilder};
use super::decide::Batch;
use super::table::{BatchColumns, Table, DEFAULT_TABLE};
use super::{deadlock_backoff, store_error, Failure, PurgeOptions, Purger, DEADLOCK_ATTEMPTS};
use crate::error::{StoreError, StoreOperation};
use crate::record_key::RecordKey;
use crate::store::{ClaimOutcome, CommitOutcome, DedupStore, OwnerToken};

/// The schema, as shipped in `migrations/mysql`.
pub const MIGRATION: &str =
    include_str!("../../../migrations/mysql/20261124000000_t_rocketmq_dedup.sql");

/// A [`DedupStore`] in a MySQL or MariaDB table, shared by all consumers of a group.
///
/// Each call is one transaction over the batch's keys: `SELECT … FOR UPDATE` locks their rows
/// (and, for absent keys, the gaps where they would go), the state machine decides, and one
/// `INSERT … ON DUPLICATE KEY UPDATE` and one `DELETE` write the result. Expiry is by the
/// database's clock. Two transactions that want the same absent keys can deadlock on their
/// gap locks; InnoDB then rolls one back, and it is tried again (up to five times).
///
/// Clones share the pool and the purge job; the job stops when the last clone is dropped or
/// [`shutdown`](MySqlStore::shutdown) is called.
#[derive(Clone)]
pub struct MySqlStore {
    pool: MySqlPool,
    table: Table,
    purger: Option<Arc<Purger>>,
}

impl fmt::Debug for MySqlStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MySqlStore")
            .field("table", &self.table.name())
            .finish_non_exhaustive()
    }
}

/// Configures and connects a [`MySqlStore`].
pub struct MySqlStoreBuilder {
    source: Source,
    table: String,
    max_connections: u32,
    acquire_timeout: Duration,
    purge: PurgeOptions,
}

enum Source {
    Url(String),
    Pool(MySqlPool),
}

/// The URL may hold a password: it is never printed.
impl fmt::Debug for MySqlStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MySqlStoreBuilder")
            .field("table", &self.table)
            .field("max_connections", &self.max_connections)
            .field("purge", &self.purge)
            .finish_non_exhaustive()
    }
}

impl MySqlStoreBuilder {
    /// Default connections in the pool (when the store makes its own).
    pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;
    /// Default wait for a connection (and for the first one, at connect).
    pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

    /// The table (default [`DEFAULT_TABLE`]): letters, digits and `_`.
    pub fn table(mut self, name: impl Into<String>) -> Self {
        self.table = name.into();
        self
    }

    /// Connections in the store's own pool (ignored with [`MySqlStore::from_pool`]).
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n;
        self
    }

    /// How long a call waits for a connection.
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// How expired rows are purged (default [`PurgeOptions::default`]; a zero interval turns
    /// the purge job off).
    pub fn purge(mut self, options: PurgeOptions) -> Self {
        self.purge = options;
        self
    }

    /// Connects (a wrong address or password fails here) and starts the purge job.
    pub async fn connect(self) -> Result<MySqlStore, StoreError> {
        let table =
            Table::new(&self.table).map_err(|e| StoreError::backend(StoreOperation::Connect, e))?;
        let pool = match self.source {
            Source::Pool(pool) => pool,
            Source::Url(url) => MySqlPoolOptions::new()
                .max_connections(self.max_connections)
                .acquire_timeout(self.acquire_timeout)
                .connect(&url)
                .await
                .map_err(|e| StoreError::backend(StoreOperation::Connect, e))?,
        };
        let purger = queries::start_purger(&pool, &table, self.purge);
        Ok(MySqlStore {
            pool,
            table,
            purger,
        })
    }
}

impl MySqlStore {
    /// A builder for a store with its own pool on `url` (`mysql://user:password@host:port/db`).
    pub fn builder(url: impl Into<String>) -> MySqlStoreBuilder {
        Self::with_source(Source::Url(url.into()))
    }

    /// A builder for a store on an existing pool (shared with the application).
    pub fn from_pool(pool: MySqlPool) -> MySqlStoreBuilder {
        Self::with_source(Source::Pool(pool))
    }

    fn with_source(source: Source) -> MySqlStoreBuilder {
        MySqlStoreBuilder {
            source,
            table: DEFAULT_TABLE.to_owned(),
            max_connections: MySqlStoreBuilder::DEFAULT_MAX_CONNECTIONS,
            acquire_timeout: MySqlStoreBuilder::DEFAULT_ACQUIRE_TIMEOUT,
            purge: PurgeOptions::default(),
        }
    }

    /// Creates the table unless it exists (the shipped migration, [`MIGRATION`], for this
    /// store's table name).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let sql = self.table.migration(MIGRATION);
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&self.pool)
            .await
            .map_err(|e| StoreError::backend(StoreOperation::Connect, e))?;
        Ok(())
    }

    /// Deletes every expired row now, in the purge job's batches; answers how many.
    pub async fn purge_expired(&self, batch: u32) -> Result<u64, StoreError> {
        let delete = || queries::purge(&self.pool, &self.table, batch);
        super::purge_once(&delete, batch)
            .await
            .map_err(|e| StoreError::backend(StoreOperation::Purge, e))
    }

    /// The pool.
    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    /// Stops the purge job (the pool stays open for the application).
    pub async fn shutdown(&self) {
        if let Some(purger) = &self.purger {
            purger.stop().await;
        }
    }

    /// Runs one call: lock and read the keys' rows, decide, write; a deadlock is tried again.
    async fn transact<T>(
        &self,
        operation: StoreOperation,
        keys: &[RecordKey],
        decide: impl Fn(&mut Batch) -> Vec<T>,
    ) -> Result<Vec<T>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let columns = BatchColumns::of(keys);
        let mut attempt = 1;
        loop {
            match self.try_transact(&columns, &decide).await {
                Ok(answers) => return Ok(answers),
                Err(err) => {
                    let failure = queries::classify(&err);
                    if failure == Failure::Deadlock && attempt < DEADLOCK_ATTEMPTS {
                        deadlock_backoff(attempt).await;
                        attempt += 1;
                        continue;
                    }
                    return Err(store_error(operation, failure, err));
                }
            }
        }
    }

    async fn try_transact<T>(
        &self,
        columns: &BatchColumns,
        decide: &impl Fn(&mut Batch) -> Vec<T>,
    ) -> Result<Vec<T>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let found = queries::select_rows(&mut tx, &self.table, columns, true).await?;
        let mut batch = Batch::new(found, columns.first.clone());
        let answers = decide(&mut batch);
        let writes: Vec<_> = batch.writes().collect();
        queries::write(&mut tx, &self.table, columns, &writes).await?;
        tx.commit().await?;
        Ok(answers)
    }
}

impl DedupStore for MySqlStore {
    fn claim<'a>(
        &'a self,
        keys: &'a [RecordKey],
        token: OwnerToken,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Vec<ClaimOutcome>, StoreError>> {
        Box::pin(self.transact(StoreOperation::Claim, keys, move |b| b.claim(token, ttl)))
    }

    fn commit<'a>(
        &'a self,
        keys: &'a [RecordKey],
        token: OwnerToken,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Vec<CommitOutcome>, StoreError>> {
        Box::pin(self.transact(StoreOperation::Commit, keys, move |b| b.commit(token, ttl)))
    }

    fn release<'a>(
        &'a self,
        keys: &'a [RecordKey],
        token: OwnerToken,
    ) -> BoxFuture<'a, Result<Vec<bool>, StoreError>> {
        Box::pin(self.transact(StoreOperation::Release, keys, move |b| b.release(token)))
    }

    fn renew<'a>(
        &'a self,
        keys: &'a [RecordKey],
        token: OwnerToken,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Vec<bool>, StoreError>> {
        Box::pin(self.transact(StoreOperation::Renew, keys, move |b| b.renew(token, ttl)))
    }

    fn kind(&self) -> &'static str {
        "mysql"
    }
}
