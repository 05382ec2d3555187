//! The record key: where a dedup key's record lives in a store.
//!
//! # Layout
//!
//! ```text
//! <prefix>:<namespace>:<topic>:<tag>:<key>
//! ```
//!
//! - `prefix`: [`DEFAULT_PREFIX`] (`dedup`) unless configured;
//! - `namespace`: the consumer group unless configured (an application name, as in the Java
//!   library, also works);
//! - `topic`: the message's topic (the original topic, also for messages redelivered through
//!   `%RETRY%<group>`);
//! - `tag`: the tag when the key is tag-qualified, else empty;
//! - `key`: the dedup key.
//!
//! A part longer than [`HASHED_KEY_THRESHOLD`] bytes (once escaped) is stored as `#` followed
//! by the first 128 bits of its SHA-256 in hex, so no record key is longer than
//! [`MAX_RECORD_KEY_BYTES`], whatever topic, tag or key a message carries.
//!
//! Each part is escaped so that the parts can always be told apart: `%` becomes `%25`, `:`
//! becomes `%3A` and `#` becomes `%23`. So `topic=a:b, key=c` is `dedup:g:a%3Ab::c` and
//! `topic=a, key=b:c` is `dedup:g:a::b%3Ac`: two records, never one. A literal key that starts
//! with `#` cannot be taken for a hashed one.
//!
//! ```
//! use rocketmq_dedup::record_key::{KeyLayout, KeyParts, RecordKey};
//!
//! let key = RecordKey::new(KeyParts { prefix: "dedup", namespace: "order-service", topic: "Orders", tag: None, key: "o:42" });
//! assert_eq!(key.as_str(), "dedup:order-service:Orders::o%3A42");
//!
//! let compact = RecordKey::with_layout(KeyLayout::Compact, KeyParts { prefix: "dedup", namespace: "order-service", topic: "Orders", tag: None, key: "o:42" });
//! assert_eq!(compact.as_str().len(), "dedup:".len() + 22);
//! ```
//!
//! # Scoped layout
//!
//! [`KeyLayout::Scoped`] keeps the dedup key in clear and replaces
//! the namespace, topic and tag by their scope: 11 base64url characters of the first 64 bits of
//! the SHA-256 of `<prefix>:<namespace>:<topic>:<tag>:` as the readable layout writes it.
//!
//! ```text
//! <prefix>:<scope>:<key>
//! ```
//!
//! A record of a UNIQ_KEY (32 hex characters) is then a 50-byte key, where the readable layout
//! of a typical group and topic needs 70 or more (shorter claim keys in Redis, whose CONSUMED
//! records are fields of bucket hashes whatever the layout). An operator still finds a message's record by its id (`SCAN MATCH dedup:*:<id>`, or the CLI,
//! which computes the scope), and counts a scope's records by scanning `<prefix>:<scope>:*`
//! ([`RecordScope`]). Two scopes share a scope string with probability 2^-64 per pair.
//!
//! ```
//! use rocketmq_dedup::record_key::{KeyLayout, KeyParts, RecordKey};
//!
//! let key = RecordKey::with_layout(KeyLayout::Scoped, KeyParts { prefix: "dedup", namespace: "order-service", topic: "Orders", tag: None, key: "o:42" });
//! assert!(key.as_str().starts_with("dedup:") && key.as_str().ends_with(":o%3A42"));
//! assert_eq!(key.as_str().len(), "dedup:".len() + 11 + ":o%3A42".len());
//! ```
//!
//! # Compact layout
//!
//! [`KeyLayout::Compact`] stores `<prefix>:` and 22 base64url characters of the first 128 bits
//! of the SHA-256 of the readable key: the least Redis memory per record, at the cost of keys
//! that cannot be read, searched by id or counted by scope. Two different readable keys share a
//! compact key with probability 2^-128 per pair.

use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};

/// The default first part of every record key.
pub const DEFAULT_PREFIX: &str = "dedup";

/// Parts longer than this many bytes (after escaping) are stored by their hash.
pub const HASHED_KEY_THRESHOLD: usize = 128;

/// The longest record key: five parts of at most [`HASHED_KEY_THRESHOLD`] bytes and their
/// four separators.
pub const MAX_RECORD_KEY_BYTES: usize = 5 * HASHED_KEY_THRESHOLD + 4;

/// How record keys are written.
///
/// A listener writes its store's layout ([`DedupStore::key_layout`](crate::store::DedupStore::key_layout):
/// [`Readable`](KeyLayout::Readable) on every store of this crate) unless the builder sets one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum KeyLayout {
    /// `<prefix>:<namespace>:<topic>:<tag>:<key>`, escaped: every part readable in `redis-cli`.
    /// Every store's default.
    #[default]
    Readable,
    /// `<prefix>:<scope>:<key>`: the key in clear, the namespace, topic and tag as a 64-bit
    /// hash.
    Scoped,
    /// `<prefix>:<128-bit hash, base64url>`: fixed size, the least memory.
    Compact,
}

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
    fn from_text(text: String) -> Self {
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
    /// The record key of `parts`, in the readable layout.
    pub fn new(parts: KeyParts<'_>) -> Self {
        let KeyParts {
            prefix,
            namespace,
            topic,
            tag,
            key,
        } = parts;
        RecordKey::from_text(readable_text(prefix, namespace, topic, tag, key))
    }

    /// The record key of `parts` in `layout`.
    pub fn with_layout(layout: KeyLayout, parts: KeyParts<'_>) -> Self {
        let KeyParts {
            prefix,
            namespace,
            topic,
            tag,
            key,
        } = parts;
        match layout {
            KeyLayout::Readable => RecordKey::new(parts),
            KeyLayout::Scoped => {
                let mut out = scope_start(prefix, namespace, topic, tag);
                push_part(&mut out, key);
                RecordKey::from_text(out)
            }
            KeyLayout::Compact => {
                let readable = readable_text(prefix, namespace, topic, tag, key);
                use base64::Engine;
                let digest = Sha256::digest(readable.as_bytes());
                let mut out = String::with_capacity(prefix.len() * 3 + 23);
                escape_into(&mut out, prefix);
                out.push(':');
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode_string(&digest[..16], &mut out);
                RecordKey::from_text(out)
            }
        }
    }

    /// The key as stored.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The key's parts as written, escapes undone (`None` for a [`KeyLayout::Scoped`] or
    /// [`KeyLayout::Compact`] key, whose namespace, topic and tag are hashed). A part stored by
    /// its hash stays `#` and the hash.
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
    /// The layout the listener writes.
    pub layout: KeyLayout,
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
    /// prefix; `None` where the layout does not keep the scope: a whole namespace in the scoped
    /// layout (its scope string covers the topic too), or anything in the compact one.
    ///
    /// ```
    /// use rocketmq_dedup::record_key::{KeyLayout, KeyParts, RecordKey, RecordScope};
    ///
    /// let scope = RecordScope { layout: KeyLayout::Scoped, prefix: "dedup", namespace: "g", topic: Some("Orders"), tag: None };
    /// let key = RecordKey::with_layout(KeyLayout::Scoped, KeyParts { prefix: "dedup", namespace: "g", topic: "Orders", tag: None, key: "o-42" });
    /// assert!(key.as_str().starts_with(&scope.key_start().unwrap()));
    /// assert_eq!(RecordScope { topic: None, ..scope }.key_start(), None);
    /// ```
    pub fn key_start(&self) -> Option<String> {
        match (self.layout, self.topic) {
            (KeyLayout::Readable, None) => {
                let mut out = String::new();
                push_part(&mut out, self.prefix);
                out.push(':');
                push_part(&mut out, self.namespace);
                out.push(':');
                Some(out)
            }
            // The key of an empty dedup key ends with the separator before it.
            (KeyLayout::Readable, Some(topic)) => Some(readable_text(
                self.prefix,
                self.namespace,
                topic,
                self.tag,
                "",
            )),
            (KeyLayout::Scoped, Some(topic)) => {
                Some(scope_start(self.prefix, self.namespace, topic, self.tag))
            }
            _ => None,
        }
    }
}

/// `<prefix>:<scope>:` of the scoped layout.
/// The text of a [`KeyLayout::Readable`] key, without the key's fingerprint: what the other
/// layouts hash, and what an operator's scan of a topic starts with.
fn readable_text(
    prefix: &str,
    namespace: &str,
    topic: &str,
    tag: Option<&str>,
    key: &str,
) -> String {
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

fn scope_start(prefix: &str, namespace: &str, topic: &str, tag: Option<&str>) -> String {
    use base64::Engine;
    let readable = readable_text(prefix, namespace, topic, tag, "");
    let digest = Sha256::digest(readable.as_bytes());
    let mut out = String::with_capacity(prefix.len() + 13 + 32);
    push_part(&mut out, prefix);
    out.push(':');
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(&digest[..8], &mut out);
    out.push(':');
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
    fn compact_keys_are_short_and_follow_the_readable_key() {
        let compact = |topic: &str, key: &str| {
            RecordKey::with_layout(
                KeyLayout::Compact,
                KeyParts {
                    prefix: "dedup",
                    namespace: "g",
                    topic,
                    tag: None,
                    key,
                },
            )
            .text
            .to_string()
        };
        assert_eq!(compact("T", "k").len(), 28);
        assert_eq!(compact("T", "k"), compact("T", "k"));
        assert_ne!(compact("a:b", "c"), compact("a", "b:c"));
        assert_eq!(compact("T", &"x".repeat(10_000)).len(), 28);
        assert!(compact("T", "k").starts_with("dedup:"));
    }

    #[test]
    fn scoped_keys_keep_the_key_and_hash_the_scope() {
        let scoped = |ns: &str, topic: &str, tag: Option<&str>, key: &str| {
            RecordKey::with_layout(
                KeyLayout::Scoped,
                KeyParts {
                    prefix: "dedup",
                    namespace: ns,
                    topic,
                    tag,
                    key,
                },
            )
            .text
            .to_string()
        };
        // The stored format, pinned (the README shows these keys): records written by one
        // version must be found by the next.
        assert_eq!(
            scoped("payment-consumer", "Orders", None, "o-42"),
            "dedup:o1RCFNjcGl8:o-42"
        );
        assert_eq!(
            RecordKey::with_layout(
                KeyLayout::Compact,
                KeyParts {
                    prefix: "dedup",
                    namespace: "payment-consumer",
                    topic: "Orders",
                    tag: None,
                    key: "o-42"
                }
            )
            .text
            .to_string(),
            "dedup:mfkrl9N-X5oil8aFJecMBA"
        );
        let uniq = "7F0000011B4C18B4AAC26D4E2F7A0001";
        assert_eq!(scoped("g", "T", None, uniq).len(), 50);
        assert!(scoped("g", "T", None, uniq).ends_with(&format!(":{uniq}")));
        assert_eq!(scoped("g", "T", None, "k"), scoped("g", "T", None, "k"));
        // Every part of the scope counts, and the separators in parts still do.
        let all = [
            scoped("g", "T", None, "k"),
            scoped("h", "T", None, "k"),
            scoped("g", "U", None, "k"),
            scoped("g", "T", Some("a"), "k"),
            scoped("g", "T", None, "k2"),
            scoped("g:T", "", None, "k"),
            scoped("g", "T:", None, "k"),
        ];
        let distinct: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(distinct.len(), all.len(), "{all:?}");
        assert!(scoped("g", "T", None, "a:b").ends_with(":a%3Ab"));
        let long = scoped("g", "T", None, &"x".repeat(10_000));
        assert_eq!(long.len(), "dedup:".len() + 11 + 1 + 33, "{long}");
        assert_eq!(
            RecordKey::from_text(scoped("g", "T", None, "k")).parts(),
            None
        );
    }

    #[test]
    fn a_scope_starts_exactly_its_own_records() {
        let scope = |layout, topic, tag| RecordScope {
            layout,
            prefix: "dedup",
            namespace: "g",
            topic,
            tag,
        };
        let key = |layout, ns: &str, topic: &str, tag| {
            RecordKey::with_layout(
                layout,
                KeyParts {
                    prefix: "dedup",
                    namespace: ns,
                    topic,
                    tag,
                    key: "k",
                },
            )
            .text
            .to_string()
        };
        for layout in [KeyLayout::Readable, KeyLayout::Scoped] {
            let start = scope(layout, Some("T"), None).key_start().unwrap();
            assert!(key(layout, "g", "T", None).starts_with(&start));
            assert!(!key(layout, "g", "T", Some("a")).starts_with(&start));
            assert!(!key(layout, "g", "TT", None).starts_with(&start));
            assert!(!key(layout, "h", "T", None).starts_with(&start));
            let tagged = scope(layout, Some("T"), Some("a")).key_start().unwrap();
            assert!(key(layout, "g", "T", Some("a")).starts_with(&tagged));
        }
        let namespace = scope(KeyLayout::Readable, None, None).key_start().unwrap();
        assert_eq!(namespace, "dedup:g:");
        assert!(key(KeyLayout::Readable, "g", "T", Some("a")).starts_with(&namespace));
        assert!(!key(KeyLayout::Readable, "g:x", "T", None).starts_with(&namespace));
        assert_eq!(scope(KeyLayout::Scoped, None, None).key_start(), None);
        assert_eq!(scope(KeyLayout::Compact, Some("T"), None).key_start(), None);
    }

    #[test]
    fn every_part_is_bounded_so_the_whole_key_is() {
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
        let differs = RecordKey::new(KeyParts {
            prefix: "p",
            namespace: "g",
            topic: &other,
            tag: None,
            key: "k",
        });
        assert_ne!(
            differs,
            RecordKey::new(KeyParts {
                prefix: "p",
                namespace: "g",
                topic: &huge,
                tag: None,
                key: "k"
            })
        );
        // Escaping can make a part long: 100 colons are 300 bytes escaped.
        let colons = ":".repeat(100);
        assert!(RecordKey::new(KeyParts {
            prefix: "p",
            namespace: "g",
            topic: &colons,
            tag: None,
            key: "k"
        })
        .as_str()
        .contains('#'));
        // A literal part that looks like a hash stays a literal.
        let hashed_topic = key.as_str().split(':').nth(2).unwrap().to_owned();
        assert_ne!(
            RecordKey::new(KeyParts {
                prefix: "p",
                namespace: "g",
                topic: &hashed_topic,
                tag: None,
                key: "k"
            }),
            RecordKey::new(KeyParts {
                prefix: "p",
                namespace: "g",
                topic: &huge,
                tag: None,
                key: "k"
            })
        );
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
        let compact = RecordKey::with_layout(
            KeyLayout::Compact,
            KeyParts {
                prefix: "p",
                namespace: "g",
                topic: "t",
                tag: None,
                key: "k",
            },
        );
        assert_eq!(compact.parts(), None);
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
