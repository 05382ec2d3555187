//! The Redis store.

use std::fmt;
use std::time::Duration;

use futures::future::BoxFuture;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, Script, ServerErrorKind};

use super::{ClaimOutcome, CommitOutcome, DedupStore, OwnerToken};
use crate::error::{StoreError, StoreOperation};
use crate::record_key::RecordKey;

/// `KEYS[1]` record key, `ARGV[1]` owner value (`c<token>`), `ARGV[2]` processing TTL in ms.
/// Returns 0 claimed, 1 in flight, 2 consumed, -1 unreadable record.
const CLAIM: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 0
end
if v == 'd' then return 2 end
if v == ARGV[1] then return 0 end
if string.byte(v, 1) == 99 then return 1 end
return -1
";

/// `KEYS[1]` record key, `ARGV[1]` owner value, `ARGV[2]` record TTL in ms.
/// Returns 0 committed, 1 lost to another owner, 2 already consumed.
const COMMIT: &str = r"
local v = redis.call('GET', KEYS[1])
if v == 'd' then return 2 end
if v and v ~= ARGV[1] then return 1 end
redis.call('SET', KEYS[1], 'd', 'PX', ARGV[2])
return 0
";

/// `KEYS[1]` record key, `ARGV[1]` owner value. Returns 1 when the claim was deleted.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
";

/// `KEYS[1]` record key, `ARGV[1]` owner value, `ARGV[2]` TTL in ms. Returns 1 when renewed.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// A [`DedupStore`] in Redis, shared by all consumers of a group.
///
/// One record per key, a string: `c<token>` while CONSUMING (with the processing TTL), `d`
/// when CONSUMED (with the record TTL); the key layout is in [`crate::record_key`]. Every
/// operation is one single-key command per record, sent as one pipeline per batch: one round
/// trip per batch, and no cross-slot keys, so Redis Cluster needs no hash tags. Claims are the
/// native `SET key owner NX PX ttl GET` on Redis 7.0 and later (a Lua script before);
/// commit, release and renew are compare-and-set Lua scripts on the owner token.
///
/// # Connection behavior
/// It holds a [`ConnectionManager`]: a cheap-to-clone multiplexed connection.
/// - A call that gets no answer within the response timeout fails with a timeout.
/// - When the connection drops, the calls in flight fail and the manager reconnects in the
///   background with exponential backoff (from [`RedisStoreBuilder::DEFAULT_MIN_BACKOFF`] up
///   to [`RedisStoreBuilder::DEFAULT_MAX_BACKOFF`]); calls made meanwhile fail fast.
/// - After a Redis restart the script cache is empty: the commands of a pipeline that answer
///   `NOSCRIPT` are sent once more after the script is loaded (only those: the others ran).
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    scripts: &'static Scripts,
    /// Pipelines sent (network round trips), shared by clones.
    round_trips: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Claims with the native `SET … NX GET` (Redis 7.0 and later) instead of a script.
    native_claim: bool,
}

struct Scripts {
    claim: Script,
    commit: Script,
    release: Script,
    renew: Script,
}

fn scripts() -> &'static Scripts {
    static SCRIPTS: std::sync::OnceLock<Scripts> = std::sync::OnceLock::new();
    SCRIPTS.get_or_init(|| Scripts {
        claim: Script::new(CLAIM),
        commit: Script::new(COMMIT),
        release: Script::new(RELEASE),
        renew: Script::new(RENEW),
    })
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore").finish_non_exhaustive()
    }
}

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
}

impl RedisStoreBuilder {
    /// Default timeout of one connection attempt.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
    /// Default time to wait for an answer.
    pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
    /// Default first reconnect delay.
    pub const DEFAULT_MIN_BACKOFF: Duration = Duration::from_millis(50);
    /// Default longest reconnect delay.
    pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(2);

    /// A builder for `url`: `redis://[:password@]host:port[/db]`, `redis://user:password@…`
    /// (ACL), `rediss://…` for TLS (feature `tls`, on by default), or `redis+unix:///path`.
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
        }
    }

    /// Timeout of one connection attempt.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Time to wait for an answer before a call fails.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// Claims with a Lua script even on Redis 7.0 and later (for proxies that reject
    /// `SET … NX GET`). Servers before 7.0 always get the script.
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

    fn client(&self) -> Result<redis::Client, RedisError> {
        #[cfg(feature = "tls")]
        if self.tls_root_pem.is_some() || self.tls_client_pem.is_some() {
            let certificates = redis::TlsCertificates {
                client_tls: self
                    .tls_client_pem
                    .clone()
                    .map(|(client_cert, client_key)| redis::ClientTlsConfig {
                        client_cert,
                        client_key,
                    }),
                root_cert: self.tls_root_pem.clone(),
            };
            return redis::Client::build_with_tls(self.url.as_str(), certificates);
        }
        redis::Client::open(self.url.as_str())
    }

    /// Connects (the first connection is made now, so a wrong address or password fails here).
    pub async fn connect(self) -> Result<RedisStore, StoreError> {
        let connect_err = |e: RedisError| StoreError::backend(StoreOperation::Connect, e);
        let client = self.client().map_err(connect_err)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout))
            .set_min_delay(self.min_backoff)
            .set_max_delay(self.max_backoff)
            .set_number_of_retries(2);
        let mut conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(connect_err)?;
        // Load the scripts now, in one round trip, so that the first batches do not pay for
        // NOSCRIPT answers (a restarted server's empty cache is still handled in `run`).
        let all = scripts();
        let _: Vec<String> = redis::pipe()
            .load_script(&all.claim)
            .load_script(&all.commit)
            .load_script(&all.release)
            .load_script(&all.renew)
            .query_async(&mut conn)
            .await
            .map_err(connect_err)?;
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut conn)
            .await
            .map_err(connect_err)?;
        Ok(RedisStore {
            conn,
            scripts: all,
            round_trips: Default::default(),
            native_claim: !self.script_claims && server_major_version(&info) >= 7,
        })
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
            .finish()
    }
}

impl RedisStore {
    /// A [`RedisStoreBuilder`] for `url`.
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder::new(url)
    }

    /// Round trips to Redis so far (one per pipeline; a `NOSCRIPT` reload adds two: the load
    /// and the commands sent again).
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn count_round_trips(&self, n: u64) {
        self.round_trips
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// The Lua source of the script behind `operation` (commit, release, renew, and the
    /// claim used before Redis 7.0), for tests that race a store on its script cache.
    #[cfg(feature = "test-util")]
    pub fn script_source(operation: StoreOperation) -> Option<&'static str> {
        match operation {
            StoreOperation::Claim => Some(CLAIM),
            StoreOperation::Commit => Some(COMMIT),
            StoreOperation::Release => Some(RELEASE),
            StoreOperation::Renew => Some(RENEW),
            _ => None,
        }
    }

    /// The connection, for tools and tests that inspect records.
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Claims with one `SET key owner NX PX ttl GET` per key, in one pipeline: the answer is
    /// the value that was there (nil: absent, so now claimed).
    async fn claim_native(
        &self,
        keys: &[RecordKey],
        owner: &str,
        ttl: &str,
    ) -> Result<Vec<ClaimOutcome>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.cmd("SET")
                .arg(key.as_str())
                .arg(owner)
                .arg("NX")
                .arg("PX")
                .arg(ttl)
                .arg("GET");
        }
        let mut conn = self.conn.clone();
        self.count_round_trips(1);
        let answers: Vec<Option<Vec<u8>>> = pipe
            .query_async(&mut conn)
            .await
            .map_err(|e| StoreError::backend(StoreOperation::Claim, e))?;
        answers
            .into_iter()
            .map(|previous| match previous.as_deref() {
                None => Ok(ClaimOutcome::Claimed),
                Some(b"d") => Ok(ClaimOutcome::Consumed),
                Some(v) if v == owner.as_bytes() => Ok(ClaimOutcome::Claimed),
                Some([b'c', ..]) => Ok(ClaimOutcome::InFlight),
                Some(_) => Err(StoreError::CorruptRecord {
                    operation: StoreOperation::Claim,
                    detail: "value is neither a claim (c…) nor a consumed mark (d)".to_owned(),
                }),
            })
            .collect()
    }

    /// Runs `script` once per key in one pipeline and returns the integer answers.
    ///
    /// A server whose script cache is empty (restarted, or a fresh replica after a failover)
    /// answers NOSCRIPT to the commands that met the empty cache; the others ran. So the
    /// script is loaded and only those commands are sent again: a command is never run twice,
    /// and every key gets the answer of its one run.
    async fn run(
        &self,
        operation: StoreOperation,
        script: &Script,
        keys: &[RecordKey],
        args: &[&[u8]],
    ) -> Result<Vec<i64>, StoreError> {
        let backend = |e: RedisError| StoreError::backend(operation, e);
        let mut answers: Vec<Option<i64>> = vec![None; keys.len()];
        let mut todo: Vec<usize> = (0..keys.len()).collect();
        let mut conn = self.conn.clone();
        for attempt in 0..2 {
            if todo.is_empty() {
                break;
            }
            if attempt > 0 {
                self.count_round_trips(1);
                script
                    .prepare_invoke()
                    .load_async(&mut conn)
                    .await
                    .map_err(backend)?;
            }
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for &k in &todo {
                let mut invocation = script.key(keys[k].as_str());
                for arg in args {
                    invocation.arg(*arg);
                }
                pipe.invoke_script(&invocation);
            }
            self.count_round_trips(1);
            let results: Vec<redis::RedisResult<i64>> =
                pipe.query_async(&mut conn).await.map_err(backend)?;
            if results.len() != todo.len() {
                return Err(StoreError::CorruptRecord {
                    operation,
                    detail: format!("{} answers for {} commands", results.len(), todo.len()),
                });
            }
            let mut no_script = Vec::new();
            for (&k, result) in todo.iter().zip(results) {
                match result {
                    Ok(answer) => answers[k] = Some(answer),
                    Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                        no_script.push(k)
                    }
                    Err(e) => return Err(backend(e)),
                }
            }
            todo = no_script;
        }
        answers
            .into_iter()
            .collect::<Option<Vec<i64>>>()
            .ok_or_else(|| {
                StoreError::backend(
                    operation,
                    "the script cache was emptied again while the script was being reloaded",
                )
            })
    }
}

/// The major version in an `INFO server` answer (0 when absent).
fn server_major_version(info: &str) -> u32 {
    info.lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .and_then(|v| v.trim().split('.').next()?.parse().ok())
        .unwrap_or(0)
}

fn owner_value(token: OwnerToken) -> String {
    format!("c{:x}", token.get())
}

fn ttl_ms(ttl: Duration) -> String {
    super::clamp_ttl(ttl).as_millis().to_string()
}

impl DedupStore for RedisStore {
    fn claim<'a>(
        &'a self,
        keys: &'a [RecordKey],
        token: OwnerToken,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Vec<ClaimOutcome>, StoreError>> {
        Box::pin(async move {
            let (owner, ttl) = (owner_value(token), ttl_ms(ttl));
            if self.native_claim {
                return self.claim_native(keys, &owner, &ttl).await;
            }
            let answers = self
                .run(
                    StoreOperation::Claim,
                    &self.scripts.claim,
                    keys,
                    &[owner.as_bytes(), ttl.as_bytes()],
                )
                .await?;
            answers
                .into_iter()
                .map(|a| match a {
                    0 => Ok(ClaimOutcome::Claimed),
                    1 => Ok(ClaimOutcome::InFlight),
                    2 => Ok(ClaimOutcome::Consumed),
                    _ => Err(StoreError::CorruptRecord {
                        operation: StoreOperation::Claim,
                        detail: "value is neither a claim (c…) nor a consumed mark (d)".to_owned(),
                    }),
                })
                .collect()
        })
    }

    fn commit<'a>(
        &'a self,
        keys: &'a [RecordKey],
        token: OwnerToken,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Vec<CommitOutcome>, StoreError>> {
        Box::pin(async move {
            let (owner, ttl) = (owner_value(token), ttl_ms(ttl));
            let answers = self
                .run(
                    StoreOperation::Commit,
                    &self.scripts.commit,
                    keys,
                    &[owner.as_bytes(), ttl.as_bytes()],
                )
                .await?;
            Ok(answers
                .into_iter()
                .map(|a| match a {
                    0 => CommitOutcome::Committed,
                    2 => CommitOutcome::AlreadyConsumed,
                    _ => CommitOutcome::Lost,
                })
                .collect())
        })
    }

    fn release<'a>(
        &'a self,
        keys: &'a [RecordKey],
        token: OwnerToken,
    ) -> BoxFuture<'a, Result<Vec<bool>, StoreError>> {
        Box::pin(async move {
            let owner = owner_value(token);
            let answers = self
                .run(
                    StoreOperation::Release,
                    &self.scripts.release,
                    keys,
                    &[owner.as_bytes()],
                )
                .await?;
            Ok(answers.into_iter().map(|a| a == 1).collect())
        })
    }

    fn renew<'a>(
        &'a self,
        keys: &'a [RecordKey],
        token: OwnerToken,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Vec<bool>, StoreError>> {
        Box::pin(async move {
            let (owner, ttl) = (owner_value(token), ttl_ms(ttl));
            let answers = self
                .run(
                    StoreOperation::Renew,
                    &self.scripts.renew,
                    keys,
                    &[owner.as_bytes(), ttl.as_bytes()],
                )
                .await?;
            Ok(answers.into_iter().map(|a| a == 1).collect())
        })
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn owner_values_start_with_c_as_the_claim_script_expects() {
        // The claim script tells a claim from garbage by its first byte, 99 ('c').
        assert!(super::CLAIM.contains("== 99"));
        let token = super::OwnerToken::from_u64(255).unwrap();
        assert_eq!(super::owner_value(token), "cff");
    }
}
