//! A real PostgreSQL server (Debian's `postgresql`) on loopback, or the server `DATABASE_URL`
//! names.
//!
//! The cluster comes from a template made once per machine by `initdb` (trust
//! authentication, loopback only). PostgreSQL refuses to run as root, so a root test process
//! runs it as the `postgres` user (through `setpriv`, which keeps the process id, so a SIGKILL
//! reaches the server itself).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::{ChildProcess, TestkitError};
use crate::template;

/// A `postgres` process on 127.0.0.1, or the server `DATABASE_URL` names.
#[derive(Debug)]
pub struct PostgresServer {
    url: String,
    port: u16,
    /// `None` when the server is external (`DATABASE_URL`) or stopped.
    process: Option<ChildProcess>,
    external: bool,
    dir: tempfile::TempDir,
}

const READY_TIMEOUT: Duration = Duration::from_secs(30);

impl PostgresServer {
    /// The server `DATABASE_URL` names, else a new local one.
    pub fn start() -> Result<Self, TestkitError> {
        match std::env::var("DATABASE_URL") {
            Ok(url) if !url.is_empty() => Ok(PostgresServer {
                url,
                port: 0,
                process: None,
                external: true,
                dir: tempfile::tempdir()?,
            }),
            _ => Self::start_local(),
        }
    }

    /// A new local server (never the external one).
    pub fn start_local() -> Result<Self, TestkitError> {
        let template = template::cached("postgres-template", make_template)?;
        let dir = tempfile::Builder::new()
            .prefix("dedup-postgres-")
            .tempdir()?;
        let data = dir.path().join("data");
        template::copy(&template, &data)?;
        // The server refuses a data directory others can read.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700))?;
        give_to_postgres(dir.path())?;
        let mut server = PostgresServer {
            url: String::new(),
            port: 0,
            process: None,
            external: false,
            dir,
        };
        let mut last = None;
        for _ in 0..5 {
            server.port = crate::free_port()?;
            match server.launch() {
                Ok(()) => {
                    server.url = format!("postgres://postgres@127.0.0.1:{}/postgres", server.port);
                    return Ok(server);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("postgres did not start").into()))
    }

    fn launch(&mut self) -> Result<(), TestkitError> {
        let dir = self.dir.path();
        let mut cmd = as_postgres(&bin("postgres")?);
        cmd.arg("-D")
            .arg(dir.join("data"))
            .args(["-c", "listen_addresses=127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-k")
            .arg(dir)
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .args(["-c", "max_connections=300"])
            // Dynamic shared memory in the data directory (`pg_dynshmem`), which goes with it;
            // the default (`posix`, files in /dev/shm) outlives a SIGKILLed server.
            .args(["-c", "dynamic_shared_memory_type=mmap"]);
        let log = dir.join("postgres.log");
        let mut process = ChildProcess::spawn(cmd, &log)?;
        process.wait_ready(
            format!("postgres on port {}", self.port),
            READY_TIMEOUT,
            || crate::wait_for_port(self.port, Duration::from_millis(50)) && self.ready(),
        )?;
        self.process = Some(process);
        Ok(())
    }

    fn ready(&self) -> bool {
        bin("pg_isready").is_ok_and(|program| {
            Command::new(program)
                .args(["-h", "127.0.0.1", "-p"])
                .arg(self.port.to_string())
                .output()
                .is_ok_and(|o| o.status.success())
        })
    }

    /// The URL clients connect to (`postgres://postgres@127.0.0.1:<port>/postgres`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether this is the server `DATABASE_URL` names (it cannot be stopped or restarted).
    pub fn is_external(&self) -> bool {
        self.external
    }

    /// The server's directory (its data directory is `data` in it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The id of the System V shared memory segment the running server holds (the one
    /// `postmaster.pid` records, line 7: key and id).
    pub fn shared_memory_id(&self) -> Option<String> {
        let pid_file = std::fs::read_to_string(self.dir.path().join("data/postmaster.pid")).ok()?;
        let line = pid_file.lines().nth(6)?;
        line.split_whitespace().nth(1).map(str::to_owned)
    }

    /// SIGKILLs the server (its backends exit when the postmaster is gone) and removes its
    /// System V shared memory segment, which a SIGKILL leaves behind (it goes when the last
    /// backend detaches).
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            let segment = self.shared_memory_id();
            p.kill();
            if let Some(id) = segment {
                let _ = Command::new("ipcrm").args(["-m", &id]).status();
            }
        }
    }

    /// Starts the stopped server again on the same port and data (crash recovery included).
    pub fn restart(&mut self) -> Result<(), TestkitError> {
        if self.external {
            return Err(std::io::Error::other("an external server cannot be restarted").into());
        }
        self.kill();
        // Orphaned backends hold the shared memory until they notice; wait for the lock.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let _ = std::fs::remove_file(self.dir.path().join("data/postmaster.pid"));
            match self.launch() {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Debian keeps the server programs off `PATH`.
fn bin(program: &str) -> Result<PathBuf, TestkitError> {
    let debian = Path::new("/usr/lib/postgresql");
    let versions = std::fs::read_dir(debian)
        .ok()
        .into_iter()
        .flatten()
        .flatten();
    let mut found: Vec<PathBuf> = versions
        .map(|v| v.path().join("bin").join(program))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found
        .pop()
        .or_else(|| crate::process::find_program(program))
        .ok_or_else(|| TestkitError::NotInstalled {
            program: program.into(),
            hint: "apt-get install -y postgresql (or set DATABASE_URL)".into(),
        })
}

/// `program`, run as the `postgres` user when this process is root.
fn as_postgres(program: &Path) -> Command {
    if !template::is_root() {
        return Command::new(program);
    }
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=postgres",
        "--regid=postgres",
        "--init-groups",
        "--",
    ])
    .arg(program)
    .current_dir("/tmp");
    cmd
}

/// Hands `dir` (recursively) to the `postgres` user when this process is root.
fn give_to_postgres(dir: &Path) -> Result<(), TestkitError> {
    if template::is_root() {
        template::run(
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir),
            "chown",
        )?;
    }
    Ok(())
}

/// Makes the template cluster with `initdb`.
fn make_template(dir: &Path) -> Result<(), TestkitError> {
    give_to_postgres(dir)?;
    let mut cmd = as_postgres(&bin("initdb")?);
    cmd.arg("-D")
        .arg(dir.join("data"))
        .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"])
        .arg("--locale=C.UTF-8");
    template::run(&mut cmd, "initdb")?;
    // The copy is made from `<template>/data`; keep the template itself a plain directory.
    let inner = dir.join("data");
    for entry in std::fs::read_dir(&inner)? {
        let entry = entry?;
        std::fs::rename(entry.path(), dir.join(entry.file_name()))?;
    }
    std::fs::remove_dir(inner)?;
    Ok(())
}
