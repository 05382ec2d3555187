//! The record key: where a dedup key's record lives in a store.
//!
//! # Layout
//!
//! ```text
//! <prefix>:<namespace>:<topic>:<tag>:<key>
//! ```
//!
//! - `prefix`: [`DEFAULT_PREFIX`] (`dedup`) unless configured;
//! - `namespace`: the listener's `namespace`, which its builder requires (the consumer group,
//!   say, or an application name, as in the Java library; [`KeyParts::default`] leaves it
//!   empty for an operator's tools and tests);
//! - `topic`: the message's topic (the original topic, also for messages redelivered through
//!   `%RETRY%<group>`);
//! - `tag`: the tag when the key is tag-qualified, else empty;
//! - `key`: the dedup key.
//!
//! A part longer than 128 bytes (once escaped) is stored as `#` followed
//! by the first 128 bits of its SHA-256 in hex, so no record key is longer than
//! [`MAX_RECORD_KEY_BYTES`], whatever topic, tag or key a message carries.
//!
//! Each part is escaped so that the parts can always be told apart: `%` becomes `%25`, `:`
//! becomes `%3A` and `#` becomes `%23`. So `topic=a:b, key=c` is `dedup:g:a%3Ab::c` and
//! `topic=a, key=b:c` is `dedup:g:a::b%3Ac`: two records, never one. A literal key that starts
//! with `#` cannot be taken for a hashed one.
//!
//! ```
//! use rocketmq_dedup::record_key::{KeyParts, RecordKey};
//!
//! let key = RecordKey::new(KeyParts { prefix: "dedup", namespace: "order-service", topic: "Orders", tag: None, key: "o:42" });
//! assert_eq!(key.as_str(), "dedup:order-service:Orders::o%3A42");
//! ```
//!
//! Every store writes this one layout: an operator finds a message's record by its parts (the
//! CLI's `status`), and counts a namespace's or a topic's records by the start their keys share
//! ([`RecordScope`]). The Redis store keeps a CONSUMED record as a 12-byte fingerprint of this
//! key, whatever its length (docs/redis.md, "Memory").

use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};

/// The default first part of every record key.
pub const DEFAULT_PREFIX: &str = "dedup";

/// Parts longer than this many bytes (after escaping) are stored by their hash.
pub(crate) const HASHED_KEY_THRESHOLD: usize = 128;

/// The longest record key: five parts of at most 128 bytes (a longer one is stored by its
/// hash) and their four separators.
pub const MAX_RECORD_KEY_BYTES: usize = 5 * HASHED_KEY_THRESHOLD + 4;

/// A store key, built from its [`KeyParts`] by [`RecordKey::new`] as the module docs describe.
#[derive(Clone)]
pub struct RecordKey {
    /// Shared, not copied, by clones: a listener clones each key for its in-flight registry,
    /// the claim, the commit and the near cache.
    text: Arc<str>,
    /// [`RecordKey::fingerprint`], worked out once when the key is made: a listener looks each
    /// key up in its near cache and remembers it there, and the memory store claims and
    /// commits by it. Worked out eagerly, as a plain value, so the key has no interior
    /// mutability and stays a clean map key.
    fingerprint: u128,
}

impl RecordKey {
    /// A key from its stored text (as [`RecordKey::as_str`] gave it): for a store that finds
    /// a record's key in what it stored.
    pub(crate) fn from_text(text: String) -> Self {
        let digest = Sha256::digest(text.as_bytes());
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        RecordKey {
            text: Arc::from(text),
            fingerprint: u128::from_le_bytes(bytes),
        }
    }
}

impl PartialEq for RecordKey {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for RecordKey {}

impl std::hash::Hash for RecordKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // Equal texts have equal fingerprints, and 16 bytes hash faster than the text.
        state.write_u128(self.fingerprint);
    }
}

impl PartialOrd for RecordKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for RecordKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.text.cmp(&other.text)
    }
}

/// The parts a [`RecordKey`] is made of, by name (the module docs say how they are written).
///
/// ```
/// use rocketmq_dedup::record_key::{KeyParts, RecordKey};
///
/// let key = RecordKey::new(KeyParts { namespace: "payments", topic: "Orders", key: "o-42", ..KeyParts::default() });
/// assert_eq!(key.as_str(), "dedup:payments:Orders::o-42");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyParts<'a> {
    /// The first part ([`DEFAULT_PREFIX`] by default).
    pub prefix: &'a str,
    /// The consumer group, or an application name.
    pub namespace: &'a str,
    /// The message's topic.
    pub topic: &'a str,
    /// The tag, for a tag-qualified key.
    pub tag: Option<&'a str>,
    /// The dedup key.
    pub key: &'a str,
}

impl Default for KeyParts<'_> {
    /// [`DEFAULT_PREFIX`], every other part empty.
    fn default() -> Self {
        KeyParts {
            prefix: DEFAULT_PREFIX,
            namespace: "",
            topic: "",
            tag: None,
            key: "",
        }
    }
}

impl RecordKey {
    /// The record key of `parts`.
    pub fn new(parts: KeyParts<'_>) -> Self {
        RecordKey::from_text(readable_text(parts))
    }

    /// The key as stored.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The key's parts as written, escapes undone (`None` for a text that is not a record
    /// key). A part stored by its hash stays `#` and the hash.
    ///
    /// ```
    /// use rocketmq_dedup::record_key::{KeyParts, RecordKey};
    ///
    /// let key = RecordKey::new(KeyParts { prefix: "dedup", namespace: "payments", topic: "Orders", tag: Some("paid"), key: "o:42" });
    /// let parts = key.parts().unwrap();
    /// assert_eq!((parts.topic.as_ref(), parts.tag.as_ref(), parts.key.as_ref()), ("Orders", "paid", "o:42"));
    /// ```
    pub fn parts(&self) -> Option<RecordParts> {
        let mut split = self.text.split(':');
        let mut next = || split.next().map(unescape);
        let parts = RecordParts {
            prefix: next()?,
            namespace: next()?,
            topic: next()?,
            tag: next()?,
            key: next()?,
        };
        Some(parts)
    }

    /// A 128-bit fingerprint of the key, for stores that keep fixed-size keys.
    pub fn fingerprint(&self) -> u128 {
        self.fingerprint
    }
}

/// The parts of a readable [`RecordKey`] (see [`RecordKey::parts`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordParts {
    /// The prefix.
    pub prefix: String,
    /// The namespace (the consumer group, or an application name).
    pub namespace: String,
    /// The topic.
    pub topic: String,
    /// The tag; empty unless the key is tag-qualified.
    pub tag: String,
    /// The dedup key (or `#` and its hash, when it is long).
    pub key: String,
}

/// The records of one namespace, or of one topic (and tag) in it: what an operator counts
/// ([`RecordAdmin::counts`](crate::store::admin::RecordAdmin::counts)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordScope<'a> {
    /// The record-key prefix.
    pub prefix: &'a str,
    /// The namespace (the consumer group, or an application name).
    pub namespace: &'a str,
    /// The topic, or `None` for the whole namespace.
    pub topic: Option<&'a str>,
    /// The tag of tag-qualified keys (with a topic only).
    pub tag: Option<&'a str>,
}

impl RecordScope<'_> {
    /// The start every record key of this scope has, for a store that finds records by key
    /// prefix.
    ///
    /// ```
    /// use rocketmq_dedup::record_key::{KeyParts, RecordKey, RecordScope};
    ///
    /// let scope = RecordScope { prefix: "dedup", namespace: "g", topic: Some("Orders"), tag: None };
    /// let key = RecordKey::new(KeyParts { prefix: "dedup", namespace: "g", topic: "Orders", tag: None, key: "o-42" });
    /// assert!(key.as_str().starts_with(&scope.key_start()));
    /// assert!(key.as_str().starts_with(&RecordScope { topic: None, ..scope }.key_start()));
    /// ```
    pub fn key_start(&self) -> String {
        match self.topic {
            None => {
                let mut out = String::new();
                push_part(&mut out, self.prefix);
                out.push(':');
                push_part(&mut out, self.namespace);
                out.push(':');
                out
            }
            // The key of an empty dedup key ends with the separator before it.
            Some(topic) => readable_text(KeyParts {
                prefix: self.prefix,
                namespace: self.namespace,
                topic,
                tag: self.tag,
                key: "",
            }),
        }
    }
}

/// The text of a record key, without its fingerprint.
fn readable_text(parts: KeyParts<'_>) -> String {
    let KeyParts {
        prefix,
        namespace,
        topic,
        tag,
        key,
    } = parts;
    let mut out =
        String::with_capacity(prefix.len() + namespace.len() + topic.len() + key.len().min(64) + 8);
    let parts = [prefix, namespace, topic, tag.unwrap_or(""), key];
    for (i, part) in parts.into_iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        push_part(&mut out, part);
    }
    out
}

impl fmt::Debug for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RecordKey").field(&self.text.len()).finish()
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `part` escaped, or `#` and its hash when the escaped part is too long.
fn push_part(out: &mut String, part: &str) {
    let start = out.len();
    escape_into(out, part);
    if out.len() - start > HASHED_KEY_THRESHOLD {
        out.truncate(start);
        out.push('#');
        let digest = Sha256::digest(part.as_bytes());
        for byte in &digest[..16] {
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
    }
}

/// Undoes [`escape_into`].
fn unescape(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    let mut rest = part;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let code = rest.get(at..at + 3);
        out.push(match code {
            Some("%3A") => ':',
            Some("%23") => '#',
            _ => '%',
        });
        rest = &rest[at + code.map_or(1, |_| 3)..];
    }
    out.push_str(rest);
    out
}

fn escape_into(out: &mut String, part: &str) {
    for c in part.chars() {
        match c {
            '%' => out.push_str("%25"),
            ':' => out.push_str("%3A"),
            '#' => out.push_str("%23"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(topic: &str, tag: Option<&str>, k: &str) -> String {
        RecordKey::new(KeyParts {
            prefix: DEFAULT_PREFIX,
            namespace: "g",
            topic,
            tag,
            key: k,
        })
        .text
        .to_string()
    }

    #[test]
    fn the_fingerprint_is_the_first_128_bits_of_the_sha256() {
        // The SQL tables keep part of it: it must never change between versions.
        let key = RecordKey::new(KeyParts {
            prefix: DEFAULT_PREFIX,
            namespace: "g",
            topic: "T",
            tag: None,
            key: "k",
        });
        let expected = 160_558_044_611_421_284_538_152_943_924_780_289_560u128;
        assert_eq!(key.fingerprint(), expected);
        assert_eq!(key.clone().fingerprint(), expected, "a clone keeps it");
        assert_eq!(
            RecordKey::new(KeyParts {
                prefix: DEFAULT_PREFIX,
                namespace: "g",
                topic: "T",
                tag: None,
                key: "k"
            }),
            key
        );
        assert_ne!(
            RecordKey::new(KeyParts {
                prefix: DEFAULT_PREFIX,
                namespace: "g",
                topic: "T",
                tag: None,
                key: "l"
            })
            .fingerprint(),
            expected
        );
    }

    #[test]
    fn separators_in_parts_never_collide() {
        assert_ne!(key("a:b", None, "c"), key("a", None, "b:c"));
        assert_ne!(key("a", Some("b"), "c"), key("a", None, "b:c"));
        assert_ne!(key("a", Some("b:c"), "d"), key("a", Some("b"), "c:d"));
        assert_ne!(key("a%3Ab", None, "c"), key("a:b", None, "c"));
        assert_eq!(key("a:b", None, "c"), "dedup:g:a%3Ab::c");
    }

    #[test]
    fn long_keys_are_hashed_and_literal_hashes_stay_distinct() {
        let long = "x".repeat(HASHED_KEY_THRESHOLD + 1);
        let hashed = key("T", None, &long);
        assert!(hashed.len() < 60 + HASHED_KEY_THRESHOLD);
        let hash_part = hashed.rsplit(':').next().unwrap().to_owned();
        assert!(hash_part.starts_with('#') && hash_part.len() == 33);
        assert_ne!(key("T", None, &hash_part), hashed);
        assert_ne!(
            hashed,
            key("T", None, &"x".repeat(HASHED_KEY_THRESHOLD + 2))
        );
        let exact = "y".repeat(HASHED_KEY_THRESHOLD);
        assert!(key("T", None, &exact).ends_with(&exact));
    }

    /// Undoes the layout (for keys that were not hashed): the test of injectivity.
    fn decode(key: &str) -> Vec<String> {
        key.split(':')
            .map(|part| {
                part.replace("%3A", ":")
                    .replace("%23", "#")
                    .replace("%25", "%")
            })
            .collect()
    }

    #[test]
    fn random_parts_round_trip_so_no_two_keys_collide() {
        const ALPHABET: &[char] = &[':', '%', '#', 'a', 'b', '3', 'A', ' ', 'é', '🔑', '/', '\\'];
        let mut rng = fastrand::Rng::with_seed(7);
        let mut part = |max: usize| -> String {
            (0..rng.usize(0..=max))
                .map(|_| ALPHABET[rng.usize(..ALPHABET.len())])
                .collect()
        };
        let mut seen = std::collections::HashMap::new();
        for _ in 0..20_000 {
            let parts = [part(6), part(6), part(6), part(6), part(12)];
            let tag = (!parts[3].is_empty()).then_some(parts[3].as_str());
            let key = RecordKey::new(KeyParts {
                prefix: &parts[0],
                namespace: &parts[1],
                topic: &parts[2],
                tag,
                key: &parts[4],
            });
            assert_eq!(decode(key.as_str()), parts.to_vec(), "{:?}", key.as_str());
            if let Some(other) = seen.insert(key.as_str().to_owned(), parts.clone()) {
                assert_eq!(other, parts, "two part lists share {}", key.as_str());
            }
        }
    }

    #[test]
    fn a_scope_starts_exactly_its_own_records() {
        let scope = |topic, tag| RecordScope {
            prefix: "dedup",
            namespace: "g",
            topic,
            tag,
        };
        let key = |ns: &str, topic: &str, tag| {
            RecordKey::new(KeyParts {
                prefix: "dedup",
                namespace: ns,
                topic,
                tag,
                key: "k",
            })
            .text
            .to_string()
        };
        let start = scope(Some("T"), None).key_start();
        assert!(key("g", "T", None).starts_with(&start));
        assert!(!key("g", "T", Some("a")).starts_with(&start));
        assert!(!key("g", "TT", None).starts_with(&start));
        assert!(!key("h", "T", None).starts_with(&start));
        let tagged = scope(Some("T"), Some("a")).key_start();
        assert!(key("g", "T", Some("a")).starts_with(&tagged));
        let namespace = scope(None, None).key_start();
        assert_eq!(namespace, "dedup:g:");
        assert!(key("g", "T", Some("a")).starts_with(&namespace));
        assert!(!key("g:x", "T", None).starts_with(&namespace));
    }

    #[test]
    fn every_part_is_bounded_so_the_whole_key_is() {
        let in_topic = |topic: &str| {
            RecordKey::new(KeyParts {
                prefix: "p",
                namespace: "g",
                topic,
                tag: None,
                key: "k",
            })
        };
        let huge = "t".repeat(1 << 20);
        let other = format!("{huge}x");
        let key = RecordKey::new(KeyParts {
            prefix: &huge,
            namespace: &huge,
            topic: &huge,
            tag: Some(&huge),
            key: &huge,
        });
        assert!(
            key.as_str().len() <= MAX_RECORD_KEY_BYTES,
            "{}",
            key.as_str().len()
        );
        assert_eq!(key.as_str().matches('#').count(), 5);
        let differs = in_topic(&other);
        assert_ne!(differs, in_topic(&huge));
        // Escaping can make a part long: 100 colons are 300 bytes escaped.
        let colons = ":".repeat(100);
        assert!(in_topic(&colons).as_str().contains('#'));
        // A literal part that looks like a hash stays a literal.
        let hashed_topic = key.as_str().split(':').nth(2).unwrap().to_owned();
        assert_ne!(in_topic(&hashed_topic), in_topic(&huge));
    }

    #[test]
    fn parts_undo_the_escapes_and_compact_keys_have_none() {
        let key = RecordKey::new(KeyParts {
            prefix: "p",
            namespace: "g:1",
            topic: "a%3Ab",
            tag: Some("#t"),
            key: "k%:#",
        });
        let parts = key.parts().unwrap();
        assert_eq!(
            [
                parts.prefix,
                parts.namespace,
                parts.topic,
                parts.tag,
                parts.key
            ],
            ["p", "g:1", "a%3Ab", "#t", "k%:#"]
        );
        let long = "x".repeat(HASHED_KEY_THRESHOLD + 1);
        let hashed = RecordKey::new(KeyParts {
            prefix: "p",
            namespace: "g",
            topic: "t",
            tag: None,
            key: &long,
        })
        .parts()
        .unwrap();
        assert!(hashed.key.starts_with('#') && hashed.key.len() == 33);
        assert_eq!(RecordKey::from_text("p:g:t".to_owned()).parts(), None);
    }

    #[test]
    fn unicode_is_kept() {
        assert_eq!(key("T", None, "заказ-🔑"), "dedup:g:T::заказ-🔑");
    }

    #[test]
    fn debug_hides_the_key() {
        assert!(!format!(
            "{:?}",
            RecordKey::new(KeyParts {
                prefix: "p",
                namespace: "g",
                topic: "t",
                tag: None,
                key: "secret"
            })
        )
        .contains("secret"));
    }
}
