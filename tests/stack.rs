//! The embedded stack names the port it cannot bind: the rocketmq-rust broker's own error
//! says only "Service lifecycle operation failed".

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

#[test]
fn a_broker_whose_fast_port_is_taken_exits_naming_that_port() {
    let (port, _fast) = port_with_fast_port_taken();
    let ha_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Command::new(env!("CARGO_BIN_EXE_rocketmq-dedup-stack"))
        .args(["broker", "--port", &port.to_string()])
        .args(["--ha-port", &ha_port.to_string()])
        .args(["--namesrv", "127.0.0.1:1", "--store"])
        .arg(dir.path().join("store"))
        .env("ROCKETMQ_HOME", dir.path())
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
            panic!("the broker kept running with its fast port taken");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut broker.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    let expected = format!("the broker's fast port (port - 2) 127.0.0.1:{}", port - 2);
    assert!(stderr.contains(&expected), "{stderr}");
}
