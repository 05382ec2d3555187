//! [`SqlStore`]: the dedup table as a [`DedupStore`], on MySQL / MariaDB
//! ([`MySqlStore`](crate::sql::mysql::MySqlStore)) or PostgreSQL
//! ([`PostgresStore`](crate::sql::postgres::PostgresStore)).

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::{Database, Pool};

use super::database::SqlDatabase;
use super::decide::RowBatch;
use super::table::{BatchColumns, Table, DEFAULT_TABLE};
use super::{store_error, Failure, PurgeOptions, Purger};
use crate::error::{deadlock_backoff, StoreError, StoreOperation, DEADLOCK_ATTEMPTS};
use crate::record_key::{KeyParts, RecordKey, RecordScope};
use crate::store::admin::{RecordAdmin, RecordCounts, RecordState};
use crate::store::{ClaimOutcome, CommitOutcome, DedupStore, OwnerToken};

/// A [`DedupStore`] in a SQL table, shared by all consumers of a group.
///
/// Each call is one transaction over the batch's keys: they are locked (their rows, and
/// where there is none the place one would go), their rows read with their liveness by the
/// database's clock, the state machine decides every answer, and one upsert and one delete
/// write the result. A transaction the database picks as a deadlock victim is tried again
/// (five times in all).
///
/// Clones share the pool and the purge job; the job stops when the last clone is dropped or
/// [`shutdown`](SqlStore::shutdown) is called.
pub struct SqlStore<DB: Database> {
    pub(crate) pool: Pool<DB>,
    pub(crate) table: Table,
    purger: Option<Arc<Purger>>,
    /// Rows per `DELETE` of an operator's purge (the purge job's).
    purge_batch: u32,
}

impl<DB: Database> Clone for SqlStore<DB> {
    fn clone(&self) -> Self {
        SqlStore {
            pool: self.pool.clone(),
            table: self.table.clone(),
            purger: self.purger.clone(),
            purge_batch: self.purge_batch,
        }
    }
}

impl<DB: Database> fmt::Debug for SqlStore<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlStore")
            .field("database", &DB::NAME)
            .field("table", &self.table.name())
            .finish_non_exhaustive()
    }
}

/// Configures and connects a [`SqlStore`].
pub struct SqlStoreBuilder<DB: Database> {
    source: Source<DB>,
    table: String,
    max_connections: u32,
    acquire_timeout: Duration,
    purge: PurgeOptions,
    migrate: bool,
    database: PhantomData<DB>,
}

enum Source<DB: Database> {
    Url(String),
    Pool(Pool<DB>),
}

/// The URL may hold a password: it is never printed.
impl<DB: Database> fmt::Debug for SqlStoreBuilder<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlStoreBuilder")
            .field("database", &DB::NAME)
            .field("table", &self.table)
            .field("max_connections", &self.max_connections)
            .field("purge", &self.purge)
            .finish_non_exhaustive()
    }
}

impl<DB: Database> SqlStoreBuilder<DB> {
    /// Default connections in the pool (when the store makes its own).
    pub(crate) const DEFAULT_MAX_CONNECTIONS: u32 = 10;
    /// Default wait for a connection (and for the first one, at connect).
    pub(crate) const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

    fn new(source: Source<DB>) -> Self {
        SqlStoreBuilder {
            source,
            table: DEFAULT_TABLE.to_owned(),
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            acquire_timeout: Self::DEFAULT_ACQUIRE_TIMEOUT,
            purge: PurgeOptions::default(),
            migrate: false,
            database: PhantomData,
        }
    }

    /// The table (default `t_rocketmq_dedup`, the Java library's): letters, digits and `_`.
    pub fn table(mut self, name: impl Into<String>) -> Self {
        self.table = name.into();
        self
    }

    /// Whether [`connect`](Self::connect) creates the table, or alters one that does not
    /// fit, as [`SqlStore::migrate`] does (default false: a table that exists and does not
    /// fit is refused with [`StoreError::TableUnfit`], which names the statement to run).
    pub fn migrate(mut self, yes: bool) -> Self {
        self.migrate = yes;
        self
    }

    /// Connections in the store's own pool (default 10; ignored on an application's pool).
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n;
        self
    }

    /// How long a call waits for a connection (default 3 s).
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
}

impl<DB: SqlDatabase> SqlStoreBuilder<DB> {
    /// Connects (a wrong address or password fails here) and starts the purge job.
    pub async fn connect(self) -> Result<SqlStore<DB>, StoreError> {
        let connect = |e: sqlx::Error| super::connect_error(DB::classify(&e), e);
        let table =
            Table::new(&self.table).map_err(|e| StoreError::backend(StoreOperation::Connect, e))?;
        let pool = match self.source {
            Source::Pool(pool) => pool,
            Source::Url(url) => DB::connect(&url, self.max_connections, self.acquire_timeout)
                .await
                .map_err(connect)?,
        };
        match self.migrate {
            true => super::schema::migrate(&pool, &table).await?,
            false => super::schema::check(&pool, &table).await?,
        }
        let purger = DB::start_purger(&pool, &table, self.purge).map(Arc::new);
        Ok(SqlStore {
            pool,
            table,
            purger,
            purge_batch: self.purge.batch.max(1),
        })
    }
}

impl<DB: Database> SqlStore<DB> {
    /// The pool.
    pub fn pool(&self) -> &Pool<DB> {
        &self.pool
    }

    /// Stops the purge job (the pool stays open for the application).
    pub async fn shutdown(&self) {
        if let Some(purger) = &self.purger {
            purger.stop().await;
        }
    }
}

impl<DB: SqlDatabase> SqlStore<DB> {
    async fn admin_inspect(
        &self,
        key: &RecordKey,
    ) -> Result<crate::store::admin::RecordState, StoreError> {
        use crate::store::admin::RecordState;
        let columns = super::table::KeyColumns::of(key);
        let row = DB::admin_inspect(&self.pool, &self.table, &columns)
            .await
            .map_err(|e| StoreError::backend(StoreOperation::Admin, e))?;
        let Some(row) = row else {
            return Ok(RecordState::Absent);
        };
        let ttl_left = Duration::from_millis(row.left_ms.max(0) as u64);
        match (row.status.as_str(), row.owner) {
            (super::decide::CONSUMED, _) => Ok(RecordState::Consumed { ttl_left }),
            (super::decide::CONSUMING, Some(owner)) => Ok(RecordState::Consuming {
                owner: owner as u64,
                ttl_left,
            }),
            _ => Err(StoreError::CorruptRecord {
                operation: StoreOperation::Admin,
                detail: "a row neither CONSUMING with an owner nor CONSUMED".to_owned(),
            }),
        }
    }

    async fn admin_forget(&self, key: &RecordKey) -> Result<bool, StoreError> {
        let columns = super::table::KeyColumns::of(key);
        DB::admin_forget(&self.pool, &self.table, &columns)
            .await
            .map(|deleted| deleted > 0)
            .map_err(|e| StoreError::backend(StoreOperation::Admin, e))
    }

    async fn admin_counts(
        &self,
        scope: &RecordScope<'_>,
    ) -> Result<crate::store::admin::RecordCounts, StoreError> {
        // The columns hold the parts as the record key writes them.
        let probe = RecordKey::new(KeyParts {
            prefix: "p",
            namespace: scope.namespace,
            topic: scope.topic.unwrap_or(""),
            tag: scope.tag,
            key: "k",
        });
        let columns = super::table::KeyColumns::of(&probe);
        let topic_and_tag = scope
            .topic
            .map(|_| (columns.topic.as_slice(), columns.tag.as_slice()));
        let rows = DB::admin_counts(
            &self.pool,
            &self.table,
            &columns.application_name,
            topic_and_tag,
        )
        .await
        .map_err(|e| StoreError::backend(StoreOperation::Admin, e))?;
        Ok(crate::store::admin::RecordCounts {
            consuming: rows.consuming.max(0) as u64,
            consumed: rows.consumed.max(0) as u64,
            expired: rows.expired.max(0) as u64,
            memory_bytes: None,
            oversized_shards: None,
        })
    }

    async fn purge_all(&self, batch: u32) -> Result<u64, StoreError> {
        let delete = || DB::purge(&self.pool, &self.table, batch);
        super::purge_once(&delete, batch)
            .await
            .map_err(|e| StoreError::backend(StoreOperation::Purge, e))
    }

    /// Runs one call: lock and read the keys' rows, decide, write; a deadlock is tried again.
    async fn transact<T>(
        &self,
        operation: StoreOperation,
        keys: &[RecordKey],
        decide: impl Fn(&mut RowBatch) -> Vec<T>,
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
                    let failure = DB::classify(&err);
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
        decide: &impl Fn(&mut RowBatch) -> Vec<T>,
    ) -> Result<Vec<T>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let found = DB::read(&mut tx, &self.table, columns).await?;
        let mut batch = RowBatch::new(found, columns.first.clone());
        let answers = decide(&mut batch);
        let writes: Vec<_> = batch.writes().collect();
        DB::write(&mut tx, &self.table, columns, &writes).await?;
        tx.commit().await?;
        Ok(answers)
    }
}

impl<DB: SqlDatabase> SqlStore<DB> {
    /// A builder for a store with its own pool on `url` (`mysql://user:password@host:port/database`
    /// or `postgres://user:password@host:port/database`).
    pub fn builder(url: impl Into<String>) -> SqlStoreBuilder<DB> {
        SqlStoreBuilder::new(Source::Url(url.into()))
    }

    /// A builder for a store on an existing pool (shared with the application).
    pub fn from_pool(pool: Pool<DB>) -> SqlStoreBuilder<DB> {
        SqlStoreBuilder::new(Source::Pool(pool))
    }

    /// Creates the table unless it exists (the shipped migration, for this store's table
    /// name), and alters an existing one that lacks what the store needs (a table the Java
    /// library created; see [`StoreError::TableUnfit`]).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        super::schema::migrate(&self.pool, &self.table).await
    }
}

impl<DB: SqlDatabase> RecordAdmin for SqlStore<DB> {
    fn inspect<'a>(&'a self, key: &'a RecordKey) -> BoxFuture<'a, Result<RecordState, StoreError>> {
        Box::pin(self.admin_inspect(key))
    }

    fn forget<'a>(&'a self, key: &'a RecordKey) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(self.admin_forget(key))
    }

    fn counts<'a>(
        &'a self,
        scope: &'a RecordScope<'a>,
    ) -> BoxFuture<'a, Result<RecordCounts, StoreError>> {
        Box::pin(self.admin_counts(scope))
    }

    /// Deletes every expired row now, in batches of the purge job's size.
    fn purge_expired(&self) -> BoxFuture<'_, Result<Option<u64>, StoreError>> {
        Box::pin(async move { self.purge_all(self.purge_batch).await.map(Some) })
    }
}

impl<DB: SqlDatabase> DedupStore for SqlStore<DB> {
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
        DB::STORE_KIND
    }
}
