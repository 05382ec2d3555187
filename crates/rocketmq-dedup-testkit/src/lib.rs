//! Real servers on loopback for rocketmq-dedup's tests: `redis-server`, MariaDB, PostgreSQL,
//! and the RocketMQ name server and broker, each a separate process in its own temporary
//! directory.
//!
//! Every server binds 127.0.0.1 on a free port, can be stopped, SIGKILLed and restarted
//! mid-test on the same port and data directory, and is killed when its handle drops (also
//! when a test panics).
//!
//! When the environment names a running server, the tests use it instead: `REDIS_URL` for
//! Redis, `REDIS_CLUSTER_URL` / `REDIS_SENTINEL_URL` for a Cluster / Sentinel
//! deployment, `MYSQL_URL` for MySQL/MariaDB, `DATABASE_URL` for PostgreSQL and
//! `ROCKETMQ_NAMESRV_ADDR` for RocketMQ (e.g. the repository's docker-compose.yml).
//!
//! ```no_run
//! let redis = rocketmq_dedup_testkit::RedisServer::start().unwrap();
//! println!("{}", redis.url());
//! ```
//!
//! # Layout
//! - [`process`][]: a child process that dies with its handle.
//! - [`client`][]: RocketMQ client runtime, producers, consumers.
//! - [`redis`][]: [`RedisServer`].
//! - [`redis_cluster`][]: [`RedisCluster`], masters and replicas.
//! - [`redis_sentinel`][]: [`RedisSentinel`], a master, a replica and three sentinels.
//! - [`mariadb`][]: [`MariaDbServer`].
//! - [`postgres`][]: [`PostgresServer`].
//! - `template`: data directories made once per machine and copied per server.
//! - [`rocketmq`][]: [`RocketMqStack`], a name server and a broker.
//! - [`recorded_namesrv`][]: [`RecordedNameServer`], a remoting server that answers route requests as a
//!   real name server of another version answered them (Apache RocketMQ 4.9.7, stock and with the
//!   5.x field), by the request's remoting version.

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]

pub mod client;
pub mod mariadb;
pub mod postgres;
pub mod process;
pub mod recorded_namesrv;
pub mod redis;
pub mod redis_cluster;
pub mod redis_sentinel;
pub mod rocketmq;
mod template;

pub use client::{send_with_retry, ClientEnv, ConsumerSpec};
pub use mariadb::MariaDbServer;
pub use postgres::PostgresServer;
pub use process::TestkitError;
pub use recorded_namesrv::{Recorded, RecordedNameServer};
pub use redis::{RedisOptions, RedisServer};
pub use redis_cluster::RedisCluster;
pub use redis_sentinel::RedisSentinel;
pub use rocketmq::{RocketMqStack, StackOptions};

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// A port that was free on 127.0.0.1 a moment ago.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `N` ports that were free on 127.0.0.1 a moment ago, all different: each is held until
/// the last is picked (ports picked one by one with [`free_port`] may repeat).
pub fn free_ports<const N: usize>() -> std::io::Result<[u16; N]> {
    let mut held = Vec::with_capacity(N);
    let mut ports = [0; N];
    for port in &mut ports {
        *port = hold_free_port(&mut held)?;
    }
    Ok(ports)
}

/// A free port on 127.0.0.1, kept bound in `held` so that it is not picked again.
pub(crate) fn hold_free_port(held: &mut Vec<TcpListener>) -> std::io::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    held.push(listener);
    Ok(port)
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Polls `ready` every 50 ms until it answers true or `deadline` passes.
pub(crate) fn wait_until(
    deadline: Instant,
    what: &str,
    mut ready: impl FnMut() -> std::io::Result<bool>,
) -> Result<(), TestkitError> {
    while Instant::now() < deadline {
        if ready().unwrap_or(false) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(other_error(&format!("timed out waiting for {what}")))
}

/// A [`TestkitError`] that says `message`.
pub(crate) fn other_error(message: &str) -> TestkitError {
    std::io::Error::other(message.to_owned()).into()
}

/// A unique-enough name for a topic or group: `prefix` and a random suffix.
pub fn unique_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}_{}_{nanos:x}", std::process::id())
}
