//! A child process that dies with its handle.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

/// Why a test server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    /// The program is not installed.
    #[error("{program} not found: {hint}")]
    NotInstalled {
        /// The program.
        program: String,
        /// How to install it.
        hint: String,
    },
    /// The server ran but did not come up in time.
    #[error("{what} did not become ready within {seconds}s; the end of its log ({log}):\n{tail}")]
    NotReady {
        /// Which server.
        what: String,
        /// The wait.
        seconds: u64,
        /// Where its output went.
        log: PathBuf,
        /// The last lines of that log.
        tail: String,
    },
    /// The server exited before it came up (a port taken since it was picked, a bad
    /// configuration).
    #[error(
        "{what} exited before it became ready ({status}); the end of its log ({log}):\n{tail}"
    )]
    Exited {
        /// Which server.
        what: String,
        /// How it exited.
        status: String,
        /// Where its output went.
        log: PathBuf,
        /// The last lines of that log.
        tail: String,
    },
    /// An I/O error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// How many lines of a server's log a start error quotes.
const TAIL_LINES: usize = 12;

impl TestkitError {
    /// Why `process` (`what`) is not ready after `waited`: it exited, or it is still starting.
    pub(crate) fn not_ready(
        what: impl Into<String>,
        waited: std::time::Duration,
        process: &mut ChildProcess,
    ) -> Self {
        let (what, log, tail) = (
            what.into(),
            process.log.clone(),
            process.log_tail(TAIL_LINES),
        );
        match process.exit_status() {
            Some(status) => TestkitError::Exited {
                what,
                status: status.to_string(),
                log,
                tail,
            },
            None => TestkitError::NotReady {
                what,
                seconds: waited.as_secs(),
                log,
                tail,
            },
        }
    }
}

/// A running child process, killed (SIGKILL) and reaped on drop.
#[derive(Debug)]
pub struct ChildProcess {
    child: Option<Child>,
    log: PathBuf,
}

impl ChildProcess {
    /// Spawns `command` with stdout and stderr appended to `log`.
    pub fn spawn(mut command: Command, log: &Path) -> std::io::Result<Self> {
        let out = File::options().create(true).append(true).open(log)?;
        let err = out.try_clone()?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()?;
        Ok(ChildProcess {
            child: Some(child),
            log: log.to_owned(),
        })
    }

    /// The process id, while it runs.
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Where its output goes.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.exit_status().is_none()
    }

    /// Polls `ready` until it answers true, for up to `timeout`; fails as soon as the process
    /// exits, with its status and the end of its log (`what` names it).
    pub(crate) fn wait_ready(
        &mut self,
        what: impl Into<String>,
        timeout: std::time::Duration,
        mut ready: impl FnMut() -> bool,
    ) -> Result<(), TestkitError> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline && self.is_running() {
            if ready() {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Err(TestkitError::not_ready(what, timeout, self))
    }

    /// How it exited, once it has (`None` while it runs, or after [`kill`](Self::kill)).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// SIGKILLs it and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops it in place (SIGSTOP): it keeps its sockets and answers nothing until resumed.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Lets a paused process run again (SIGCONT).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) {
        if let Some(pid) = self.id() {
            let _ = Command::new("kill")
                .arg(format!("-{name}"))
                .arg(pid.to_string())
                .status();
        }
    }

    /// SIGTERMs it (through `kill -TERM`) and waits up to `grace` before SIGKILL.
    pub fn terminate(&mut self, grace: std::time::Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The last `lines` lines of its log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Finds `program` on `PATH`.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}
