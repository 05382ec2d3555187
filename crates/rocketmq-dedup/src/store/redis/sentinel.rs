//! Redis Sentinel: a connection to the master the sentinels name, dropped when that master is
//! lost (connection error, timeout, or a `READONLY` answer from a demoted master) and made
//! again to whichever master the sentinels name then.

use std::sync::{Arc, RwLock};

use redis::aio::MultiplexedConnection;
use redis::sentinel::SentinelClient;
use redis::{AsyncConnectionConfig, Cmd, ErrorKind, RedisError, RedisResult, ServerErrorKind};

use super::pipeline::{one_pipeline, KeyedCommand, Sent};

/// The current master's connection, and the sentinels that name the next one.
#[derive(Clone)]
pub(super) struct SentinelMaster {
    shared: Arc<SentinelState>,
}

struct SentinelState {
    /// Asked (one caller at a time) when there is no current master.
    sentinels: tokio::sync::Mutex<SentinelClient>,
    current: RwLock<Option<MultiplexedConnection>>,
    config: AsyncConnectionConfig,
    db: i64,
}

impl SentinelMaster {
    /// Asks the sentinels for the master and connects to it.
    pub(super) async fn connect(
        sentinels: SentinelClient,
        config: AsyncConnectionConfig,
        db: i64,
    ) -> RedisResult<Self> {
        let master = SentinelMaster {
            shared: Arc::new(SentinelState {
                sentinels: tokio::sync::Mutex::new(sentinels),
                current: RwLock::new(None),
                config,
                db,
            }),
        };
        master.connection().await?;
        Ok(master)
    }

    /// The database number.
    pub(super) fn db(&self) -> i64 {
        self.shared.db
    }

    /// The current master's connection, asking the sentinels when there is none.
    pub(super) async fn connection(&self) -> RedisResult<MultiplexedConnection> {
        if let Some(conn) = self.current() {
            return Ok(conn);
        }
        let mut sentinels = self.shared.sentinels.lock().await;
        // Another caller may have found the master while this one waited for the lock.
        if let Some(conn) = self.current() {
            return Ok(conn);
        }
        let conn = sentinels
            .get_async_connection_with_config(&self.shared.config)
            .await?;
        tracing::info!("connected to the Redis master named by Sentinel");
        *self
            .shared
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(conn.clone());
        Ok(conn)
    }

    fn current(&self) -> Option<MultiplexedConnection> {
        self.shared
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Forgets the master after an error that means it may be gone or demoted.
    pub(super) fn observe(&self, error: Option<&RedisError>) {
        if error.is_some_and(master_lost) {
            tracing::warn!(error = %error.map(ToString::to_string).unwrap_or_default(), "lost the Redis master; asking Sentinel again on the next call");
            *self
                .shared
                .current
                .write()
                .unwrap_or_else(|e| e.into_inner()) = None;
        }
    }

    /// Sends the batch to the master as one pipeline. A `READONLY` answer (the server was
    /// demoted: none of the writes ran) fails the whole batch and drops the connection.
    pub(super) async fn send(
        &self,
        commands: Vec<KeyedCommand<'_>>,
        wait: Option<&Cmd>,
    ) -> Result<Sent, RedisError> {
        let mut conn = self.connection().await?;
        let result = one_pipeline(&mut conn, commands, wait).await;
        self.observe(result.as_ref().err());
        let sent = result?;
        let demoted = sent
            .answers
            .iter()
            .find_map(|a| a.as_ref().err().filter(|e| master_lost(e)).cloned());
        if let Some(e) = demoted {
            self.observe(Some(&e));
            return Err(e);
        }
        Ok(sent)
    }
}

fn master_lost(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_timeout()
        || e.is_unrecoverable_error()
        || matches!(
            e.kind(),
            ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown)
        )
}
