//! A real MariaDB server (Debian's `mariadb-server`) on loopback, or the server `MYSQL_URL`
//! names.
//!
//! The data directory comes from a template made once per machine by `mariadb-install-db`
//! (with the user `test`/`test` and the database `testdb`), so a server is ready in about half
//! a second. Commits are durable (`innodb_flush_log_at_trx_commit=1`), so a SIGKILL keeps
//! what was committed, as crash tests need.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::{find_program, ChildProcess, TestkitError};
use crate::template;

/// A `mariadbd` process on 127.0.0.1, or the server `MYSQL_URL` names.
#[derive(Debug)]
pub struct MariaDbServer {
    url: String,
    port: u16,
    /// `None` when the server is external (`MYSQL_URL`) or stopped.
    process: Option<ChildProcess>,
    external: bool,
    dir: tempfile::TempDir,
}

const READY_TIMEOUT: Duration = Duration::from_secs(30);

impl MariaDbServer {
    /// The server `MYSQL_URL` names, else a new local one.
    pub fn start() -> Result<Self, TestkitError> {
        match std::env::var("MYSQL_URL") {
            Ok(url) if !url.is_empty() => Ok(MariaDbServer {
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
        let template = template::cached("mariadb-template", make_template)?;
        let dir = tempfile::Builder::new()
            .prefix("dedup-mariadb-")
            .tempdir()?;
        template::copy(&template, &dir.path().join("data"))?;
        let mut server = MariaDbServer {
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
                    server.url = format!("mysql://test:test@127.0.0.1:{}/testdb", server.port);
                    return Ok(server);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("mariadbd did not start").into()))
    }

    fn launch(&mut self) -> Result<(), TestkitError> {
        let mut cmd = mariadbd(&self.dir.path().join("data"), &self.socket())?;
        cmd.arg(format!("--port={}", self.port))
            .arg("--bind-address=127.0.0.1");
        let log = self.dir.path().join("mariadb.log");
        let mut process = ChildProcess::spawn(cmd, &log)?;
        process.wait_ready(
            format!("mariadbd on port {}", self.port),
            READY_TIMEOUT,
            || crate::wait_for_port(self.port, Duration::from_millis(50)) && self.ping(),
        )?;
        self.process = Some(process);
        Ok(())
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("mysqld.sock")
    }

    fn ping(&self) -> bool {
        Command::new("mariadb-admin")
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket().display()))
            .args(["-uroot", "ping"])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// The URL clients connect to (`mysql://test:test@127.0.0.1:<port>/testdb`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether this is the server `MYSQL_URL` names (it cannot be stopped or restarted).
    pub fn is_external(&self) -> bool {
        self.external
    }

    /// Runs `sql` as root over the server's socket (for what the test user may not do, such
    /// as `SET GLOBAL read_only = 1`).
    pub fn execute_as_root(&self, sql: &str) -> Result<(), TestkitError> {
        template::run(
            Command::new("mariadb")
                .arg("--no-defaults")
                .arg(format!("--socket={}", self.socket().display()))
                .args(["-uroot", "-e", sql]),
            "mariadb -e",
        )
    }

    /// SIGKILLs the server.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// Starts the stopped server again on the same port and data (crash recovery included).
    pub fn restart(&mut self) -> Result<(), TestkitError> {
        if self.external {
            return Err(std::io::Error::other("an external server cannot be restarted").into());
        }
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.launch() {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }
}

/// The `mariadbd` command for `data`, listening on `socket` (and nowhere else unless told).
fn mariadbd(data: &Path, socket: &Path) -> Result<Command, TestkitError> {
    let program = find_program("mariadbd").ok_or_else(|| TestkitError::NotInstalled {
        program: "mariadbd".into(),
        hint: "apt-get install -y --no-install-recommends mariadb-server (or set MYSQL_URL)".into(),
    })?;
    // Its own temporary files beside its data, not in the /tmp every test server shares (a
    // full run once met "Error on delete of '/tmp/#sql-temptable-…'" reading
    // information_schema).
    let tmp = data.with_file_name("tmp");
    std::fs::create_dir_all(&tmp)?;
    let mut cmd = Command::new(program);
    // --no-defaults must come first, or /etc/mysql/*.cnf is read.
    cmd.arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--tmpdir={}", tmp.display()))
        .arg(format!("--socket={}", socket.display()))
        .arg(format!("--pid-file={}", data.join("mysqld.pid").display()))
        .args([
            "--skip-name-resolve",
            "--innodb-log-file-size=8M",
            "--innodb-buffer-pool-size=64M",
            "--innodb-flush-log-at-trx-commit=1",
            "--max-connections=500",
        ]);
    if template::is_root() {
        cmd.arg("--user=root");
    }
    Ok(cmd)
}

/// Makes the template: `mariadb-install-db`, then the test user and database.
fn make_template(dir: &Path) -> Result<(), TestkitError> {
    let install = find_program("mariadb-install-db").ok_or_else(|| TestkitError::NotInstalled {
        program: "mariadb-install-db".into(),
        hint: "apt-get install -y --no-install-recommends mariadb-server".into(),
    })?;
    let mut cmd = Command::new(install);
    cmd.arg("--no-defaults")
        .arg(format!("--datadir={}", dir.display()))
        .args([
            "--auth-root-authentication-method=socket",
            "--skip-test-db",
            "--innodb-log-file-size=8M",
        ]);
    if template::is_root() {
        cmd.arg("--user=root");
    }
    template::run(&mut cmd, "mariadb-install-db")?;
    let sockdir = tempfile::tempdir()?;
    let socket = sockdir.path().join("t.sock");
    let mut server = mariadbd(dir, &socket)?;
    server.arg("--skip-networking");
    let mut process = ChildProcess::spawn(server, &sockdir.path().join("t.log"))?;
    let client = |sql: &str| {
        Command::new("mariadb")
            .arg("--no-defaults")
            .arg(format!("--socket={}", socket.display()))
            .args(["-uroot", "-e", sql])
            .output()
    };
    process.wait_ready("template mariadbd", READY_TIMEOUT, || {
        client("SELECT 1").is_ok_and(|o| o.status.success())
    })?;
    let setup = "CREATE USER 'test'@'127.0.0.1' IDENTIFIED BY 'test'; \
                 CREATE DATABASE testdb; \
                 GRANT ALL PRIVILEGES ON testdb.* TO 'test'@'127.0.0.1';";
    let out = client(setup)?;
    if !out.status.success() {
        return Err(
            std::io::Error::other(String::from_utf8_lossy(&out.stderr).into_owned()).into(),
        );
    }
    process.terminate(Duration::from_secs(20));
    Ok(())
}
