//! The Redis deployments a store test runs on: one `redis-server`, one `valkey-server`, a
//! Redis Cluster (3 masters, 3 replicas) and a Sentinel deployment (master, replica, three
//! sentinels), each started on free loopback ports, or named by `REDIS_URL`,
//! `REDIS_CLUSTER_URL` and `REDIS_SENTINEL_URL`.
//!
//! `on_every_deployment!(test_a, test_b)` makes a module per deployment with one
//! `#[tokio::test]` per named `async fn test_a(servers: Servers)`.

use rocketmq_dedup_testkit::{RedisCluster, RedisOptions, RedisSentinel, RedisServer};

/// The servers of one deployment, stopped on drop.
pub enum Servers {
    One(RedisServer),
    Cluster(RedisCluster),
    Sentinel(RedisSentinel),
}

impl Servers {
    pub fn redis() -> Self {
        Servers::One(RedisServer::start().expect("redis-server starts"))
    }

    pub fn valkey() -> Self {
        Servers::One(
            RedisServer::start_local(RedisOptions::valkey()).expect("valkey-server starts"),
        )
    }

    pub fn cluster() -> Self {
        Servers::Cluster(RedisCluster::start().expect("the Redis Cluster forms"))
    }

    pub fn sentinel() -> Self {
        Servers::Sentinel(RedisSentinel::start().expect("master, replica and sentinels start"))
    }

    pub fn url(&self) -> &str {
        match self {
            Servers::One(s) => s.url(),
            Servers::Cluster(c) => c.url(),
            Servers::Sentinel(s) => s.url(),
        }
    }

    /// Whether the servers are ours (not named by an environment variable), so that their
    /// settings may be changed.
    pub fn is_local(&self) -> bool {
        match self {
            Servers::One(s) => !s.is_external(),
            Servers::Cluster(c) => !c.is_external(),
            Servers::Sentinel(s) => !s.is_external(),
        }
    }

    /// Runs `args` on every data node (masters and replicas); the raw replies.
    pub fn on_every_node(&self, args: &[&str]) -> Vec<String> {
        match self {
            Servers::One(s) => vec![s.command(args).unwrap()],
            Servers::Cluster(c) => c
                .running_ports()
                .into_iter()
                .map(|port| c.command(port, args).unwrap())
                .collect(),
            Servers::Sentinel(s) => s
                .data_ports()
                .into_iter()
                .map(|port| s.command(port, args).unwrap())
                .collect(),
        }
    }

    /// `CONFIG SET name value` on every data node.
    pub fn config_set(&self, name: &str, value: &str) {
        for answer in self.on_every_node(&["CONFIG", "SET", name, value]) {
            assert!(answer.starts_with("+OK"), "{name} {value}: {answer}");
        }
    }

    /// A counter of `INFO commandstats` (e.g. `cmdstat_hscan` `calls`), summed over the
    /// nodes.
    pub fn command_calls(&self, command: &str) -> u64 {
        self.on_every_node(&["INFO", "commandstats"])
            .iter()
            .flat_map(|info| info.lines())
            .filter_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
            .filter_map(|rest| rest.split(',').next()?.parse::<u64>().ok())
            .sum()
    }
}

/// One `#[tokio::test]` per deployment for each named test.
macro_rules! on_every_deployment {
    ($($test:ident),* $(,)?) => {
        mod redis_server {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                super::$test($crate::deployments::Servers::redis()).await
            })*
        }
        mod valkey_server {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                super::$test($crate::deployments::Servers::valkey()).await
            })*
        }
        mod redis_cluster {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                super::$test($crate::deployments::Servers::cluster()).await
            })*
        }
        mod redis_sentinel {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                super::$test($crate::deployments::Servers::sentinel()).await
            })*
        }
    };
}
