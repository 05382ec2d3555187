//! A data directory made once per machine and copied for every server: initialising a
//! database cluster takes seconds, copying it a fraction of one.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::TestkitError;

/// The template directory `name` under the system temp dir, made by `make` (into a fresh
/// directory it is given) the first time. Concurrent first calls each make one; the first to
/// finish is kept.
pub(crate) fn cached(
    name: &str,
    make: impl FnOnce(&Path) -> Result<(), TestkitError>,
) -> Result<PathBuf, TestkitError> {
    let uid = current_uid();
    let path = std::env::temp_dir().join(format!("rocketmq-dedup-{name}-{uid}"));
    if path.join(".complete").is_file() {
        return Ok(path);
    }
    let scratch = tempfile::Builder::new()
        .prefix(&format!("rocketmq-dedup-{name}-new-"))
        .tempdir()?
        .keep();
    make(&scratch)?;
    std::fs::write(scratch.join(".complete"), b"")?;
    match std::fs::rename(&scratch, &path) {
        Ok(()) => Ok(path),
        Err(_) if path.join(".complete").is_file() => {
            let _ = std::fs::remove_dir_all(&scratch);
            Ok(path)
        }
        Err(e) => Err(e.into()),
    }
}

/// Copies `from` to `to` with owners and modes (`cp -a`).
pub(crate) fn copy(from: &Path, to: &Path) -> Result<(), TestkitError> {
    let status = Command::new("cp").arg("-a").arg(from).arg(to).status()?;
    if !status.success() {
        return Err(std::io::Error::other(format!("cp -a {} failed", from.display())).into());
    }
    Ok(())
}

/// Runs `cmd`; its output goes into the error when it fails.
pub(crate) fn run(cmd: &mut Command, what: &str) -> Result<(), TestkitError> {
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
        .into());
    }
    Ok(())
}

/// The user id, from `id -u` (this crate forbids `unsafe`, so no `getuid`).
pub(crate) fn current_uid() -> String {
    Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "0".to_owned())
}

/// Whether this process runs as root.
pub(crate) fn is_root() -> bool {
    current_uid() == "0"
}
