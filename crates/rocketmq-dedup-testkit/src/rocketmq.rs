//! A real RocketMQ name server and broker on loopback.
//!
//! Both run as separate processes of a stack program: the workspace's
//! `rocketmq-dedup-stack` binary, which embeds the rocketmq-rust 1.0.0 name server and broker
//! (`rocketmq-dedup-stack namesrv …` / `rocketmq-dedup-stack broker …`). Tests get its path
//! from Cargo (`env!("CARGO_BIN_EXE_rocketmq-dedup-stack")`); programs that embed the stack
//! themselves pass their own executable.
//!
//! The broker marks its store full, and fails its start or its sends, on a filesystem more
//! than 90% used, counted as (size - available) / size: on a disk with reserved blocks that
//! reads fuller than `df`'s Use%. When the temp dir's filesystem is over 85% so counted, the
//! store goes to a directory of its own in `/dev/shm` ([`RocketMqStack::store_dir`]).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::{ChildProcess, TestkitError};

/// How to start the stack.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// The stack program (see the module docs).
    pub program: PathBuf,
    /// Arguments put before the role (`namesrv`/`broker`), for programs that serve the stack
    /// behind a subcommand.
    pub program_args: Vec<String>,
    /// The broker's `messageDelayLevel`: the default brings RECONSUME_LATER messages back in
    /// about a second.
    pub delay_levels: String,
    /// Where the stack's working directory (logs, the broker's store) is made; `None` is the
    /// system's temp dir. The store moves to `/dev/shm` when this filesystem is too full for
    /// the broker (see [`RocketMqStack::store_dir`]).
    pub temp_root: Option<PathBuf>,
}

/// The fast retry schedule used by tests: levels 3.. (the first retries) are 1 s.
pub const FAST_DELAY_LEVELS: &str = "1s 1s 1s 1s 1s 1s 2s 3s 4s 5s 6s 7s 8s 9s 10s 20s 30s 1m";

impl StackOptions {
    /// Options for `program` with the fast retry schedule.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        StackOptions {
            program: program.into(),
            program_args: Vec::new(),
            delay_levels: FAST_DELAY_LEVELS.to_owned(),
            temp_root: None,
        }
    }
}

/// A name server and a broker, started by [`RocketMqStack::start`], or the running stack
/// `ROCKETMQ_NAMESRV_ADDR` names.
#[derive(Debug)]
pub struct RocketMqStack {
    options: StackOptions,
    namesrv_port: u16,
    broker_port: u16,
    ha_port: u16,
    namesrv: Option<ChildProcess>,
    broker: Option<ChildProcess>,
    external_namesrv: Option<String>,
    dir: tempfile::TempDir,
    store: PathBuf,
    /// The store's own directory when it is not in `dir`.
    _store_dir: Option<tempfile::TempDir>,
}

const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How many sets of ports [`RocketMqStack::start`] tries.
const START_ATTEMPTS: u32 = 4;

/// Free loopback ports for a name server, a broker and its HA listener, all different: each
/// is held until the last is picked. The broker also listens on `broker - 2`, its fast port,
/// so that one is free too.
fn stack_ports() -> std::io::Result<(u16, u16, u16)> {
    use crate::hold_free_port as hold;
    let mut held = Vec::new();
    let namesrv = hold(&mut held)?;
    let ha = hold(&mut held)?;
    for _ in 0..100 {
        let broker = hold(&mut held)?;
        if broker > 1026 && TcpListener::bind(("127.0.0.1", broker - 2)).is_ok() {
            return Ok((namesrv, broker, ha));
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "no free port p with p - 2 free for the broker",
    ))
}

/// The most a filesystem may be used, as the broker counts it ((size - available) / size), to
/// hold a test broker's store. The broker marks its store full above 90% (rocketmq-store's
/// disk warning ratio, which its configuration caps at 90%) and then fails its start or its
/// sends; the margin is for a disk that fills further during a run.
const STORE_MAX_DISK_USE: f64 = 0.85;

/// The least a filesystem must have available to hold a test broker's store.
const STORE_MIN_AVAILABLE: u64 = 1 << 30;

/// The tmpfs a store goes to when the working directory's filesystem cannot hold it.
const SHARED_MEMORY: &str = "/dev/shm";

/// How full the filesystem holding `path` is, as the broker counts it: (size - available) /
/// size, and the bytes available.
fn disk_use(path: &Path) -> std::io::Result<(f64, u64)> {
    let stat = rustix::fs::statvfs(path)?;
    let size = stat.f_blocks.saturating_mul(stat.f_frsize);
    let available = stat.f_bavail.saturating_mul(stat.f_frsize);
    Ok((
        size.saturating_sub(available) as f64 / size.max(1) as f64,
        available,
    ))
}

fn has_room((used, available): (f64, u64)) -> bool {
    used <= STORE_MAX_DISK_USE && available >= STORE_MIN_AVAILABLE
}

/// Where the broker keeps its store: `dir/store`, or a directory of its own in `/dev/shm`
/// (returned to be kept until the stack is dropped) when `dir`'s filesystem has no room.
fn broker_store(dir: &Path) -> Result<(PathBuf, Option<tempfile::TempDir>), TestkitError> {
    let (used, available) = disk_use(dir)?;
    if has_room((used, available)) {
        return Ok((dir.join("store"), None));
    }
    let why = format!(
        "{} is on a filesystem {:.1}% used with {} MiB available (the testkit wants at most \
         {:.0}% and {} MiB: the broker refuses writes above 90%)",
        dir.display(),
        used * 100.0,
        available >> 20,
        STORE_MAX_DISK_USE * 100.0,
        STORE_MIN_AVAILABLE >> 20,
    );
    let shm = Path::new(SHARED_MEMORY);
    if shm.is_dir() && disk_use(shm).is_ok_and(has_room) {
        let store = tempfile::Builder::new()
            .prefix("dedup-rocketmq-store-")
            .tempdir_in(shm)?;
        eprintln!(
            "testkit: {why}; the broker's store goes to {}",
            store.path().display()
        );
        return Ok((store.path().to_owned(), Some(store)));
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::StorageFull,
        format!("no room for a broker's store: {why}, and {SHARED_MEMORY} is missing or as full"),
    )
    .into())
}

impl RocketMqStack {
    /// The stack `ROCKETMQ_NAMESRV_ADDR` names, else a new one from `options`.
    pub fn start(options: StackOptions) -> Result<Self, TestkitError> {
        let prefix = "dedup-rocketmq-";
        let dir = match &options.temp_root {
            Some(root) => tempfile::Builder::new().prefix(prefix).tempdir_in(root)?,
            None => tempfile::Builder::new().prefix(prefix).tempdir()?,
        };
        let mut stack = RocketMqStack {
            options,
            namesrv_port: 0,
            broker_port: 0,
            ha_port: 0,
            namesrv: None,
            broker: None,
            external_namesrv: None,
            dir,
            store: PathBuf::new(),
            _store_dir: None,
        };
        if let Ok(addr) = std::env::var("ROCKETMQ_NAMESRV_ADDR") {
            if !addr.is_empty() {
                stack.external_namesrv = Some(addr);
                return Ok(stack);
            }
        }
        if !stack.options.program.is_file() {
            return Err(TestkitError::NotInstalled {
                program: stack.options.program.display().to_string(),
                hint: "build it with `cargo build --bin rocketmq-dedup-stack`".into(),
            });
        }
        (stack.store, stack._store_dir) = broker_store(stack.dir.path())?;
        // A port picked free can be taken before the server binds it (by another server or
        // a client's outgoing connection); the server then exits, and the stack starts again
        // on new ports.
        let mut attempt = 1;
        loop {
            (stack.namesrv_port, stack.broker_port, stack.ha_port) = stack_ports()?;
            match stack.start_namesrv().and_then(|()| stack.start_broker()) {
                Ok(()) => return Ok(stack),
                Err(e @ TestkitError::Exited { .. }) if attempt < START_ATTEMPTS => {
                    eprintln!("testkit: RocketMQ stack attempt {attempt} failed, new ports: {e}");
                    stack.kill_broker();
                    stack.kill_namesrv();
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The broker's address (`127.0.0.1:port`); `None` for a running stack named by
    /// `ROCKETMQ_NAMESRV_ADDR` (ask its name server).
    pub fn broker_addr(&self) -> Option<String> {
        match &self.external_namesrv {
            Some(_) => None,
            None => Some(format!("127.0.0.1:{}", self.broker_port)),
        }
    }

    /// The name server address clients use (`127.0.0.1:port`).
    pub fn namesrv_addr(&self) -> String {
        match &self.external_namesrv {
            Some(addr) => addr.clone(),
            None => format!("127.0.0.1:{}", self.namesrv_port),
        }
    }

    /// Whether this is an external stack (it cannot be stopped or restarted).
    pub fn is_external(&self) -> bool {
        self.external_namesrv.is_some()
    }

    /// The working directory (logs, and the broker's store unless it is in `/dev/shm`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The broker's store: in [`dir`](Self::dir), or in `/dev/shm` when that filesystem is
    /// more than 85% used, counted as the broker counts it ((size - available) / size), or has
    /// less than 1 GiB available: the broker refuses writes, and so fails its start, above 90%.
    /// Empty for a running stack named by `ROCKETMQ_NAMESRV_ADDR`.
    pub fn store_dir(&self) -> &Path {
        &self.store
    }

    fn command(&self, role: &str) -> Command {
        let mut cmd = Command::new(&self.options.program);
        cmd.args(&self.options.program_args).arg(role);
        cmd.env("ROCKETMQ_HOME", self.dir.path());
        cmd.env(
            "RUST_LOG",
            std::env::var("STACK_LOG").unwrap_or_else(|_| "warn".into()),
        );
        cmd
    }

    /// Starts the name server (again, after [`kill_namesrv`](Self::kill_namesrv)).
    pub fn start_namesrv(&mut self) -> Result<(), TestkitError> {
        if self.is_external() {
            return Err(std::io::Error::other("an external stack cannot be restarted").into());
        }
        let mut cmd = self.command("namesrv");
        cmd.arg("--port").arg(self.namesrv_port.to_string());
        let log = self.dir.path().join("namesrv.log");
        let mut process = ChildProcess::spawn(cmd, &log)?;
        let port = self.namesrv_port;
        process.wait_ready(format!("name server on port {port}"), READY_TIMEOUT, || {
            crate::wait_for_port(port, Duration::from_millis(100))
        })?;
        self.namesrv = Some(process);
        Ok(())
    }

    /// Starts the broker (again, after [`kill_broker`](Self::kill_broker)); its store survives.
    pub fn start_broker(&mut self) -> Result<(), TestkitError> {
        if self.is_external() {
            return Err(std::io::Error::other("an external stack cannot be restarted").into());
        }
        let mut cmd = self.command("broker");
        cmd.arg("--port")
            .arg(self.broker_port.to_string())
            .arg("--ha-port")
            .arg(self.ha_port.to_string())
            .arg("--namesrv")
            .arg(self.namesrv_addr())
            .arg("--store")
            .arg(&self.store)
            .arg("--delay-levels")
            .arg(&self.options.delay_levels);
        let log = self.dir.path().join("broker.log");
        let mut process = ChildProcess::spawn(cmd, &log)?;
        let port = self.broker_port;
        process.wait_ready(format!("broker on port {port}"), READY_TIMEOUT, || {
            crate::wait_for_port(port, Duration::from_millis(100))
        })?;
        self.broker = Some(process);
        // The broker registers with the name server right after it listens; give the first
        // registration a moment so that clients find its route.
        std::thread::sleep(Duration::from_millis(1500));
        Ok(())
    }

    /// SIGKILLs the broker.
    pub fn kill_broker(&mut self) {
        if let Some(mut p) = self.broker.take() {
            p.kill();
        }
    }

    /// SIGKILLs the name server.
    pub fn kill_namesrv(&mut self) {
        if let Some(mut p) = self.namesrv.take() {
            p.kill();
        }
    }

    /// SIGKILLs the broker and starts it again on the same ports and store.
    pub fn restart_broker(&mut self) -> Result<(), TestkitError> {
        self.kill_broker();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while crate::wait_for_port(self.broker_port, Duration::from_millis(10)) {
            if std::time::Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.start_broker()
    }

    /// The last lines of the broker's log.
    pub fn broker_log_tail(&self, lines: usize) -> String {
        self.broker
            .as_ref()
            .map(|p| p.log_tail(lines))
            .unwrap_or_default()
    }
}

impl Drop for RocketMqStack {
    fn drop(&mut self) {
        // Broker first, so it does not spin on a vanished name server.
        self.kill_broker();
        self.kill_namesrv();
    }
}
