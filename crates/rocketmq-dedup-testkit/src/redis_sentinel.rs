//! A real Redis Sentinel deployment on loopback: a master, a replica and three sentinels
//! (quorum 2, `down-after-milliseconds 1000`), each a `redis-server` process. A killed master
//! is replaced in about 2.3 s (recipe: shared/notes/infra-recipes.md).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::{find_program, ChildProcess, TestkitError};
use crate::redis::{command_on, spawn_ready};
use crate::{other_error as io, wait_until as wait};

/// The master's name in the sentinels' configuration.
pub const MASTER_NAME: &str = "mymaster";
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A master, a replica and three sentinels on 127.0.0.1, or what `REDIS_SENTINEL_URL` names.
#[derive(Debug)]
pub struct RedisSentinel {
    url: String,
    /// The data nodes (master first at start), by port.
    data: Vec<(u16, Option<ChildProcess>)>,
    sentinels: Vec<(u16, ChildProcess)>,
    dir: tempfile::TempDir,
}

impl RedisSentinel {
    /// The deployment `REDIS_SENTINEL_URL` names (`redis+sentinel://h:p,…/name`), else a new
    /// local one.
    pub fn start() -> Result<Self, TestkitError> {
        match std::env::var("REDIS_SENTINEL_URL") {
            Ok(url) if !url.is_empty() => Ok(RedisSentinel {
                url,
                data: Vec::new(),
                sentinels: Vec::new(),
                dir: tempfile::tempdir()?,
            }),
            _ => Self::start_local(),
        }
    }

    /// A new local master, replica and three sentinels; returns once every sentinel sees the
    /// replica and its two peers (so a failover can reach quorum).
    pub fn start_local() -> Result<Self, TestkitError> {
        let program = find_program("redis-server").ok_or_else(|| TestkitError::NotInstalled {
            program: "redis-server".into(),
            hint: "apt-get install -y redis-server (or set REDIS_SENTINEL_URL)".into(),
        })?;
        let dir = tempfile::Builder::new()
            .prefix("dedup-rsentinel-")
            .tempdir()?;
        let mut deployment = RedisSentinel {
            url: String::new(),
            data: Vec::new(),
            sentinels: Vec::new(),
            dir,
        };
        let [master, replica, sentinel_ports @ ..] = crate::free_ports::<5>()?;
        let process = data_node(&program, deployment.dir.path(), master, None)?;
        deployment.data.push((master, Some(process)));
        let process = data_node(&program, deployment.dir.path(), replica, Some(master))?;
        deployment.data.push((replica, Some(process)));
        for port in sentinel_ports {
            let conf = deployment.dir.path().join(format!("sentinel-{port}.conf"));
            // Sentinel rewrites its configuration file: it must be a writable file.
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {dir}\n\
                     sentinel monitor {MASTER_NAME} 127.0.0.1 {master} 2\n\
                     sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                     sentinel failover-timeout {MASTER_NAME} 5000\n\
                     sentinel parallel-syncs {MASTER_NAME} 1\n",
                    dir = deployment.dir.path().display()
                ),
            )?;
            let mut cmd = Command::new(&program);
            cmd.arg(&conf).arg("--sentinel");
            let log = deployment.dir.path().join(format!("sentinel-{port}.log"));
            let mut process = ChildProcess::spawn(cmd, &log)?;
            // A sentinel that cannot bind its port exits: say so now, with its log, rather
            // than when the deployment's wait for its sentinels times out.
            process.wait_ready(format!("sentinel on port {port}"), READY_TIMEOUT, || {
                crate::wait_for_port(port, Duration::from_millis(50))
            })?;
            deployment.sentinels.push((port, process));
        }
        deployment.wait_until_ready()?;
        deployment.url = format!(
            "redis+sentinel://{}/{MASTER_NAME}",
            deployment
                .sentinels
                .iter()
                .map(|(port, _)| format!("127.0.0.1:{port}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        Ok(deployment)
    }

    fn wait_until_ready(&self) -> Result<(), TestkitError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let replica = self.data[1].0;
        wait(deadline, "the replica to sync", || {
            Ok(command_on(replica, &["INFO", "replication"])?.contains("master_link_status:up"))
        })?;
        for (port, _) in &self.sentinels {
            wait(deadline, "the sentinels to see each other", || {
                let reply = command_on(*port, &["SENTINEL", "MASTER", MASTER_NAME])?;
                let fields: Vec<&str> = reply
                    .lines()
                    .filter(|l| !l.starts_with(['$', '*']))
                    .collect();
                let value = |name: &str| {
                    fields
                        .iter()
                        .position(|f| *f == name)
                        .and_then(|i| fields.get(i + 1))
                        .copied()
                };
                Ok(value("num-other-sentinels") == Some("2") && value("num-slaves") == Some("1"))
            })?;
        }
        Ok(())
    }

    /// The URL clients connect to: `redis+sentinel://127.0.0.1:s1,…/mymaster`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether this is the deployment `REDIS_SENTINEL_URL` names (it cannot be killed).
    pub fn is_external(&self) -> bool {
        self.data.is_empty()
    }

    /// The port of the master the sentinels name now.
    pub fn master_port(&self) -> Result<u16, TestkitError> {
        let (port, _) = self.sentinels.first().ok_or_else(|| io("no sentinel"))?;
        let reply = command_on(*port, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME])?;
        reply
            .lines()
            .filter(|l| !l.starts_with(['$', '*']))
            .nth(1)
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| io(&format!("no master address in {reply:?}")))
    }

    /// The ports of the running data nodes (master and replica).
    pub fn data_ports(&self) -> Vec<u16> {
        self.data
            .iter()
            .filter(|(_, process)| process.is_some())
            .map(|(port, _)| *port)
            .collect()
    }

    /// Sends one command to the data node on `port` and returns the raw RESP reply.
    pub fn command(&self, port: u16, args: &[&str]) -> std::io::Result<String> {
        command_on(port, args)
    }

    /// SIGKILLs the current master; returns its port.
    pub fn kill_master(&mut self) -> Result<u16, TestkitError> {
        let master = self.master_port()?;
        let node = self
            .data
            .iter_mut()
            .find(|(port, _)| *port == master)
            .ok_or_else(|| io("the master is not one of this deployment's nodes"))?;
        if let Some(mut process) = node.1.take() {
            process.kill();
        }
        Ok(master)
    }

    /// Waits until every sentinel names a master other than `old` and that node is a master;
    /// returns its port.
    pub fn wait_for_failover(&self, old: u16, timeout: Duration) -> Result<u16, TestkitError> {
        let deadline = Instant::now() + timeout;
        let mut new = 0;
        for (port, _) in &self.sentinels {
            wait(deadline, "the sentinels to name a new master", || {
                let reply =
                    command_on(*port, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME])?;
                let named: Option<u16> = reply
                    .lines()
                    .filter(|l| !l.starts_with(['$', '*']))
                    .nth(1)
                    .and_then(|p| p.parse().ok());
                new = named.unwrap_or(old);
                Ok(new != old)
            })?;
        }
        wait(deadline, "the new master to take the role", || {
            Ok(command_on(new, &["ROLE"])?.contains("master"))
        })?;
        Ok(new)
    }

    /// Starts the killed data node on `port` again as a replica of `master`.
    pub fn restart_as_replica(&mut self, port: u16, master: u16) -> Result<(), TestkitError> {
        let program = find_program("redis-server").ok_or_else(|| io("redis-server not found"))?;
        let process = data_node(&program, self.dir.path(), port, Some(master))?;
        if let Some(node) = self.data.iter_mut().find(|(p, _)| *p == port) {
            node.1 = Some(process);
        }
        Ok(())
    }
}

fn data_node(
    program: &Path,
    dir: &Path,
    port: u16,
    replica_of: Option<u16>,
) -> Result<ChildProcess, TestkitError> {
    let node_dir: PathBuf = dir.join(format!("node-{port}"));
    std::fs::create_dir_all(&node_dir)?;
    let mut cmd = Command::new(program);
    cmd.args(["--bind", "127.0.0.1", "--protected-mode", "no", "--port"])
        .arg(port.to_string())
        .args([
            "--save",
            "",
            "--appendonly",
            "no",
            "--repl-diskless-sync-delay",
            "0",
            "--daemonize",
            "no",
            "--dir",
        ])
        .arg(&node_dir);
    if let Some(master) = replica_of {
        cmd.arg("--replicaof")
            .arg("127.0.0.1")
            .arg(master.to_string());
    }
    let log = node_dir.join("redis.log");
    let what = format!("redis-server on port {port}");
    spawn_ready(cmd, &log, port, None, &what, Duration::from_secs(10))
}
