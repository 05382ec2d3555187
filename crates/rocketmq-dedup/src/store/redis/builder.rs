//! Configuration of a [`RedisStore`], and the connection to the deployment its URL names.

use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
use redis::{AsyncConnectionConfig, Cmd, ErrorKind, RedisError};

use super::blocking::BlockingLane;
use super::cluster::ClusterNodes;
use super::connection::RedisConnection;
use super::layout::ShardLayout;
use super::layout_cache::{LayoutCache, ListpackLimits};
use super::scripts::{scripts, CLAIM, COMMIT, RELEASE, RENEW};
use super::sentinel::SentinelMaster;
use super::url::{Deployment, SentinelTarget};
use super::{server_major_version, RedisStore};
use crate::error::{StoreError, StoreOperation};

/// Configures and connects a [`RedisStore`].
///
/// ```no_run
/// # async fn run() -> Result<(), rocketmq_dedup::StoreError> {
/// use std::time::Duration;
/// use rocketmq_dedup::store::RedisStore;
///
/// let store = RedisStore::builder("redis://:password@127.0.0.1:6379/0")
///     .response_timeout(Duration::from_millis(500))
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStoreBuilder {
    url: String,
    /// PEM of the CA that signed the server's certificate, when not a system-trusted one.
    tls_root_pem: Option<Vec<u8>>,
    /// PEM certificate and key for mutual TLS.
    tls_client_pem: Option<(Vec<u8>, Vec<u8>)>,
    connect_timeout: Duration,
    response_timeout: Duration,
    min_backoff: Duration,
    max_backoff: Duration,
    script_claims: bool,
    wait_for_replicas: Option<WaitForReplicas>,
    consume_thread_connections: usize,
    commit_linger: Duration,
    record_ttl: Duration,
    expected_rate: u64,
}

impl RedisStoreBuilder {
    /// Default timeout of one connection attempt.
    pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
    /// Default time to wait for an answer.
    pub(crate) const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
    /// Default first reconnect delay.
    pub(crate) const DEFAULT_MIN_BACKOFF: Duration = Duration::from_millis(50);
    /// Default longest reconnect delay.
    pub(crate) const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(2);
    /// Default bound of [`Self::consume_thread_connections`] (the client's default consume
    /// threads are 20; a thread that finds them all in use goes the multiplexed way).
    pub(crate) const DEFAULT_CONSUME_THREAD_CONNECTIONS: usize = 16;
    /// Default of [`Self::commit_linger`]: long enough that a consume thread whose handler
    /// takes a millisecond or two carries its commit with its next claim, and that the
    /// sweeper wakes at most 200 times a second while commits come.
    pub(crate) const DEFAULT_COMMIT_LINGER: Duration = Duration::from_millis(5);
    /// Default of [`Self::record_ttl`]: the listener's default record TTL.
    pub(crate) const DEFAULT_RECORD_TTL: Duration = crate::store::DEFAULT_RECORD_TTL;
    /// Default of [`Self::expected_rate`], in records committed per second and group.
    pub(crate) const DEFAULT_EXPECTED_RATE: u64 = 1_000;

    /// A builder for `url`:
    /// - one server: `redis://[:password@]host:port[/db]`, `redis://user:password@…` (ACL),
    ///   `rediss://…` for TLS (feature `tls`, on by default), or `redis+unix:///path`;
    /// - Redis Cluster: `redis+cluster://[user:password@]host1:port1,host2:port2,…` (seed
    ///   nodes; `rediss+cluster://` for TLS);
    /// - Redis Sentinel: `redis+sentinel://[user:password@]sentinel1:port1,…/master-name[/db]`
    ///   (the credentials are the data nodes'; `rediss+sentinel://` for TLS to all).
    pub fn new(url: impl Into<String>) -> Self {
        RedisStoreBuilder {
            url: url.into(),
            tls_root_pem: None,
            tls_client_pem: None,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            response_timeout: Self::DEFAULT_RESPONSE_TIMEOUT,
            min_backoff: Self::DEFAULT_MIN_BACKOFF,
            max_backoff: Self::DEFAULT_MAX_BACKOFF,
            script_claims: false,
            wait_for_replicas: None,
            consume_thread_connections: Self::DEFAULT_CONSUME_THREAD_CONNECTIONS,
            commit_linger: Self::DEFAULT_COMMIT_LINGER,
            record_ttl: Self::DEFAULT_RECORD_TTL,
            expected_rate: Self::DEFAULT_EXPECTED_RATE,
        }
    }

    /// Timeout of one connection attempt (default 2 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Time to wait for an answer before a call fails (default 2 s).
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// Claims with a Lua script even on Redis 7.0 and later (for proxies that reject
    /// `SET … NX GET`). Servers before 7.0 always get the script. It reads and writes at once
    /// (no claim is left on a CONSUMED record, see [`RedisStore`]), and
    /// costs the server a script call a message (BENCHMARKS.md measures it).
    pub fn script_claims(mut self, yes: bool) -> Self {
        self.script_claims = yes;
        self
    }

    /// Reconnect delays: exponential from `min` up to `max`.
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.min_backoff = min;
        self.max_backoff = max.max(min);
        self
    }

    /// Trusts the CA in `pem` (instead of the system's roots) for `rediss://` (feature `tls`).
    #[cfg(feature = "tls")]
    pub fn tls_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_root_pem = Some(pem.into());
        self
    }

    /// Presents this certificate and key (PEM) to the server: mutual TLS (feature `tls`).
    #[cfg(feature = "tls")]
    pub fn tls_client_certificate(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.tls_client_pem = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// After every commit, waits until `replicas` replicas acknowledged it (`WAIT replicas
    /// timeout`, in the same pipeline, on every server the commit touched), so that a failover
    /// that promotes a replica cannot lose a CONSUMED record the listener already acted on.
    ///
    /// A commit that fewer replicas acknowledged within `timeout` fails like any commit (the
    /// listener retries it; the record is CONSUMED on the master meanwhile). Cost: the commit
    /// waits for the replication round trip (about one extra network hop to the replica), and
    /// while no replica can acknowledge, commits keep failing: ask for fewer replicas than you
    /// run. Claims are not waited for: a claim lost in a failover lets a copy run
    /// only while the first delivery is still in flight (see docs/redis.md, "Deployments").
    pub fn wait_for_replicas(mut self, replicas: u32, timeout: Duration) -> Self {
        self.wait_for_replicas = (replicas > 0).then_some(WaitForReplicas { replicas, timeout });
        self
    }

    /// On one server, how many threads at most get a blocking connection of their own
    /// (default 16): claims, commits and releases
    /// made where the thread may block (a listener's consume thread) write and read the socket
    /// themselves, with no hand-off to a runtime task and back (the benchmark's `redis-mux`
    /// line is the same store with 0). A thread's connection is opened at its first call;
    /// calls from threads past the bound, and for a second after a connection failed, go the
    /// multiplexed way. `0`: every call goes the multiplexed way. Cluster and Sentinel
    /// connections always do.
    pub fn consume_thread_connections(mut self, max: usize) -> Self {
        self.consume_thread_connections = max;
        self
    }

    /// How long a detached commit (one a listener hands over after acking,
    /// [`ack_before_commit`](crate::DedupListenerBuilder::ack_before_commit) and
    /// [`DedupStore::commit_detached`]) may wait for its thread's next pipeline, to go in front
    /// of its commands instead of in a round trip of its own (default
    /// 5 ms). Under load that is the claim of the thread's next
    /// message, a round trip later: at batch size 1 a message then costs one round trip, not
    /// two, and its commit no task and no thread hand-off. A commit whose thread went idle is
    /// sent after the linger by the store's sweeper task, which runs only while commits wait.
    /// The price: a record may stay CONSUMING up to this much longer after its message was
    /// acked, the window in which a crash lets a copy run again (BENCHMARKS.md measures it in
    /// the chaos run).
    ///
    /// Only detached commits wait (one awaited through [`DedupStore::commit`], as on the ack
    /// path with `ack_before_commit(false)`, leaves at once), and only on one server, from a
    /// thread with a blocking connection ([`Self::consume_thread_connections`]): elsewhere, and
    /// with [`Self::wait_for_replicas`] (each commit needs its `WAIT`), the listener awaits
    /// each commit on a task. `Duration::ZERO`: every commit sends its own pipeline.
    ///
    /// [`DedupStore::commit_detached`]: crate::DedupStore::commit_detached
    /// [`DedupStore::commit`]: crate::DedupStore::commit
    pub fn commit_linger(mut self, linger: Duration) -> Self {
        self.commit_linger = linger;
        self
    }

    /// The record TTL of the listeners that use this store (default
    /// 24 h, the listener's default): a new group's time unit is an
    /// eighth of it, so its records are kept their TTL and at most an eighth more. A listener
    /// that keeps records longer still has them kept as long, up to 7.5 times this; one that
    /// keeps them less than a quarter of it has each in a key of its own (more memory).
    pub fn record_ttl(mut self, ttl: Duration) -> Self {
        self.record_ttl = ttl;
        self
    }

    /// The peak rate, in records committed per second, of the busiest record group (the
    /// records of one namespace, topic and tag: a record key up to its dedup key) that uses
    /// this store (default 1 000). It sizes
    /// a new group's shards: shards = rate × (record TTL + two units) / 256, rounded up to a
    /// power of two, so that a records hash holds about 256 records and stays in Redis's compact listpack
    /// encoding (up to `hash-max-listpack-entries`, 512 by default) at twice the rate.
    ///
    /// Above it the hashes convert to hashtables: still correct, about four times the bytes
    /// per record. Far below it, most hashes hold few records, and each hash's own keyspace
    /// entry is shared by fewer: at a hundredth of the rate, over half the bytes of one key
    /// per record (BENCHMARKS.md, "Records at scale", measures both). A group's layout is fixed by the first store that uses it (see
    /// [`RedisStore`]); to change it, drop the group's records and its
    /// `{layout}` key together.
    pub fn expected_rate(mut self, records_per_second: u64) -> Self {
        self.expected_rate = records_per_second;
        self
    }

    #[cfg(feature = "tls")]
    fn certificates(&self) -> Option<redis::TlsCertificates> {
        (self.tls_root_pem.is_some() || self.tls_client_pem.is_some()).then(|| {
            redis::TlsCertificates {
                client_tls: self
                    .tls_client_pem
                    .clone()
                    .map(|(client_cert, client_key)| redis::ClientTlsConfig {
                        client_cert,
                        client_key,
                    }),
                root_cert: self.tls_root_pem.clone(),
            }
        })
    }

    fn standalone_client(&self, url: &str) -> Result<redis::Client, RedisError> {
        #[cfg(feature = "tls")]
        if let Some(certificates) = self.certificates() {
            return redis::Client::build_with_tls(url, certificates);
        }
        redis::Client::open(url)
    }

    fn connection_config(&self) -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout))
    }

    /// Connects; `round_trips` is the store's counter (its blocking lane's sweeper counts
    /// into it).
    async fn open(&self, round_trips: &Arc<AtomicU64>) -> Result<RedisConnection, StoreError> {
        let deployment = Deployment::parse(&self.url).map_err(|reason| StoreError::BadUrl {
            reason: format!("Redis store URL: {reason}"),
        })?;
        // Each deployment's opening is boxed: redis-rs's connection futures nest deep enough
        // that a caller's crate awaiting all three inline meets rustc's query depth limit
        // ("queries overflow the depth limit!", seen building the CLI from clean).
        match deployment {
            Deployment::Standalone(url) => Box::pin(self.open_standalone(&url, round_trips)).await,
            Deployment::Cluster { nodes } => Box::pin(self.open_cluster(nodes)).await,
            Deployment::Sentinel(target) => Box::pin(self.open_sentinel(target)).await,
        }
    }

    /// One server: a connection manager, and the consume threads' blocking lane.
    async fn open_standalone(
        &self,
        url: &str,
        round_trips: &Arc<AtomicU64>,
    ) -> Result<RedisConnection, StoreError> {
        let client = self.standalone_client(url).map_err(connect_error)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout))
            .set_min_delay(self.min_backoff)
            .set_max_delay(self.max_backoff)
            .set_number_of_retries(2);
        let conn = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(connect_error)?;
        let blocking = (self.consume_thread_connections > 0).then(|| {
            // With `WAIT` after commits, each commit needs its own: none is carried.
            let linger = match self.wait_for_replicas {
                Some(_) => Duration::ZERO,
                None => self.commit_linger,
            };
            BlockingLane::new(
                client,
                (self.connect_timeout, self.response_timeout),
                self.consume_thread_connections,
                linger,
                conn.clone(),
                Arc::clone(round_trips),
            )
        });
        Ok(RedisConnection::standalone(conn, blocking))
    }

    /// A Redis Cluster from its seed `nodes`.
    async fn open_cluster(&self, nodes: Vec<String>) -> Result<RedisConnection, StoreError> {
        let builder = redis::cluster::ClusterClientBuilder::new(nodes)
            .connection_timeout(self.connect_timeout)
            .response_timeout(self.response_timeout)
            .overall_response_timeout(Some(self.response_timeout * 2))
            // redis-rs retries a whole pipeline when one command met a redirect, running its
            // other commands twice: the store follows redirects itself.
            .retries(0);
        #[cfg(feature = "tls")]
        let builder = match self.certificates() {
            Some(certificates) => builder.certs(certificates),
            None => builder,
        };
        let client = builder.build().map_err(connect_error)?;
        let conn = client.get_async_connection().await.map_err(connect_error)?;
        let nodes = ClusterNodes::new(conn).await.map_err(connect_error)?;
        Ok(RedisConnection::cluster(nodes))
    }

    /// The master the sentinels of `target` name.
    async fn open_sentinel(&self, target: SentinelTarget) -> Result<RedisConnection, StoreError> {
        let SentinelTarget {
            sentinels,
            master,
            tls,
            username,
            password,
            db,
        } = target;
        let addresses = sentinels.into_iter().map(|(host, port)| match tls {
            true => redis::ConnectionAddr::TcpTls {
                host,
                port,
                insecure: false,
                tls_params: None,
            },
            false => redis::ConnectionAddr::Tcp(host, port),
        });
        let mut builder = SentinelClientBuilder::new(addresses, master, SentinelServerType::Master)
            .map_err(connect_error)?
            .set_client_to_redis_db(db);
        if let Some(username) = username {
            builder = builder.set_client_to_redis_username(username);
        }
        if let Some(password) = password {
            builder = builder.set_client_to_redis_password(password);
        }
        if tls {
            builder = builder
                .set_client_to_redis_tls_mode(redis::TlsMode::Secure)
                .set_client_to_sentinel_tls_mode(redis::TlsMode::Secure);
            #[cfg(feature = "tls")]
            if let Some(certificates) = self.certificates() {
                builder = builder
                    .set_client_to_redis_certificates(certificates.clone())
                    .set_client_to_sentinel_certificates(certificates);
            }
        }
        let sentinels = builder.build().map_err(connect_error)?;
        let master = SentinelMaster::connect(sentinels, self.connection_config(), db)
            .await
            .map_err(connect_error)?;
        Ok(RedisConnection::sentinel(master))
    }

    /// Connects (the first connection is made now, so a wrong address or password fails here,
    /// each with its own [`StoreError`] variant: `BadUrl`, `Unreachable`, `AuthFailed`,
    /// `TlsFailed`).
    pub async fn connect(self) -> Result<RedisStore, StoreError> {
        let connect_err = connect_error;
        let round_trips = Arc::new(AtomicU64::new(0));
        let conn = self.open(&round_trips).await?;
        // Load the scripts now (on every node of a Cluster), so that the first batches do not
        // pay for NOSCRIPT answers (a restarted server's empty cache is still handled).
        let all = scripts();
        for source in [CLAIM, COMMIT, RELEASE, RENEW] {
            conn.to_every_node(redis::cmd("SCRIPT").arg("LOAD").arg(source))
                .await
                .map_err(connect_err)?;
        }
        let info = conn
            .to_every_node(redis::cmd("INFO").arg("server"))
            .await
            .map_err(connect_err)?;
        let info: String = redis::from_redis_value(info).map_err(|e| connect_err(e.into()))?;
        let layout = ShardLayout::sized(self.record_ttl, self.expected_rate);
        let limits = listpack_limits(&conn).await;
        match limits {
            Some(limits) => {
                if let Some(why) = limits.shortfall(&layout) {
                    tracing::warn!("Redis will keep records in more memory than it could: {why}");
                }
            }
            None => tracing::debug!(
                "CONFIG GET hash-max-listpack-* was refused: the records hashes' encoding is not checked"
            ),
        }
        warn_unless_noeviction(&conn).await;
        let layouts = LayoutCache::new(layout, Arc::clone(&round_trips));
        Ok(RedisStore {
            conn,
            scripts: all,
            round_trips,
            native_claim: !self.script_claims && server_major_version(&info) >= 7,
            heal_below: limits.map_or(ListpackLimits::DEFAULT.heal_below(), |l| l.heal_below()),
            wait: self.wait_for_replicas.map(|w| w.command()),
            layouts: Arc::new(layouts),
            clock: Arc::default(),
        })
    }
}

/// Reads `maxmemory-policy` (on every master) and WARNs unless it is `noeviction`: an evicted
/// records hash drops a shard's records without a word, where a full server fails commits (and
/// the listener retries them, fail-closed). A `CONFIG GET` that is refused is logged at DEBUG.
async fn warn_unless_noeviction(conn: &RedisConnection) {
    let cmd = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .clone();
    let answers = match conn.on_each_master(&cmd).await {
        Ok(answers) => answers,
        Err(e) => {
            tracing::debug!(error = %e, "CONFIG GET maxmemory-policy was refused: the eviction policy is not checked");
            return;
        }
    };
    for answer in answers {
        let pairs: std::collections::HashMap<String, String> =
            redis::from_redis_value(answer).unwrap_or_default();
        if let Some(policy) = pairs.get("maxmemory-policy").filter(|p| *p != "noeviction") {
            tracing::warn!(
                maxmemory_policy = %policy,
                "Redis may evict the dedup records: an evicted records hash drops the dedup of a whole shard without a word; run the dedup Redis with maxmemory-policy noeviction (a full server then fails commits, which the listener retries)"
            );
            return;
        }
    }
}

/// The server's listpack limits for hashes (on a Cluster, one node's), or `None` when `CONFIG
/// GET` is refused (managed services often rename it) or answers otherwise.
async fn listpack_limits(conn: &RedisConnection) -> Option<ListpackLimits> {
    let answer = conn
        .on_each_master(redis::cmd("CONFIG").arg("GET").arg("hash-max-*"))
        .await
        .ok()?
        .into_iter()
        .next()?;
    let pairs: std::collections::HashMap<String, String> = redis::from_redis_value(answer).ok()?;
    let read = |name: &str| -> Option<u64> {
        pairs
            .get(&format!("hash-max-listpack-{name}"))
            .or_else(|| pairs.get(&format!("hash-max-ziplist-{name}")))?
            .parse()
            .ok()
    };
    Some(ListpackLimits {
        entries: read("entries")?,
        value: read("value")?,
    })
}

/// `e` as an error source, without a cause that only repeats it (redis-rs's I/O errors
/// display their `io::Error` and also give it as their source).
fn source(e: RedisError) -> Box<dyn std::error::Error + Send + Sync> {
    use std::error::Error as _;
    let echo = e
        .source()
        .filter(|s| s.to_string() == e.to_string())
        .map(|s| {
            s.downcast_ref::<std::io::Error>()
                .map_or(std::io::ErrorKind::Other, std::io::Error::kind)
        });
    match echo {
        Some(kind) => Box::new(std::io::Error::new(kind, e.to_string())),
        None => Box::new(e),
    }
}

/// A connect failure as the [`StoreError`] variant that says what went wrong.
fn connect_error(e: RedisError) -> StoreError {
    let text = e.to_string().to_ascii_lowercase();
    let server_code = e.code().map(str::to_owned);
    match e.kind() {
        ErrorKind::AuthenticationFailed => StoreError::AuthFailed { source: e.into() },
        _ if matches!(
            server_code.as_deref(),
            Some("NOAUTH" | "WRONGPASS" | "NOPERM")
        ) =>
        {
            StoreError::AuthFailed { source: e.into() }
        }
        ErrorKind::InvalidClientConfig => StoreError::BadUrl {
            reason: e.to_string(),
        },
        _ if text.contains("tls") || text.contains("certificate") || text.contains("handshake") => {
            StoreError::TlsFailed { source: source(e) }
        }
        _ if e.is_io_error()
            || e.is_timeout()
            || e.is_connection_refusal()
            || matches!(
                e.kind(),
                ErrorKind::ClusterConnectionNotFound
                    | ErrorKind::MasterNameNotFoundBySentinel
                    | ErrorKind::EmptySentinelList
            ) =>
        {
            StoreError::Unreachable { source: source(e) }
        }
        _ => StoreError::backend(StoreOperation::Connect, e),
    }
}

/// The durability knob of [`RedisStoreBuilder::wait_for_replicas`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct WaitForReplicas {
    replicas: u32,
    timeout: Duration,
}

impl WaitForReplicas {
    fn command(self) -> (u32, Cmd) {
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(self.replicas)
            .arg(self.timeout.as_millis().max(1) as u64);
        (self.replicas, cmd)
    }
}

/// The URL may hold a password: it is never printed.
impl fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStoreBuilder")
            .field("url", &"(set)")
            .field("tls_root_certificate", &self.tls_root_pem.is_some())
            .field(
                "tls_client_certificate",
                &self.tls_client_pem.as_ref().map(|_| "(set)"),
            )
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("min_backoff", &self.min_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("script_claims", &self.script_claims)
            .field("wait_for_replicas", &self.wait_for_replicas)
            .field(
                "consume_thread_connections",
                &self.consume_thread_connections,
            )
            .field("commit_linger", &self.commit_linger)
            .field("record_ttl", &self.record_ttl)
            .field("expected_rate", &self.expected_rate)
            .finish()
    }
}
