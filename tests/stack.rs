//! The embedded stack names the port it cannot bind and the filesystem it cannot write: the
//! rocketmq-rust broker's own error says only "Service lifecycle operation failed". The
//! testkit keeps a broker's store off a filesystem the broker would refuse.

mod common;

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rocketmq_dedup_testkit::{free_port, unique_name, ClientEnv, RocketMqStack, StackOptions};

/// A broker port `p` whose fast port `p - 2` is held by `listener`.
fn port_with_fast_port_taken() -> (u16, TcpListener) {
    for _ in 0..100 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = listener.local_addr().unwrap().port();
        if let Some(port) = taken.checked_add(2) {
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return (port, listener);
            }
        }
    }
    panic!("no free port p with p - 2 free");
}

/// Runs a broker on `port` with its store at `store` until it exits (it must, within a
/// minute: `why` says why it should); its exit code and what it printed.
fn broker_exit(port: u16, store: &Path, why: &str) -> (Option<i32>, String) {
    let home = tempfile::tempdir().unwrap();
    let mut broker = Command::new(env!("CARGO_BIN_EXE_rocketmq-dedup-stack"))
        .args(["broker", "--port", &port.to_string()])
        .args(["--ha-port", &free_port().unwrap().to_string()])
        .args(["--namesrv", "127.0.0.1:1", "--store"])
        .arg(store)
        .env("ROCKETMQ_HOME", home.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = broker.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            broker.kill().unwrap();
            panic!("the broker kept running with {why}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut broker.stderr.take().unwrap(), &mut stderr).unwrap();
    (status.code(), stderr)
}

#[test]
fn a_broker_whose_fast_port_is_taken_exits_naming_that_port() {
    let (port, _fast) = port_with_fast_port_taken();
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = broker_exit(port, &dir.path().join("store"), "its fast port taken");
    assert_eq!(code, Some(1), "{stderr}");
    let expected = format!("the broker's fast port (port - 2) 127.0.0.1:{}", port - 2);
    assert!(stderr.contains(&expected), "{stderr}");
}

/// A tmpfs of `size_mib` mounted on a temp dir, filled until `filled_mib` are used; unmounted
/// on drop. `None` where this process may not mount (not root, no CAP_SYS_ADMIN).
struct FullFilesystem {
    dir: tempfile::TempDir,
}

impl FullFilesystem {
    fn mount(size_mib: u32, filled_mib: u32) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !mounted {
            return None;
        }
        let filesystem = FullFilesystem { dir };
        // Written, not set_len: a sparse file takes no room on tmpfs.
        let mut fill = std::fs::File::create(filesystem.path().join("fill")).unwrap();
        let mib = vec![0u8; 1 << 20];
        for _ in 0..filled_mib {
            fill.write_all(&mib).unwrap();
        }
        Some(filesystem)
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for FullFilesystem {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn a_broker_whose_store_is_on_a_filesystem_over_90_percent_used_exits_saying_so() {
    // 92% used with 80 MiB available: room for a 64 MiB commit log file, but over the 90%
    // above which the broker marks its store full and fails its start.
    let Some(full) = FullFilesystem::mount(1000, 920) else {
        eprintln!("skipped: this process cannot mount a tmpfs");
        return;
    };
    // The ports are checked first: this one's fast port is free (its holder dropped).
    let (port, fast) = port_with_fast_port_taken();
    drop(fast);
    let store = full.path().join("store");
    let (code, stderr) = broker_exit(port, &store, "a full disk");
    assert_eq!(code, Some(1), "{stderr}");
    let expected = format!(
        "the broker's store {} is on a filesystem 92.0% used (size - available)",
        store.display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(
        stderr.contains("the broker does not write above 90%"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_stack_whose_temp_dir_is_on_a_full_filesystem_keeps_its_store_in_dev_shm_and_takes_messages(
) {
    let Some(full) = FullFilesystem::mount(1000, 920) else {
        eprintln!("skipped: this process cannot mount a tmpfs");
        return;
    };
    let options = StackOptions {
        temp_root: Some(full.path().to_owned()),
        ..StackOptions::new(env!("CARGO_BIN_EXE_rocketmq-dedup-stack"))
    };
    let stack = RocketMqStack::start(options).expect("the stack starts with its store elsewhere");
    assert!(stack.dir().starts_with(full.path()), "{:?}", stack.dir());
    let store: PathBuf = stack.store_dir().to_owned();
    assert!(store.starts_with("/dev/shm"), "{store:?}");

    let client = ClientEnv::new("full-disk").unwrap();
    let producer = client.producer(&stack.namesrv_addr()).await.unwrap();
    send(&producer, &order(&unique_name("Orders"), "order-1")).await;
    assert!(
        store.join("commitlog").read_dir().unwrap().next().is_some(),
        "no commit log file in {store:?}"
    );
    drop(stack);
    assert!(!store.exists(), "{store:?} outlived its stack");
}
