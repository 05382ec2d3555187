//! Consumers whose clocks are off: this test binary started again, under libfaketime
//! (`faketime -f <offset>`), in the role of one consumer of a group (the ignored test
//! [`CHILD_TEST`]), on the same Redis as the test.
//!
//! A child connects a [`RedisStore`] (one shard, the record TTL it is told), commits its own
//! records (`<name>-<i>`) and prints `COMMITTED`, then commits a fresh record every 20 ms (so
//! that its commits sweep and extend the group's records hash all the time) until its stdin
//! closes. In the model role it runs the model-based check on the group instead and prints its
//! report; it fails when the report does.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use rocketmq_dedup::record_key::{KeyParts, RecordKey};
use rocketmq_dedup::store::{DedupStore, OwnerToken, RedisStore};

/// The name of the ignored test that is a child's entry point.
pub const CHILD_TEST: &str = "skewed_consumer_child";

/// The group every child and its test share.
pub const TOPIC: &str = "Skewed";

/// How much later than its TTL and unit a record may still read live: the store stamps by the
/// latest the server's time can be, one `TIME` round trip after the server's reading
/// (`store/redis/clock.rs`), and a loaded machine stretches that round trip to tens of ms.
pub const STAMPED_LATE: std::time::Duration = std::time::Duration::from_millis(200);

/// A record of the group `name`'s consumer commits.
pub fn record(name: &str, i: usize) -> RecordKey {
    RecordKey::new(KeyParts {
        prefix: "skew",
        namespace: "group",
        topic: TOPIC,
        tag: None,
        key: &format!("{name}-{i}"),
    })
}

/// What a child does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Commits its own records, then fresh ones until stopped.
    Committer,
    /// Runs the model-based check with commits of the record TTL.
    Model,
}

/// A consumer in a process of its own whose clock is `offset_ms` off.
pub struct SkewedConsumer {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    /// The consumer's name: its records are `<name>-<i>`.
    pub name: String,
    /// How far its clock is off, in ms (positive: ahead).
    pub offset_ms: i64,
}

impl SkewedConsumer {
    /// Starts a consumer `offset_ms` off on `url`, with stores of `record_ttl` and one shard,
    /// committing `own` records of its own first (committer role).
    pub fn spawn(
        url: &str,
        offset_ms: i64,
        record_ttl: Duration,
        own: usize,
        role: Role,
    ) -> SkewedConsumer {
        let name = format!(
            "c{}{}",
            if offset_ms < 0 { "m" } else { "p" },
            offset_ms.abs()
        );
        let exe = std::env::current_exe().unwrap();
        let mut command = Command::new("faketime");
        command
            .arg("-f")
            .arg(format!("{:+.3}s", offset_ms as f64 / 1000.0))
            .arg(exe)
            .args([CHILD_TEST, "--exact", "--ignored", "--nocapture"])
            .args(["--test-threads", "1"])
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .env("DEDUP_SKEW_URL", url)
            .env("DEDUP_SKEW_TTL_MS", record_ttl.as_millis().to_string())
            .env("DEDUP_SKEW_NAME", &name)
            .env("DEDUP_SKEW_OWN", own.to_string())
            .env(
                "DEDUP_SKEW_ROLE",
                match role {
                    Role::Committer => "committer",
                    Role::Model => "model",
                },
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = command
            .spawn()
            .expect("faketime runs (apt-get install faketime, or cargo xtask deps)");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        SkewedConsumer {
            child,
            stdin,
            stdout,
            name,
            offset_ms,
        }
    }

    /// Waits for the line with `prefix`; answers the rest of it. Panics with what the
    /// child printed when it ends first.
    pub fn wait_for(&mut self, prefix: &str) -> String {
        let mut seen = String::new();
        loop {
            let mut line = String::new();
            if self.stdout.read_line(&mut line).unwrap() == 0 {
                let status = self.child.wait().unwrap();
                panic!(
                    "consumer {} ended ({status}) before printing {prefix}: {seen}",
                    self.name
                );
            }
            // libtest prints `test <name> ... ` before the test's first line, on the same line.
            if let Some(at) = line.find(prefix) {
                return line[at + prefix.len()..].trim().to_owned();
            }
            seen.push_str(&line);
        }
    }

    /// The wall clock the child reads, against ours: how far off it is, in ms.
    pub fn measured_offset_ms(&mut self) -> i64 {
        let theirs: i64 = self.wait_for("CLOCK ").parse().unwrap();
        theirs - unix_ms() as i64
    }

    /// Its own records.
    pub fn records(&self, own: usize) -> Vec<RecordKey> {
        (0..own).map(|i| record(&self.name, i)).collect()
    }

    /// Stops it (closes its stdin) and answers everything it printed after, and whether it
    /// exited successfully.
    pub fn finish(mut self) -> (bool, String) {
        drop(self.stdin.take());
        let mut rest = String::new();
        let _ = self.stdout.read_to_string(&mut rest);
        let status = self.child.wait().unwrap();
        (status.success(), rest)
    }
}

impl Drop for SkewedConsumer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The child's work (the body of [`CHILD_TEST`]); does nothing outside a skew test.
pub fn child_main() {
    let Ok(url) = std::env::var("DEDUP_SKEW_URL") else {
        return;
    };
    let var = |name: &str| std::env::var(name).unwrap();
    let ttl = Duration::from_millis(var("DEDUP_SKEW_TTL_MS").parse().unwrap());
    let name = var("DEDUP_SKEW_NAME");
    let own: usize = var("DEDUP_SKEW_OWN").parse().unwrap();
    let model = var("DEDUP_SKEW_ROLE") == "model";
    println!("CLOCK {}", unix_ms());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let stopped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let stopped = stopped.clone();
        std::thread::spawn(move || {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            stopped.store(true, std::sync::atomic::Ordering::SeqCst);
        });
    }
    runtime.block_on(async move {
        let store = RedisStore::builder(&url)
            .record_ttl(ttl)
            .expected_rate(0)
            .connect()
            .await
            .unwrap();
        if model {
            use rocketmq_dedup::store::model::{check_store, ModelOptions};
            let options = ModelOptions {
                // Many keys and few workers: under a loaded machine calls stretch, and
                // fewer overlapping calls per key keep the linearizability search small.
                workers: 8,
                keys: 24,
                ops_per_worker: 1_500,
                record_ttl: Some(ttl),
                record_ttl_slack: ttl / 8 + STAMPED_LATE,
                claims_may_linger: true,
                ..ModelOptions::from_env()
            };
            let report = check_store(std::sync::Arc::new(store), &options).await;
            println!("REPORT {}", report.to_string().replace('\n', " | "));
            assert!(report.passed(), "{report}");
            return;
        }
        let keys: Vec<RecordKey> = (0..own).map(|i| record(&name, i)).collect();
        let token = OwnerToken::random();
        store.claim(&keys, token, ttl).await.unwrap();
        store.commit(&keys, token, ttl).await.unwrap();
        println!("COMMITTED");
        let started = Instant::now();
        let mut i = 0;
        while !stopped.load(std::sync::atomic::Ordering::SeqCst)
            && started.elapsed() < Duration::from_secs(120)
        {
            let fresh = [record(&format!("{name}-fresh"), i)];
            let token = OwnerToken::random();
            if store.claim(&fresh, token, ttl).await.is_ok() {
                let _ = store.commit(&fresh, token, ttl).await;
            }
            i += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}
