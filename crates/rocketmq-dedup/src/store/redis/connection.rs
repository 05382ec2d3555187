//! One connection type over the three deployments: it sends a batch of single-key commands
//! ([`super::pipeline`]) and returns one answer per command, however many servers that takes.

use std::sync::Arc;

use futures::future::BoxFuture;
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{Cmd, RedisError, RedisResult, Value};

use super::blocking::BlockingLane;
use super::cluster::ClusterNodes;
use super::pipeline::{one_pipeline, scan_to_end, KeyedCommand, Sent};
use super::sentinel::SentinelMaster;

/// Which connection a call takes on one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lane {
    /// The calling thread's blocking connection, where it may block
    /// ([`BlockingLane::usable`]): the calls on the ack path (claims, commits, releases).
    Blocking,
    /// The multiplexed connection: calls beside a running handler (renewals) and from tools.
    Multiplexed,
}

/// A connection to the deployment a store URL names. Cheap to clone; it implements redis-rs's
/// [`ConnectionLike`], so tools can send their own commands with `query_async` (on a Cluster,
/// routed by key like any redis-rs cluster command; through Sentinel, to the current master).
#[derive(Clone)]
pub(crate) struct RedisConnection {
    inner: Inner,
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConnection")
            .field("deployment", &self.deployment())
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
enum Inner {
    /// One server: the multiplexed connection, and the blocking lane (if any).
    Standalone(ConnectionManager, Option<Arc<BlockingLane>>),
    Cluster(ClusterNodes),
    Sentinel(SentinelMaster),
}

impl RedisConnection {
    /// One server; with `blocking`, calls that may block use its connections.
    pub(super) fn standalone(conn: ConnectionManager, blocking: Option<BlockingLane>) -> Self {
        RedisConnection {
            inner: Inner::Standalone(conn, blocking.map(Arc::new)),
        }
    }

    pub(super) fn cluster(nodes: ClusterNodes) -> Self {
        RedisConnection {
            inner: Inner::Cluster(nodes),
        }
    }

    pub(super) fn sentinel(master: SentinelMaster) -> Self {
        RedisConnection {
            inner: Inner::Sentinel(master),
        }
    }

    /// One server's blocking lane, if it has one.
    pub(super) fn blocking_lane(&self) -> Option<&Arc<BlockingLane>> {
        match &self.inner {
            Inner::Standalone(_, lane) => lane.as_ref(),
            _ => None,
        }
    }

    /// The deployment's short name: `standalone`, `cluster` or `sentinel`.
    pub(crate) fn deployment(&self) -> &'static str {
        match self.inner {
            Inner::Standalone(..) => "standalone",
            Inner::Cluster(_) => "cluster",
            Inner::Sentinel(_) => "sentinel",
        }
    }

    /// Sends `commands` (and `wait`, a `WAIT n timeout`, after them on every server touched)
    /// as one pipeline per server, on one server through `lane`.
    pub(super) async fn send(
        &self,
        commands: Vec<KeyedCommand<'_>>,
        wait: Option<&Cmd>,
        lane: Lane,
    ) -> Result<Sent, RedisError> {
        match &self.inner {
            Inner::Standalone(conn, blocking) => {
                let commands = match blocking {
                    Some(pool) if lane == Lane::Blocking && pool.usable() => {
                        match pool.send_or_return(commands, wait) {
                            Ok(sent) => return sent,
                            Err(commands) => commands,
                        }
                    }
                    _ => commands,
                };
                one_pipeline(&mut conn.clone(), commands, wait).await
            }
            Inner::Cluster(nodes) => nodes.send(commands, wait).await,
            Inner::Sentinel(master) => master.send(commands, wait).await,
        }
    }

    /// Sends one command to every server that holds records (`SCRIPT LOAD`, `INFO`): on a
    /// Cluster to every node, elsewhere to the one server.
    pub(super) async fn to_every_node(&self, cmd: &Cmd) -> RedisResult<Value> {
        match &self.inner {
            Inner::Standalone(conn, ..) => conn.clone().req_packed_command(cmd).await,
            Inner::Cluster(nodes) => nodes.to_every_node(cmd).await,
            Inner::Sentinel(master) => master.connection().await?.req_packed_command(cmd).await,
        }
        .and_then(Value::extract_error)
    }
}

impl RedisConnection {
    /// Runs `cmd` on every server that holds records: every master of a Cluster, else the one
    /// server; one answer each.
    pub(super) async fn on_each_master(&self, cmd: &Cmd) -> RedisResult<Vec<Value>> {
        match &self.inner {
            Inner::Cluster(nodes) => nodes.on_each_master(cmd).await,
            _ => Ok(vec![self.to_every_node(cmd).await?]),
        }
    }

    /// The keys matching `pattern`, from `SCAN` on every master (all of them at once: for an
    /// operator's tool, not the consume path).
    pub(super) async fn scan(&self, pattern: &str) -> RedisResult<Vec<String>> {
        match &self.inner {
            Inner::Cluster(nodes) => nodes.scan_each_master(pattern).await,
            _ => {
                scan_to_end(pattern, |cmd| {
                    let mut conn = self.clone();
                    async move { conn.req_packed_command(&cmd).await }
                })
                .await
            }
        }
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> BoxFuture<'a, RedisResult<Value>> {
        match &mut self.inner {
            Inner::Standalone(conn, ..) => conn.req_packed_command(cmd),
            Inner::Cluster(nodes) => {
                let mut conn = nodes.connection();
                Box::pin(async move { conn.req_packed_command(cmd).await })
            }
            Inner::Sentinel(master) => Box::pin(async move {
                let result = master.connection().await?.req_packed_command(cmd).await;
                master.observe(result.as_ref().err());
                result
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipe: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> BoxFuture<'a, RedisResult<Vec<Value>>> {
        match &mut self.inner {
            Inner::Standalone(conn, ..) => conn.req_packed_commands(pipe, offset, count),
            Inner::Cluster(nodes) => {
                let mut conn = nodes.connection();
                Box::pin(async move { conn.req_packed_commands(pipe, offset, count).await })
            }
            Inner::Sentinel(master) => Box::pin(async move {
                let result = master
                    .connection()
                    .await?
                    .req_packed_commands(pipe, offset, count)
                    .await;
                master.observe(result.as_ref().err());
                result
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.inner {
            Inner::Standalone(conn, ..) => conn.get_db(),
            Inner::Cluster(_) => 0,
            Inner::Sentinel(master) => master.db(),
        }
    }
}
