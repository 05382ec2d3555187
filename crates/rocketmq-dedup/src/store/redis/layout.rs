//! Where a record lives in Redis: a CONSUMED record is a 12-byte field in a small hash of its
//! time bucket, a claim is a key of its own.
//!
//! A record key `<group><key>` (the group: everything up to its last `:`, so the namespace,
//! topic and tag of the listener's key layout) has:
//! - a **shard**, `s`: bits of its 128-bit fingerprint, below the group's shard count;
//! - a **claim key** `<group>{<s>}<key>` holding `c<token>` with the processing TTL while the
//!   record is CONSUMING;
//! - a **field**, the first 96 bits of the fingerprint, written into the bucket hash
//!   `<group>{<s>}:<b>` when the record is committed, `b` being the commit time divided by the
//!   group's bucket width. The hash expires as a whole at its bucket's end plus the record TTL,
//!   so a record lives between one and one-and-a-half record TTLs (the width is half the TTL).
//!
//! A record whose TTL is shorter than two bucket widths (a listener keeping records for less
//! than the store's [`record_ttl`](super::RedisStoreBuilder::record_ttl)) would outlive it by
//! more than half in a bucket: it is kept in its claim key instead, as `1` with its own TTL
//! (the memory of one key per record, and an expiry exact to the millisecond).
//!
//! `{<s>}` is a Redis Cluster hash tag: a claim and all its buckets share one slot, so every
//! command and script touches one slot, and a batch's commands still go one pipeline per
//! master. Braces in the group are escaped (`%7B`, `%7D`) so that the tag is always ours.
//!
//! A group's bucket width and shard count are written once, by the first store that uses the
//! group, in `<group>{layout}` (`w=<width ms> s=<shards>`), and every store reads them from
//! there: stores configured differently (another record TTL, another expected rate) still
//! find each other's records.
//!
//! Odds: a fresh message is taken for a CONSUMED one when its shard and 96-bit field equal a
//! live record's of the same group: at most (live records) / 2^96 per message, about one in
//! 1.8·10^19 messages with 4.3 billion live records.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::time::Duration;

use redis::{RedisWrite, ToRedisArgs};

use crate::record_key::RecordKey;

/// Bytes of a record's field (the first 96 bits of its fingerprint).
pub(super) const FIELD_BYTES: usize = 12;

/// Buckets per record TTL: the width is the TTL divided by this.
pub(super) const BUCKETS_PER_TTL: u32 = 2;

/// Records a bucket hash is sized to hold on average: half of Redis's default
/// `hash-max-listpack-entries` (512), so twice the expected rate still fits in a listpack.
pub(super) const RECORDS_PER_HASH: u64 = 256;

/// Most shards a group gets.
pub(super) const MAX_SHARDS: u32 = 1 << 24;

/// How much the clocks of the consumers may differ: within this of the next bucket a claim
/// also looks in it, where a consumer whose clock is ahead may already write.
pub(super) const CLOCK_SKEW_MS: u64 = 60_000;

/// Most bucket widths a claim looks back over (four record TTLs of the store that laid the
/// group out): a listener keeping records longer has them found that long only.
pub(super) const MAX_LOOKBACK_WIDTHS: u64 = 8;

/// The suffix of a group's layout key.
const LAYOUT_SUFFIX: &str = "{layout}";

/// A group's bucket width and shard count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BucketLayout {
    /// Milliseconds per bucket.
    pub(super) width_ms: u64,
    /// A power of two.
    pub(super) shards: u32,
}

impl BucketLayout {
    /// The layout for records kept `record_ttl`, committed at about `rate` per second.
    pub(super) fn sized(record_ttl: Duration, rate: u64) -> Self {
        let width_ms = (record_ttl.as_millis() as u64 / u64::from(BUCKETS_PER_TTL)).max(1_000);
        let per_bucket = rate.saturating_mul(width_ms) / 1_000;
        let shards = per_bucket.div_ceil(RECORDS_PER_HASH).max(1);
        let shards = shards.min(u64::from(MAX_SHARDS)) as u32;
        BucketLayout {
            width_ms,
            shards: shards.next_power_of_two(),
        }
    }

    /// As written in a layout key.
    pub(super) fn encode(&self) -> String {
        format!("w={} s={}", self.width_ms, self.shards)
    }

    /// What a layout key holds, or `None` when unreadable.
    pub(super) fn decode(text: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(text).ok()?;
        let mut width_ms = None;
        let mut shards = None;
        for part in text.split_ascii_whitespace() {
            match part.split_once('=')? {
                ("w", v) => width_ms = v.parse().ok(),
                ("s", v) => shards = v.parse().ok(),
                _ => {}
            }
        }
        let layout = BucketLayout {
            width_ms: width_ms.filter(|&w| w >= 1_000)?,
            shards: shards.filter(|s: &u32| s.is_power_of_two() && *s <= MAX_SHARDS)?,
        };
        Some(layout)
    }

    /// The bucket of the instant `ms` (Unix time).
    pub(super) fn bucket(&self, ms: u64) -> u64 {
        ms / self.width_ms
    }

    /// Whether records kept `record_ttl_ms` go into buckets (else each in a key of its own):
    /// a bucket keeps a record up to one width longer than its TTL, at most half of it.
    pub(super) fn buckets_keep(&self, record_ttl_ms: u64) -> bool {
        record_ttl_ms >= 2 * self.width_ms
    }

    /// When bucket `b`'s hash expires, for records kept `record_ttl` (Unix time, ms).
    pub(super) fn expires_at(&self, b: u64, record_ttl_ms: u64) -> u64 {
        (b + 1) * self.width_ms + record_ttl_ms
    }

    /// The buckets that may hold a live record at `now_ms`, newest first, for records kept at
    /// most `horizon_ms`: the next one when `now` is within [`CLOCK_SKEW_MS`] of it, the
    /// current one, and the older ones whose hash has not expired.
    pub(super) fn live_buckets(&self, now_ms: u64, horizon_ms: u64) -> impl Iterator<Item = u64> {
        let current = self.bucket(now_ms);
        let newest = self.bucket(now_ms + CLOCK_SKEW_MS);
        let back = horizon_ms.div_ceil(self.width_ms).min(MAX_LOOKBACK_WIDTHS);
        let oldest = current.saturating_sub(back);
        (oldest..=newest).rev()
    }
}

/// A group's part of the record key, and the rest (the escaped dedup key, or its hash).
pub(super) fn split(key: &str) -> (&str, &str) {
    match key.rfind(':') {
        Some(at) => key.split_at(at + 1),
        None => ("", key),
    }
}

/// The group with its braces escaped, as every Redis key of the group starts.
pub(super) fn escaped_group(group: &str) -> Cow<'_, str> {
    match group.contains(['{', '}']) {
        false => Cow::Borrowed(group),
        true => Cow::Owned(group.replace('{', "%7B").replace('}', "%7D")),
    }
}

/// The key holding the layout of the group whose escaped start is `group`.
pub(super) fn layout_key(group: &str) -> String {
    format!("{group}{LAYOUT_SUFFIX}")
}

/// Where one record lives.
#[derive(Debug, Clone)]
pub(super) struct Location {
    /// Its group's layout.
    pub(super) layout: BucketLayout,
    /// Its claim key, `<group>{<shard>}<key>`.
    pub(super) claim: String,
    /// Its field in a bucket hash.
    pub(super) field: [u8; FIELD_BYTES],
    /// Where the claim key's `<group>{<shard>}` ends (a bucket's name is that, `:` and the
    /// bucket's number).
    tag_end: usize,
}

impl Location {
    /// Where `key` lives in a group laid out as `layout`.
    pub(super) fn of(key: &RecordKey, layout: &BucketLayout) -> Self {
        let (group, rest) = split(key.as_str());
        let bytes = key.fingerprint().to_le_bytes();
        let mut field = [0u8; FIELD_BYTES];
        field.copy_from_slice(&bytes[..FIELD_BYTES]);
        let high = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
        let shard = high & (layout.shards - 1);
        let mut claim = String::with_capacity(group.len() + 8 + rest.len());
        claim.push_str(&escaped_group(group));
        // Writing to a String cannot fail.
        let _ = write!(claim, "{{{shard:x}}}");
        let tag_end = claim.len();
        claim.push_str(rest);
        Location {
            layout: *layout,
            claim,
            field,
            tag_end,
        }
    }

    /// The hash of bucket `b`, as a command argument (written into the command, no string of
    /// its own).
    pub(super) fn bucket(&self, b: u64) -> BucketName<'_> {
        BucketName {
            tag: &self.claim[..self.tag_end],
            bucket: b,
        }
    }

    /// The hashes of the buckets that may hold this record live at `now_ms`, for records kept
    /// at most `horizon_ms`, newest first ([`BucketLayout::live_buckets`]).
    pub(super) fn live_bucket_names(
        &self,
        now_ms: u64,
        horizon_ms: u64,
    ) -> impl Iterator<Item = BucketName<'_>> + '_ {
        self.layout
            .live_buckets(now_ms, horizon_ms)
            .map(|b| self.bucket(b))
    }
}

/// The name of a bucket hash, `<group>{<shard>}:<b>`.
#[derive(Debug, Clone, Copy)]
pub(super) struct BucketName<'a> {
    tag: &'a str,
    bucket: u64,
}

impl fmt::Display for BucketName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.tag, self.bucket)
    }
}

impl ToRedisArgs for BucketName<'_> {
    fn write_redis_args<W: ?Sized + RedisWrite>(&self, out: &mut W) {
        // Writing to a command's buffer cannot fail.
        let _ = write!(out.writer_for_next_arg(), "{}:{}", self.tag, self.bucket);
    }
}

/// What a key found by a scan of a group is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyKind {
    /// A claim.
    Claim,
    /// A bucket hash.
    Bucket,
    /// A group's layout.
    Layout,
}

/// What the Redis key `key` of this layout is.
pub(super) fn kind_of(key: &str) -> KeyKind {
    let (head, rest) = split(key);
    if rest == LAYOUT_SUFFIX {
        KeyKind::Layout
    } else if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()) && head.ends_with("}:") {
        KeyKind::Bucket
    } else {
        KeyKind::Claim
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record_key::KeyParts;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    #[test]
    fn sizing_keeps_about_256_records_per_hash() {
        let layout = BucketLayout::sized(DAY, 1_000);
        assert_eq!(layout.width_ms, 12 * 3600 * 1000);
        // 43.2 million records per bucket over 262 144 shards: 165 each.
        assert_eq!(layout.shards, 262_144);
        assert_eq!(BucketLayout::sized(DAY, 0).shards, 1);
        assert_eq!(BucketLayout::sized(DAY, u64::MAX).shards, MAX_SHARDS);
        assert!(layout.buckets_keep(DAY.as_millis() as u64));
        assert!(!layout.buckets_keep(DAY.as_millis() as u64 - 1));
    }

    #[test]
    fn a_layout_reads_back_and_garbage_does_not() {
        let layout = BucketLayout::sized(DAY, 50);
        assert_eq!(
            BucketLayout::decode(layout.encode().as_bytes()),
            Some(layout)
        );
        for bad in [
            "",
            "w=0 s=4",
            "w=60000 s=3",
            "w=60000",
            "s=4",
            "x",
            "w=a s=b",
        ] {
            assert_eq!(BucketLayout::decode(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn a_claim_looks_in_every_bucket_a_live_record_can_be_in() {
        let layout = BucketLayout {
            width_ms: 1_000_000,
            shards: 1,
        };
        let ttl = 2_000_000;
        // Mid-bucket 10: buckets 8 (expires at 11 000 000, after now) to 10.
        let now = 10_500_000;
        let live: Vec<u64> = layout.live_buckets(now, ttl).collect();
        assert_eq!(live, vec![10, 9, 8]);
        assert!(layout.expires_at(8, ttl) > now && layout.expires_at(7, ttl) <= now);
        // Near the end of bucket 10, bucket 11 too (a clock ahead may write there).
        let live: Vec<u64> = layout.live_buckets(10_990_000, ttl).collect();
        assert_eq!(live, vec![11, 10, 9, 8]);
        // A year-long record TTL: eight widths back at most.
        assert_eq!(layout.live_buckets(now, u64::MAX / 2).count(), 9);
    }

    #[test]
    fn a_record_and_its_buckets_share_a_hash_tag_and_are_told_apart() {
        let key = RecordKey::new(KeyParts {
            prefix: "dedup",
            namespace: "g{1}",
            topic: "Orders",
            tag: None,
            key: "o:42",
        });
        let layout = BucketLayout {
            width_ms: 1_000,
            shards: 16,
        };
        let at = Location::of(&key, &layout);
        let bucket = at.bucket(7).to_string();
        let tag = |k: &str| {
            let open = k.find('{').unwrap();
            k[open..=open + k[open..].find('}').unwrap()].to_owned()
        };
        assert!(
            at.claim.starts_with("dedup:g%7B1%7D:Orders::{"),
            "{}",
            at.claim
        );
        assert!(at.claim.ends_with("}o%3A42"));
        assert_eq!(tag(&at.claim), tag(&bucket));
        assert_eq!(kind_of(&at.claim), KeyKind::Claim);
        assert_eq!(kind_of(&bucket), KeyKind::Bucket);
        assert_eq!(kind_of("dedup:g:Orders::{layout}"), KeyKind::Layout);
        let digits = RecordKey::new(KeyParts {
            prefix: "dedup",
            namespace: "g",
            topic: "Orders",
            tag: None,
            key: "123",
        });
        assert_eq!(
            kind_of(&Location::of(&digits, &layout).claim),
            KeyKind::Claim
        );
    }
}
