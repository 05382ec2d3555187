//! The transactional inbox: exactly-once effects for handlers whose effects live in the
//! database (features `mysql`, `postgres`).
//!
//! For each message the listener begins a database transaction, inserts the message's dedup
//! record in it (a unique insert: the claim), runs the [`InboxHandler`] with that open
//! transaction, and commits once. The record and the handler's writes commit together or not
//! at all:
//!
//! | what happens | effect | record | message |
//! |---|---|---|---|
//! | handler `Ok`, commit succeeds | written | written | acked |
//! | handler `Err` or panic | rolled back | rolled back | retried |
//! | the consumer dies anywhere before the commit | rolled back | rolled back | redelivered, runs |
//! | the commit's answer is lost | either both or neither | | retried: runs, or is a duplicate |
//! | a committed record exists | not run | | acked |
//! | the transaction is a deadlock victim (claim, handler or commit) | rolled back | rolled back | run again at once (5 times in all, as the store's transactions) |
//! | another consumer's transaction holds the record | not run | | waits at most the lock wait, then deferred |
//!
//! There is no CONSUMING state and no renewal: the open transaction's row lock is the claim,
//! and a crashed consumer's transaction is rolled back by the database. A long handler keeps
//! its transaction (and its locks) open for as long as it runs.
//!
//! ```no_run
//! # async fn run(pool: sqlx::MySqlPool) -> Result<(), Box<dyn std::error::Error>> {
//! use rocketmq_dedup::inbox::InboxHandler;
//! use rocketmq_dedup::sql::mysql::MySqlInbox;
//! use rocketmq_dedup::{DedupConcurrentListener, HandlerError};
//! use rocketmq_model::common::message::message_ext::MessageExt;
//! use sqlx::{MySql, Transaction};
//!
//! struct Payments;
//!
//! impl InboxHandler<MySql> for Payments {
//!     async fn handle(&self, msg: &MessageExt, tx: &mut Transaction<'static, MySql>) -> Result<(), HandlerError> {
//!         sqlx::query("INSERT INTO payments (body) VALUES (?)")
//!             .bind(msg.body_slice())
//!             .execute(&mut **tx)
//!             .await?;
//!         Ok(())
//!     }
//! }
//!
//! let inbox = MySqlInbox::builder(pool).connect().await?;
//! let listener = DedupConcurrentListener::inbox(Payments, inbox)
//!     .namespace("payments")
//!     .build()?;
//! # Ok(()) }
//! ```

mod processor;

use std::future::Future;
use std::time::Duration;

use futures::future::BoxFuture;
use rocketmq_model::common::message::message_ext::MessageExt;

use crate::error::{HandlerError, KeyError, StoreError};
use crate::key::{self, DedupKey};
use crate::record_key::RecordKey;
use crate::store::OwnerToken;

/// A handler whose effects are writes in the inbox's database, made in the transaction that
/// also records the message.
///
/// Do not commit or roll back the transaction: the listener does, once, after the handler
/// returns. Effects outside the transaction (an HTTP call, a message sent) are not covered:
/// they may happen again when a transaction is rolled back after them.
pub trait InboxHandler<DB: sqlx::Database>: Send + Sync + 'static {
    /// Processes one message within `tx`.
    fn handle(
        &self,
        msg: &MessageExt,
        tx: &mut sqlx::Transaction<'static, DB>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// The message's dedup key. Default: the client unique id (`UNIQ_KEY`), else the message
    /// id; see [`KeyStrategy`](crate::KeyStrategy).
    fn dedup_key(&self, msg: &MessageExt) -> Result<DedupKey, KeyError> {
        key::unique_id(msg)
    }
}

/// A shared handler handles as the handler it shares.
impl<DB: sqlx::Database, H: InboxHandler<DB>> InboxHandler<DB> for std::sync::Arc<H> {
    fn handle(
        &self,
        msg: &MessageExt,
        tx: &mut sqlx::Transaction<'static, DB>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        (**self).handle(msg, tx)
    }

    fn dedup_key(&self, msg: &MessageExt) -> Result<DedupKey, KeyError> {
        (**self).dedup_key(msg)
    }
}

/// What a claim found, in an inbox transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboxClaim {
    /// The record is inserted in the transaction: the message is this transaction's.
    Claimed,
    /// A committed record says the message was processed.
    Consumed,
    /// Another transaction holds the record (past the lock wait), or a lease store's claim
    /// does.
    InFlight,
}

/// A database with a dedup table, where a message's record is claimed inside a transaction
/// ([`MySqlInbox`](crate::sql::mysql::MySqlInbox),
/// [`PostgresInbox`](crate::sql::postgres::PostgresInbox)).
pub trait Inbox: Send + Sync + 'static {
    /// The database.
    type Database: sqlx::Database;

    /// Begins a transaction for one message.
    fn begin(
        &self,
    ) -> BoxFuture<'_, Result<sqlx::Transaction<'static, Self::Database>, StoreError>>;

    /// Inserts `key`'s record, CONSUMED for `ttl`, in `tx` (taking over an expired one),
    /// waiting at most the lock wait for another transaction that holds it.
    /// [`StoreError::Deadlock`] means: roll back and try the message again.
    fn claim<'a>(
        &'a self,
        tx: &'a mut sqlx::Transaction<'static, Self::Database>,
        key: &'a RecordKey,
        token: OwnerToken,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<InboxClaim, StoreError>>;

    /// Commits `tx`; [`StoreError::Deadlock`] as for [`claim`](Inbox::claim).
    fn commit(
        &self,
        tx: sqlx::Transaction<'static, Self::Database>,
    ) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Whether `err` (from the handler's own statements) made the transaction a deadlock
    /// victim: the message is then run again at once.
    fn is_deadlock(&self, err: &sqlx::Error) -> bool;

    /// A short name for logs and metrics.
    fn kind(&self) -> &'static str;
}

/// A listener whose handler runs in an [`Inbox`] transaction; see the module docs.
pub struct InboxBacked<H, I> {
    pub(crate) handler: H,
    pub(crate) inbox: I,
}

impl<H, I: Inbox> std::fmt::Debug for InboxBacked<H, I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboxBacked")
            .field("inbox", &self.inbox.kind())
            .finish_non_exhaustive()
    }
}
