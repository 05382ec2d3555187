//! A real Redis Cluster on loopback: masters and replicas, each a `redis-server` process.
//!
//! Slots are split evenly over the masters and replica `i` follows master `i` (assigned by
//! hand, not by `redis-cli --cluster create`, so the pairing is known). Nodes run with
//! `cluster-node-timeout 1000` and `cluster-replica-validity-factor 0`, so a killed master's
//! replica is promoted in about 2 s (recipe: shared/notes/infra-recipes.md).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::{find_program, ChildProcess, TestkitError};
use crate::redis::{command_on, spawn_ready};
use crate::{other_error as io, wait_until as wait};

const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one node may take to answer PING.
const NODE_TIMEOUT: Duration = Duration::from_secs(10);
const SLOTS: u32 = 16_384;

/// A Redis Cluster on 127.0.0.1, or the one `REDIS_CLUSTER_URL` names.
#[derive(Debug)]
pub struct RedisCluster {
    url: String,
    nodes: Vec<ClusterNode>,
    masters: usize,
    dir: tempfile::TempDir,
}

#[derive(Debug)]
struct ClusterNode {
    port: u16,
    dir: PathBuf,
    process: Option<ChildProcess>,
}

impl RedisCluster {
    /// The cluster `REDIS_CLUSTER_URL` names (`redis+cluster://h:p,…`), else a new local one
    /// with 3 masters and 3 replicas.
    pub fn start() -> Result<Self, TestkitError> {
        match std::env::var("REDIS_CLUSTER_URL") {
            Ok(url) if !url.is_empty() => Ok(RedisCluster {
                url,
                nodes: Vec::new(),
                masters: 0,
                dir: tempfile::tempdir()?,
            }),
            _ => Self::start_local(3, 1),
        }
    }

    /// A new local cluster: `masters` masters, each with `replicas` replicas.
    pub fn start_local(masters: usize, replicas: usize) -> Result<Self, TestkitError> {
        let program = find_program("redis-server").ok_or_else(|| TestkitError::NotInstalled {
            program: "redis-server".into(),
            hint: "apt-get install -y redis-server (or set REDIS_CLUSTER_URL)".into(),
        })?;
        let dir = tempfile::Builder::new()
            .prefix("dedup-rcluster-")
            .tempdir()?;
        let mut cluster = RedisCluster {
            url: String::new(),
            nodes: Vec::new(),
            masters,
            dir,
        };
        for i in 0..masters * (1 + replicas) {
            let node_dir = cluster.dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(&node_dir)?;
            let mut node = ClusterNode {
                port: 0,
                dir: node_dir,
                process: None,
            };
            let mut last = None;
            for _ in 0..10 {
                node.port = cluster_port()?;
                match node.launch(&program) {
                    Ok(()) => {
                        last = None;
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            if let Some(e) = last {
                return Err(e);
            }
            cluster.nodes.push(node);
        }
        cluster.form(replicas)?;
        cluster.url = format!(
            "redis+cluster://{}",
            cluster
                .nodes
                .iter()
                .map(|n| format!("127.0.0.1:{}", n.port))
                .collect::<Vec<_>>()
                .join(",")
        );
        Ok(cluster)
    }

    /// Assigns slots, introduces the nodes, pairs the replicas, and waits until healthy.
    fn form(&self, replicas: usize) -> Result<(), TestkitError> {
        let per_master = SLOTS / self.masters as u32;
        for (i, node) in self.nodes[..self.masters].iter().enumerate() {
            let start = i as u32 * per_master;
            let end = if i + 1 == self.masters {
                SLOTS - 1
            } else {
                start + per_master - 1
            };
            expect_ok(command_on(
                node.port,
                &[
                    "CLUSTER",
                    "ADDSLOTSRANGE",
                    &start.to_string(),
                    &end.to_string(),
                ],
            )?)?;
        }
        let first = self.nodes[0].port.to_string();
        for node in &self.nodes[1..] {
            expect_ok(command_on(
                node.port,
                &["CLUSTER", "MEET", "127.0.0.1", &first],
            )?)?;
        }
        let deadline = Instant::now() + READY_TIMEOUT;
        let ids: Vec<String> = self
            .nodes
            .iter()
            .map(|n| node_id(n.port))
            .collect::<Result<_, _>>()?;
        for r in 0..replicas {
            for (m, master_id) in ids[..self.masters].iter().enumerate() {
                let replica = &self.nodes[self.masters * (1 + r) + m];
                // A replica can follow only a master it knows.
                wait(deadline, "the nodes to meet", || {
                    Ok(command_on(replica.port, &["CLUSTER", "NODES"])?
                        .contains(master_id.as_str()))
                })?;
                expect_ok(command_on(
                    replica.port,
                    &["CLUSTER", "REPLICATE", master_id],
                )?)?;
            }
        }
        self.wait_until_healthy(READY_TIMEOUT)
    }

    /// Waits until every running node says `cluster_state:ok`, sees every running node, and
    /// every replica's link to its master is up.
    pub fn wait_until_healthy(&self, timeout: Duration) -> Result<(), TestkitError> {
        let deadline = Instant::now() + timeout;
        let running: Vec<u16> = self.running_ports();
        for &port in &running {
            wait(deadline, "cluster_state:ok", || {
                let nodes = command_on(port, &["CLUSTER", "NODES"])?;
                let connected = nodes.lines().filter(|l| l.contains(" connected")).count();
                Ok(
                    command_on(port, &["CLUSTER", "INFO"])?.contains("cluster_state:ok")
                        && connected >= running.len(),
                )
            })?;
            let replication = command_on(port, &["INFO", "replication"])?;
            if replication.contains("role:slave") {
                wait(deadline, "replicas in sync", || {
                    Ok(command_on(port, &["INFO", "replication"])?
                        .contains("master_link_status:up"))
                })?;
            }
        }
        Ok(())
    }

    /// The URL clients connect to: `redis+cluster://127.0.0.1:p1,…`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether this is the cluster `REDIS_CLUSTER_URL` names (its nodes cannot be killed).
    pub fn is_external(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The ports of the running nodes.
    pub fn running_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.process.is_some())
            .map(|n| n.port)
            .collect()
    }

    /// Sends one command to the node on `port` and returns the raw RESP reply.
    pub fn command(&self, port: u16, args: &[&str]) -> std::io::Result<String> {
        command_on(port, args)
    }

    /// The port of the master that serves `key` now.
    pub fn master_of(&self, key: &str) -> Result<u16, TestkitError> {
        let port = *self
            .running_ports()
            .first()
            .ok_or_else(|| io("no node runs"))?;
        let slot: u32 = integer(&command_on(port, &["CLUSTER", "KEYSLOT", key])?)?;
        let nodes = command_on(port, &["CLUSTER", "NODES"])?;
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 9 || !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            for range in &fields[8..] {
                let (start, end) = range.split_once('-').unwrap_or((range, range));
                if let (Ok(start), Ok(end)) = (start.parse::<u32>(), end.parse::<u32>()) {
                    if (start..=end).contains(&slot) {
                        return address_port(fields[1]);
                    }
                }
            }
        }
        Err(io(&format!("no master serves slot {slot}")))
    }

    /// The port of a replica of the master on `master_port`.
    pub fn replica_of(&self, master_port: u16) -> Result<u16, TestkitError> {
        let id = node_id(master_port)?;
        let nodes = command_on(master_port, &["CLUSTER", "NODES"])?;
        nodes
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.len() > 3 && f[3] == id && f[2].contains("slave"))
            .map(|f| address_port(f[1]))
            .unwrap_or_else(|| Err(io("the master has no replica")))
    }

    /// SIGKILLs the node on `port`.
    pub fn kill(&mut self, port: u16) {
        if let Some(node) = self.nodes.iter_mut().find(|n| n.port == port) {
            if let Some(mut p) = node.process.take() {
                p.kill();
            }
        }
    }

    /// Waits until the node on `port` is a master (a promoted replica); after 8 s it forces
    /// the election with `CLUSTER FAILOVER TAKEOVER` (the recipe's safety net).
    pub fn wait_for_promotion(&self, port: u16, timeout: Duration) -> Result<(), TestkitError> {
        let start = Instant::now();
        let mut forced = false;
        while start.elapsed() < timeout {
            if command_on(port, &["ROLE"]).is_ok_and(|r| r.contains("master")) {
                return Ok(());
            }
            if !forced && start.elapsed() > Duration::from_secs(8) {
                forced = true;
                let _ = command_on(port, &["CLUSTER", "FAILOVER", "TAKEOVER"]);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(io(&format!(
            "node {port} was not promoted within {timeout:?}"
        )))
    }

    /// Starts the killed node on `port` again (same nodes.conf): it rejoins as a replica.
    pub fn restart(&mut self, port: u16) -> Result<(), TestkitError> {
        let program = find_program("redis-server").ok_or_else(|| io("redis-server not found"))?;
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .ok_or_else(|| io("no such node"))?;
        node.launch(&program)
    }

    /// The number of masters.
    pub fn masters(&self) -> usize {
        self.masters
    }
}

impl ClusterNode {
    fn launch(&mut self, program: &std::path::Path) -> Result<(), TestkitError> {
        let mut cmd = Command::new(program);
        cmd.args(["--bind", "127.0.0.1", "--protected-mode", "no", "--port"])
            .arg(self.port.to_string())
            .args(["--cluster-enabled", "yes", "--cluster-config-file"])
            .arg(self.dir.join("nodes.conf"))
            .args([
                "--cluster-node-timeout",
                "1000",
                "--cluster-replica-validity-factor",
                "0",
                "--appendonly",
                "no",
                "--save",
                "",
                "--repl-diskless-sync-delay",
                "0",
                "--daemonize",
                "no",
                "--dir",
            ])
            .arg(&self.dir);
        let log = self.dir.join("redis.log");
        let what = format!("cluster node on port {}", self.port);
        self.process = Some(spawn_ready(
            cmd,
            &log,
            self.port,
            None,
            &what,
            NODE_TIMEOUT,
        )?);
        Ok(())
    }
}

/// A free port `p` with `p + 10000` (its cluster bus) free too, both below the ephemeral range
/// (32768 and up), so that no client's outgoing connection takes the bus port.
fn cluster_port() -> std::io::Result<u16> {
    for _ in 0..200 {
        let port = 20_000 + fastrand_u16(2_700);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok()
        {
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "no free cluster port pair",
    ))
}

/// A pseudo-random number below `n` (time and process id; no dependency needed).
fn fastrand_u16(n: u16) -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    (h.finish() % u64::from(n)) as u16
}

fn node_id(port: u16) -> Result<String, TestkitError> {
    let reply = command_on(port, &["CLUSTER", "MYID"])?;
    reply
        .lines()
        .nth(1)
        .map(str::to_owned)
        .ok_or_else(|| io("CLUSTER MYID answered nothing"))
}

fn address_port(address: &str) -> Result<u16, TestkitError> {
    address
        .split(['@', ','])
        .next()
        .and_then(|a| a.rsplit_once(':'))
        .and_then(|(_, p)| p.parse().ok())
        .ok_or_else(|| io(&format!("bad node address {address}")))
}

fn integer(reply: &str) -> Result<u32, TestkitError> {
    reply
        .trim()
        .strip_prefix(':')
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| io(&format!("not an integer reply: {reply}")))
}

fn expect_ok(reply: String) -> Result<(), TestkitError> {
    match reply.starts_with("+OK") {
        true => Ok(()),
        false => Err(io(&format!("cluster setup: {}", reply.trim()))),
    }
}
