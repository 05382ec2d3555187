//! [`SqlInbox`]: the transactional inbox ([`crate::inbox`]) on MySQL / MariaDB
//! ([`MySqlInbox`](crate::sql::mysql::MySqlInbox)) or PostgreSQL
//! ([`PostgresInbox`](crate::sql::postgres::PostgresInbox)).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::{Database, Pool, Transaction};

use super::database::InboxStatements;
use super::database::SqlDatabase;
use super::table::{Table, DEFAULT_TABLE};
use super::{store_error, Failure, PurgeOptions, Purger};
use crate::error::{StoreError, StoreOperation};
use crate::inbox::{Inbox, InboxClaim};
use crate::record_key::RecordKey;
use crate::store::OwnerToken;

/// The transactional inbox on an application's pool (its handler writes there); see
/// [`crate::inbox`].
///
/// The claim inserts the record, CONSUMED, in the message's transaction; a record another
/// transaction holds is waited for at most the lock wait, then the message is deferred. An
/// expired record is taken over. Clones share the pool and the purge job.
pub struct SqlInbox<DB: Database> {
    pool: Pool<DB>,
    table: Table,
    statements: Arc<InboxStatements>,
    purger: Option<Arc<Purger>>,
}

impl<DB: Database> Clone for SqlInbox<DB> {
    fn clone(&self) -> Self {
        SqlInbox {
            pool: self.pool.clone(),
            table: self.table.clone(),
            statements: self.statements.clone(),
            purger: self.purger.clone(),
        }
    }
}

impl<DB: Database> fmt::Debug for SqlInbox<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlInbox")
            .field("database", &DB::NAME)
            .field("table", &self.table.name())
            .finish_non_exhaustive()
    }
}

/// Configures a [`SqlInbox`].
pub struct SqlInboxBuilder<DB: Database> {
    pool: Pool<DB>,
    table: String,
    lock_wait: Duration,
    purge: PurgeOptions,
    migrate: bool,
}

impl<DB: Database> fmt::Debug for SqlInboxBuilder<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlInboxBuilder")
            .field("database", &DB::NAME)
            .field("table", &self.table)
            .field("lock_wait", &self.lock_wait)
            .field("purge", &self.purge)
            .finish_non_exhaustive()
    }
}

impl<DB: Database> SqlInboxBuilder<DB> {
    /// Default wait for another transaction that holds a message's record.
    pub(crate) const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(1);

    fn new(pool: Pool<DB>) -> Self {
        SqlInboxBuilder {
            pool,
            table: DEFAULT_TABLE.to_owned(),
            lock_wait: Self::DEFAULT_LOCK_WAIT,
            purge: PurgeOptions::default(),
            migrate: false,
        }
    }

    /// The table (default `t_rocketmq_dedup`, the Java library's).
    pub fn table(mut self, name: impl Into<String>) -> Self {
        self.table = name.into();
        self
    }

    /// How long a claim waits for another transaction that holds the record before the
    /// message is deferred (default 1 s; MySQL counts whole seconds,
    /// at least one).
    pub fn lock_wait(mut self, wait: Duration) -> Self {
        self.lock_wait = wait;
        self
    }

    /// How expired records are purged (default [`PurgeOptions::default`]).
    pub fn purge(mut self, options: PurgeOptions) -> Self {
        self.purge = options;
        self
    }

    /// Whether [`connect`](Self::connect) creates the table, or alters one that does not
    /// fit, as [`SqlInbox::migrate`] does (default false: a table that exists and does not
    /// fit is refused with [`StoreError::TableUnfit`]).
    pub fn migrate(mut self, yes: bool) -> Self {
        self.migrate = yes;
        self
    }
}

impl<DB: SqlDatabase> SqlInboxBuilder<DB> {
    /// Prepares the inbox's statements for this server and starts the purge job.
    pub async fn connect(self) -> Result<SqlInbox<DB>, StoreError> {
        let table =
            Table::new(&self.table).map_err(|e| StoreError::backend(StoreOperation::Connect, e))?;
        match self.migrate {
            true => super::schema::migrate(&self.pool, &table).await?,
            false => super::schema::check(&self.pool, &table).await?,
        }
        let statements = DB::prepare_inbox(&self.pool, &table, self.lock_wait)
            .await
            .map_err(|e| StoreError::backend(StoreOperation::Connect, e))?;
        let purger = DB::start_purger(&self.pool, &table, self.purge).map(Arc::new);
        Ok(SqlInbox {
            pool: self.pool,
            table,
            statements: Arc::new(statements),
            purger,
        })
    }
}

impl<DB: Database> SqlInbox<DB> {
    /// The pool.
    pub fn pool(&self) -> &Pool<DB> {
        &self.pool
    }

    /// Stops the purge job.
    pub async fn shutdown(&self) {
        if let Some(purger) = &self.purger {
            purger.stop().await;
        }
    }
}

impl<DB: SqlDatabase> SqlInbox<DB> {
    /// A builder for an inbox on `pool`.
    pub fn builder(pool: Pool<DB>) -> SqlInboxBuilder<DB> {
        SqlInboxBuilder::new(pool)
    }

    /// Creates the table unless it exists (the shipped migration).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        super::schema::migrate(&self.pool, &self.table).await
    }
}

fn error<DB: SqlDatabase>(operation: StoreOperation, err: sqlx::Error) -> StoreError {
    store_error(operation, DB::classify(&err), err)
}

impl<DB: SqlDatabase> Inbox for SqlInbox<DB> {
    type Database = DB;

    fn begin(&self) -> BoxFuture<'_, Result<Transaction<'static, DB>, StoreError>> {
        Box::pin(async move {
            self.pool
                .begin()
                .await
                .map_err(|e| error::<DB>(StoreOperation::Begin, e))
        })
    }

    fn claim<'a>(
        &'a self,
        tx: &'a mut Transaction<'static, DB>,
        key: &'a RecordKey,
        token: OwnerToken,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<InboxClaim, StoreError>> {
        Box::pin(async move {
            DB::inbox_claim(&self.statements, tx, key, token, ttl)
                .await
                .map_err(|e| error::<DB>(StoreOperation::Claim, e))
        })
    }

    fn commit(&self, tx: Transaction<'static, DB>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            tx.commit()
                .await
                .map_err(|e| error::<DB>(StoreOperation::Commit, e))
        })
    }

    fn is_deadlock(&self, err: &sqlx::Error) -> bool {
        DB::classify(err) == Failure::Deadlock
    }

    fn kind(&self) -> &'static str {
        DB::INBOX_KIND
    }
}
