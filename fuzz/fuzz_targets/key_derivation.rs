//! Fuzzes dedup key derivation and record-key encoding with arbitrary messages.
//!
//! Checks: no strategy panics on any message; every derived key is valid (non-empty, within
//! the limit); record keys are bounded and, when not hashed, decode back to their parts (so no
//! two inputs share a record).
//!
//! Run: `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run key_derivation -- -max_total_time=300`

#![no_main]

use libfuzzer_sys::fuzz_target;
use rocketmq_dedup::record_key::{KeyParts, RecordKey};
use rocketmq_dedup::testing::message;
use rocketmq_dedup::{DedupKey, KeyStrategy};

/// The longest part a record key keeps as written (record_key's docs): longer ones are hashed.
const HASHED_KEY_THRESHOLD: usize = 128;

/// The longest key the library derives (64 KiB).
const MAX_KEY_BYTES: usize = 64 * 1024;

fn decode(key: &str) -> Vec<String> {
    key.split(':')
        .map(|part| part.replace("%3A", ":").replace("%23", "#").replace("%25", "%"))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    // Fields separated by 0xFF (never in UTF-8): body, uniq key, keys, tag, JSON pointer.
    let mut fields = data.split(|b| *b == 0xff);
    let body = fields.next().unwrap_or_default();
    let mut text = || String::from_utf8_lossy(fields.next().unwrap_or_default()).into_owned();
    let (uniq, keys, tag, pointer) = (text(), text(), text(), text());
    let msg = message("Topic:T").uniq_key(&uniq).keys(&keys).tag(&tag).body(body).msg_id("m").build();
    let strategies = [
        KeyStrategy::UniqueId,
        KeyStrategy::Keys,
        KeyStrategy::json_pointer(pointer.clone()),
        KeyStrategy::json_pointer(pointer).tag_qualified(),
        KeyStrategy::custom(|m| DedupKey::from_bytes(m.body_slice())),
    ];
    for strategy in &strategies {
        let Ok(key) = strategy.derive(&msg) else { continue };
        assert!(!key.value().is_empty() && key.value().len() <= MAX_KEY_BYTES);
        let record = RecordKey::new(KeyParts { prefix: "dedup", namespace: &uniq, topic: "Topic:T", tag: key.tag(), key: key.value() });
        let parts = decode(record.as_str());
        assert_eq!(parts.len(), 5, "five parts in {:?}", record.as_str());
        assert_eq!(parts[1], uniq);
        assert_eq!(parts[3], key.tag().unwrap_or(""));
        let stored = record.as_str().rsplit(':').next().unwrap();
        let escaped_len = stored.len();
        // A literal '#' is escaped, so a stored key that starts with '#' is a hash.
        if stored.starts_with('#') {
            assert_eq!(escaped_len, 33, "hashed keys are # and 32 hex digits");
            assert!(stored[1..].bytes().all(|b| b.is_ascii_hexdigit()));
        } else {
            assert!(escaped_len <= HASHED_KEY_THRESHOLD);
            assert_eq!(parts[4], key.value());
        }
    }
});
