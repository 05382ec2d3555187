//! `cargo xtask <command>`: the repository's tasks, so that a fresh machine needs two commands.
//!
//! - `cargo xtask test`: installs what a fresh Debian machine lacks for the tests
//!   (`redis-server`, `mariadb-server`, `postgresql` with `apt-get` when run as root, and
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

const NEEDED: [Needed; 3] = [
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
        println!("xtask: redis-server, mariadbd and PostgreSQL are installed");
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
    if !cargo_has("nextest") {
        println!("xtask: installing cargo-nextest (cargo install --locked cargo-nextest)");
        run(Command::new(cargo_program()).args(["install", "--locked", "cargo-nextest"]))?;
    }
    Ok(())
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
    if on_path(&program) {
        return true;
    }
    let home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")));
    home.is_some_and(|h| h.join("bin").join(&program).is_file())
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
