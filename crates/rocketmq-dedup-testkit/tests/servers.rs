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
