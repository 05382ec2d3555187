//! The keys a Redis server holds, read with `KEYS`.

use rocketmq_dedup_testkit::RedisServer;

/// The keys on `server` matching `pattern`, sorted.
pub fn keys_matching(server: &RedisServer, pattern: &str) -> Vec<String> {
    let answer = server.command(&["KEYS", pattern]).unwrap();
    let mut keys: Vec<String> = answer
        .lines()
        .filter(|l| !l.starts_with('*') && !l.starts_with('$'))
        .map(str::to_owned)
        .collect();
    keys.sort();
    keys
}
