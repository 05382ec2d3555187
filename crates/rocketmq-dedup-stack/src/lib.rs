//! The rocketmq-rust 1.0.0 name server and broker, embedded: one role per process, bound to
//! 127.0.0.1, configured for tests and demos (fast retry delays, small files).
//!
//! ```text
//! rocketmq-dedup-stack namesrv --port 9876
//! rocketmq-dedup-stack broker  --port 10911 --ha-port 10912 --namesrv 127.0.0.1:9876 --store /tmp/store
//! ```
//!
//! Embedding (rather than `cargo install rocketmq-namesrv rocketmq-broker`) pins the broker
//! to the versions in Cargo.lock and builds it with the workspace, in the same target
//! directory as the tests: no global install step, and the shared crates (runtime, model,
//! protocol, transport) compile once.
//!
//! A program can serve these roles itself: call [`serve_if_requested`] first thing in `main`,
//! then start its stack with its own executable (the demo and the chaos run do).

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use cheetah_string::CheetahString;
use clap::{Parser, Subcommand};
use rocketmq_broker::config::broker_config::BrokerConfig;
use rocketmq_broker::config::validated::ValidatedBrokerConfig;
use rocketmq_broker::BrokerStartupError;
use rocketmq_model::common::mq_version::CURRENT_VERSION;
use rocketmq_protocol::protocol::remoting_command_facade::initialize_remoting_defaults;
use rocketmq_runtime::{RuntimeConfig, RuntimeOwner};
use rocketmq_store::MessageStoreConfig;
use rocketmq_transport::api::ServerConfig;

/// Loopback: every listener binds here.
const LOOPBACK: &str = "127.0.0.1";

/// The size of a commit log file: the broker also needs this much available to start.
const COMMIT_LOG_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// The broker marks its store full, and so fails its start, on a filesystem more than this
/// used, counted as (size - available) / size: rocketmq-store's disk warning ratio, which its
/// configuration caps at 90%.
const BROKER_MAX_DISK_USE: f64 = 0.90;

/// The command line of a stack process.
#[derive(Debug, Parser)]
#[command(
    name = "rocketmq-dedup-stack",
    about = "RocketMQ name server or broker on 127.0.0.1"
)]
pub struct Cli {
    /// The role to run.
    #[command(subcommand)]
    pub role: Role,
}

/// A stack role.
#[derive(Debug, Subcommand)]
pub enum Role {
    /// A name server.
    Namesrv {
        /// Listen port.
        #[arg(long, default_value_t = 9876)]
        port: u16,
        /// Where the name server keeps its KV config (default: `$ROCKETMQ_HOME` or a temp dir).
        #[arg(long)]
        home: Option<PathBuf>,
    },
    /// A broker; it also listens on `port - 2` and on the HA port.
    Broker {
        /// Listen port.
        #[arg(long, default_value_t = 10911)]
        port: u16,
        /// HA listen port.
        #[arg(long, default_value_t = 10912)]
        ha_port: u16,
        /// Name server address.
        #[arg(long, default_value = "127.0.0.1:9876")]
        namesrv: String,
        /// Store directory (commit log, queues, offsets).
        #[arg(long)]
        store: PathBuf,
        /// `messageDelayLevel`; the default brings the first retries back after 1 s.
        #[arg(
            long,
            default_value = "1s 1s 1s 1s 1s 1s 2s 3s 4s 5s 6s 7s 8s 9s 10s 20s 30s 1m"
        )]
        delay_levels: String,
    },
}

/// When the first argument is a role (`namesrv` or `broker`), serves it and exits the process;
/// otherwise returns and `main` goes on.
pub fn serve_if_requested() {
    let role = std::env::args().nth(1);
    if matches!(role.as_deref(), Some("namesrv" | "broker")) {
        let cli = Cli::parse();
        let code = match run(cli.role) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("rocketmq-dedup-stack: {e:#}");
                1
            }
        };
        std::process::exit(code);
    }
}

/// Runs `role` until SIGTERM or Ctrl-C.
pub fn run(role: Role) -> Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .try_init();
    if std::env::var_os("ROCKETMQ_HOME").is_none() {
        let home = std::env::temp_dir().join("rocketmq-dedup-home");
        std::fs::create_dir_all(&home)?;
        std::env::set_var("ROCKETMQ_HOME", &home);
    }
    initialize_remoting_defaults(CURRENT_VERSION as i32).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    match role {
        Role::Namesrv { port, home } => run_namesrv(port, home),
        Role::Broker {
            port,
            ha_port,
            namesrv,
            store,
            delay_levels,
        } => run_broker(port, ha_port, namesrv, store, delay_levels),
    }
}

async fn stop_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Fails, naming the port and what it is for, when something holds `port` on loopback: the
/// rocketmq-rust servers exit then, saying only "Service lifecycle operation failed".
fn ensure_free(port: u16, what: &str) -> Result<()> {
    std::net::TcpListener::bind((LOOPBACK, port))
        .map(drop)
        .with_context(|| format!("{what} {LOOPBACK}:{port} cannot be bound"))
}

/// How full the filesystem holding `path` is, as the broker counts it: (size - available) /
/// size, and the bytes available.
fn disk_use(path: &Path) -> std::io::Result<(f64, u64)> {
    let stat = rustix::fs::statvfs(path)?;
    let size = stat.f_blocks.saturating_mul(stat.f_frsize);
    let available = stat.f_bavail.saturating_mul(stat.f_frsize);
    let used = size.saturating_sub(available) as f64 / size.max(1) as f64;
    Ok((used, available))
}

/// Fails, saying how full it is, when the broker would refuse `store`'s filesystem: its own
/// error says only that `message_store_writable` is missing.
fn ensure_room(store: &Path) -> Result<()> {
    let (used, available) = disk_use(store)
        .with_context(|| format!("reading the filesystem of {}", store.display()))?;
    if used > BROKER_MAX_DISK_USE || available < COMMIT_LOG_FILE_BYTES {
        anyhow::bail!(
            "the broker's store {} is on a filesystem {:.1}% used (size - available) with {} MiB \
             available: the broker does not write above {:.0}% or with less than one commit log \
             file ({} MiB) available; give --store a directory on another filesystem (/dev/shm, say)",
            store.display(),
            used * 100.0,
            available >> 20,
            BROKER_MAX_DISK_USE * 100.0,
            COMMIT_LOG_FILE_BYTES >> 20,
        );
    }
    Ok(())
}

fn run_namesrv(port: u16, home: Option<PathBuf>) -> Result<()> {
    ensure_free(port, "the name server's port")?;
    let owner = RuntimeOwner::plan(RuntimeConfig::namesrv_default())
        .map_err(|e| anyhow::anyhow!("{e:?}"))?
        .build()
        .context("building the name server runtime")?;
    let home = match home {
        Some(home) => home,
        None => {
            PathBuf::from(std::env::var_os("ROCKETMQ_HOME").unwrap_or_default()).join("namesrv")
        }
    };
    std::fs::create_dir_all(&home)?;
    let config = rocketmq_namesrv::NamesrvConfig {
        kv_config_path: home.join("kvConfig.json").display().to_string(),
        config_store_path: home.join("namesrv.properties").display().to_string(),
        ..Default::default()
    };
    let server = ServerConfig {
        listen_port: u32::from(port),
        bind_address: LOOPBACK.to_owned(),
        ..ServerConfig::default()
    };
    let context = owner.root_context().component("namesrv");
    let bootstrap = rocketmq_namesrv::bootstrap::Builder::new(
        context,
        rocketmq_observability::TelemetryHandle::noop(),
    )
    .set_name_server_config(config)
    .set_server_config(server)
    .build();
    owner
        .block_on(bootstrap.boot_with_shutdown(stop_signal()))
        .map_err(|e| anyhow::anyhow!("name server failed: {e:?}"))
}

fn run_broker(
    port: u16,
    ha_port: u16,
    namesrv: String,
    store: PathBuf,
    delay_levels: String,
) -> Result<()> {
    ensure_free(port, "the broker's port")?;
    let fast_port = port
        .checked_sub(2)
        .context("the broker's port must be 2 or more: it also listens on port - 2")?;
    ensure_free(fast_port, "the broker's fast port (port - 2)")?;
    ensure_free(ha_port, "the broker's HA port")?;
    let owner = RuntimeOwner::plan(RuntimeConfig::broker_default())
        .map_err(|e| anyhow::anyhow!("{e:?}"))?
        .build()
        .context("building the broker runtime")?;
    std::fs::create_dir_all(&store)?;
    ensure_room(&store)?;
    let store_dir = CheetahString::from(store.display().to_string());
    let mut broker = BrokerConfig {
        broker_ip1: LOOPBACK.into(),
        broker_ip2: Some(LOOPBACK.into()),
        listen_port: u32::from(port),
        store_path_root_dir: store_dir.clone(),
        namesrv_addr: Some(namesrv.into()),
        ..BrokerConfig::default()
    };
    broker.broker_server_config.bind_address = LOOPBACK.to_owned();
    broker.broker_server_config.listen_port = u32::from(port);
    let message_store = MessageStoreConfig {
        store_path_root_dir: store_dir,
        ha_listen_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
        ha_listen_port: usize::from(ha_port),
        message_delay_level: delay_levels,
        mapped_file_size_commit_log: COMMIT_LOG_FILE_BYTES as usize,
        mapped_file_size_consume_queue: 600_000,
        max_hash_slot_num: 50_000,
        max_index_num: 200_000,
        ..MessageStoreConfig::default()
    };
    let validated = ValidatedBrokerConfig::try_from_parts(broker, message_store)
        .map_err(|e| anyhow::anyhow!("broker configuration rejected: {e:?}"))?;
    let context = owner.root_context().component("broker");
    owner.block_on(async move {
        let running = rocketmq_broker::Builder::new(
            context,
            rocketmq_observability::TelemetryRuntimeGuard::noop(),
        )
        .with_validated_config(validated)
        .build()
        .initialize()
        .await
        .map_err(|e| anyhow::anyhow!("broker initialization failed: {}", startup_failure(&e)))?
        .start()
        .await
        .map_err(|e| anyhow::anyhow!("broker start failed: {}", startup_failure(&e)))?;
        eprintln!("broker ready on {LOOPBACK}:{port}");
        stop_signal().await;
        running.shutdown().await;
        Ok(())
    })
}

/// A broker startup error with its causes, each with the phase and component the broker gives
/// it: its `Debug` shows only the outermost ("Service lifecycle operation failed", phase
/// Rollback), which names neither what failed nor why.
fn startup_failure(error: &BrokerStartupError) -> String {
    let mut parts = Vec::new();
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = next {
        parts.push(match error.downcast_ref::<BrokerStartupError>() {
            Some(startup) => describe_startup(startup),
            None => error.to_string(),
        });
        next = error.source();
    }
    parts.join(": ")
}

fn describe_startup(error: &BrokerStartupError) -> String {
    let mut text = format!("{error} (phase {:?}", error.phase());
    if let Some(component) = error.component() {
        text.push_str(&format!(", component {component}"));
    }
    if !error.missing_requirements().is_empty() {
        text.push_str(&format!(", missing {:?}", error.missing_requirements()));
    }
    if !error.unhealthy_components().is_empty() {
        text.push_str(&format!(", unhealthy {:?}", error.unhealthy_components()));
    }
    text.push(')');
    text
}
