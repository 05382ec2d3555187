//! The database servers start, answer and restart.

use rocketmq_dedup_testkit::{MariaDbServer, PostgresServer};

#[test]
fn a_mariadb_server_starts_and_restarts() {
    let started = std::time::Instant::now();
    let mut server = MariaDbServer::start_local().unwrap();
    println!("mariadb ready in {:?}: {}", started.elapsed(), server.url());
    server.execute_as_root("SELECT 1").unwrap();
    server.restart().unwrap();
    server.execute_as_root("SELECT 1").unwrap();
}

#[test]
fn a_postgres_server_starts_and_restarts() {
    let started = std::time::Instant::now();
    let mut server = PostgresServer::start_local().unwrap();
    println!(
        "postgres ready in {:?}: {}",
        started.elapsed(),
        server.url()
    );
    server.restart().unwrap();
}

/// A killed server leaves no shared memory behind: its System V segment is removed and its
/// dynamic shared memory is in its data directory, not in /dev/shm (where hundreds of killed
/// test servers had left a gigabyte).
#[test]
fn a_killed_postgres_server_leaves_no_shared_memory_behind() {
    let mut server = PostgresServer::start_local().unwrap();
    let first = server
        .shared_memory_id()
        .expect("postmaster.pid names a segment");
    assert!(segment_exists(&first), "segment {first} while running");
    let dynshmem = server.dir().join("data/pg_dynshmem");
    assert!(
        std::fs::read_dir(&dynshmem).unwrap().next().is_some(),
        "no dynamic shared memory in {dynshmem:?}"
    );
    server.restart().unwrap();
    let second = server.shared_memory_id().unwrap();
    drop(server);
    for id in [first, second] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while segment_exists(&id) {
            assert!(
                std::time::Instant::now() < deadline,
                "segment {id} outlived its server"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

/// Whether `ipcs -m` lists the segment `id` (`ipcs -m -i` exits 0 for an unknown id too).
fn segment_exists(id: &str) -> bool {
    let listing = std::process::Command::new("ipcs")
        .arg("-m")
        .output()
        .unwrap();
    String::from_utf8_lossy(&listing.stdout)
        .lines()
        .any(|line| line.split_whitespace().nth(1) == Some(id))
}

/// A stack program that exits at once (as the broker does when a port it was given is taken
/// by then) is reported as exited, with its status and the end of its log, without waiting
/// out the ready timeout; the stack is tried again on new ports first.
#[test]
fn a_stack_that_exits_before_it_is_ready_is_retried_on_new_ports_then_reported() {
    use rocketmq_dedup_testkit::{RocketMqStack, StackOptions, TestkitError};
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    let calls = dir.path().join("calls");
    let program = dir.path().join("exiting-stack");
    std::fs::write(
        &program,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\necho \"stack refuses: $*\"\nexit 3\n",
            calls.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();

    std::env::remove_var("ROCKETMQ_NAMESRV_ADDR");
    let err = RocketMqStack::start(StackOptions::new(&program)).unwrap_err();
    let TestkitError::Exited {
        what, status, tail, ..
    } = &err
    else {
        panic!("expected Exited, got {err:?}");
    };
    assert!(what.starts_with("name server on port "), "{what}");
    assert!(status.contains('3'), "{status}");
    assert!(tail.contains("stack refuses: namesrv --port "), "{tail}");
    assert!(err.to_string().contains("stack refuses"), "{err}");

    let calls = std::fs::read_to_string(&calls).unwrap();
    let ports: Vec<&str> = calls.lines().collect();
    assert!(ports.len() > 1, "not retried: {ports:?}");
    assert!(
        ports.windows(2).all(|w| w[0] != w[1]),
        "same ports: {ports:?}"
    );
}
