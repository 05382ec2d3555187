//! Where a record lives in Redis: a CONSUMED record is a 12-byte field of its shard's records
//! hash, whose value says until when it is live; a claim is a key of its own.
//!
//! A record key `<group><key>` (the group: everything up to its last `:`, so the namespace,
//! topic and tag of the listener's key layout) has:
//! - a **shard**, `s`: bits of its 128-bit fingerprint, below the group's shard count;
//! - a **claim key** `<group>{<s>}<key>` holding `c<token>` with the processing TTL while the
//!   record is CONSUMING;
//! - a **field**, the first 96 bits of the fingerprint, in the records hash `<group>{<s>}:r`,
//!   written when the record is committed. Its value is a **stamp**: the time unit (the hash's
//!   unit width, an eighth of the record TTL) from which the record is no longer live, modulo
//!   128, so that it takes two bytes in the hash's listpack. A record is live while its stamp
//!   lies 1 to 64 units ahead of now; it is committed with the stamp of the unit after the one
//!   its record TTL ends in, so it lives its TTL and less than a unit more.
//!
//! Every records hash starts with its **meta field** `""`, `<unit ms>,<shards>`, the unit width
//! and shard count it was written under; its first sweep pass adds the **sweep state** `"~"`:
//! the unit the last pass started in, or `<unit>,<cursor>` while a pass that started in that
//! unit is under way. Its stamps are read with its own width, whatever the reader was
//! configured with: the width travels with the records.
//!
//! Nothing expires a field on its own (Redis 7.0 has no per-field TTL): commits **sweep**. A
//! hash's second commit starts its first pass, and then the first commit in a unit after the
//! last pass's; each commit while a pass is under way takes one `HSCAN` step (100 fields of a
//! hashtable, a whole listpack) and deletes the fields that are not live. A pass that leaves a
//! hashtable (a hash that outgrew the listpack limits in a burst) with few enough fields
//! rewrites it, so it is a listpack again. The hash expires as a whole when its last record
//! stops being live. Times are the Redis server's ([`scripts`](super::scripts)).
//!
//! A dead field reads as live again only once its stamp comes round (64 units after it died);
//! a pass deletes it long before, as long as a pass finishes within 64 units: a hash of `F`
//! fields needs `F / 100` commits a pass (a hash the shard count was sized for, one commit).
//!
//! A record whose TTL is shorter than two units' widths (a listener keeping records for much
//! less than the store's [`record_ttl`](super::RedisStoreBuilder::record_ttl)) would outlive it
//! by more than half: it is kept in its claim key instead, as `1` with its own TTL (the memory
//! of one key per record, and an expiry exact to the millisecond).
//!
//! `{<s>}` is a Redis Cluster hash tag: a claim and its records hash share one slot, so every
//! command and script touches one slot, and a batch's commands still go one pipeline per
//! master. Braces in the group are escaped (`%7B`, `%7D`) so that the tag is always ours.
//!
//! A group's unit width and shard count are written once, by the first store that uses the
//! group, in `<group>{layout}` (`w=<unit ms> s=<shards>`), and every store reads them from
//! there: stores configured differently (another record TTL, another expected rate) still
//! find each other's records. A store that finds no layout key but a records hash of shard 0
//! (a layout key evicted or deleted while the records stayed) takes the layout from that hash's
//! meta field and writes it back.
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

/// Units per record TTL: the unit width is the TTL divided by this.
pub(super) const UNITS_PER_TTL: u32 = 8;

/// The narrowest unit, in ms.
pub(super) const MIN_UNIT_MS: u64 = 250;

/// Stamps are units modulo this.
pub(super) const STAMP_MODULUS: u64 = 128;

/// A stamp this many units ahead of now, or fewer (and more than none), is live.
pub(super) const LIVE_UNITS: u64 = 64;

/// Most units a record is kept: a listener keeping records longer (more than 7.5 record TTLs
/// of the store that laid the group out) has them kept this long.
pub(super) const MAX_KEPT_UNITS: u64 = 60;

/// Records a hash is sized to hold on average: half of Redis's default
/// `hash-max-listpack-entries` (512), so twice the expected rate still fits in a listpack.
pub(super) const RECORDS_PER_HASH: u64 = 256;

/// Most shards a group gets.
pub(super) const MAX_SHARDS: u32 = 1 << 24;

/// The suffix of a group's layout key.
const LAYOUT_SUFFIX: &str = "{layout}";

/// The suffix of a records hash, after the hash tag.
const RECORDS_SUFFIX: &str = ":r";

/// A group's unit width and shard count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ShardLayout {
    /// Milliseconds per unit.
    pub(super) unit_ms: u64,
    /// A power of two.
    pub(super) shards: u32,
}

/// A time unit, as written into a records hash: its absolute number modulo
/// [`STAMP_MODULUS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stamp(u8);

impl Stamp {
    /// The stamp a records hash's value holds: 1 to 3 ASCII digits, below 128 (the scripts'
    /// `stamp_of`); `None` for anything else, which is a dead record.
    pub(super) fn parse(value: &[u8]) -> Option<Self> {
        if value.is_empty() || value.len() > 3 || !value.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = value.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        (n < STAMP_MODULUS).then_some(Stamp(n as u8))
    }

    /// How long a record of this stamp, in a hash of `unit_ms` units, is still live at
    /// `now_ms` (the server's clock), or `None` when it is not.
    pub(super) fn live_for(self, unit_ms: u64, now_ms: u64) -> Option<Duration> {
        let now = now_ms / unit_ms;
        let ahead = (u64::from(self.0) + STAMP_MODULUS - now % STAMP_MODULUS) % STAMP_MODULUS;
        (1..=LIVE_UNITS)
            .contains(&ahead)
            .then(|| Duration::from_millis((now + ahead) * unit_ms - now_ms))
    }
}

/// A records hash's meta field, `<unit ms>,<shards>`: the layout its records were written
/// under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Meta {
    /// The layout its records were written under.
    pub(super) layout: ShardLayout,
}

impl Meta {
    /// The meta field's value (the scripts' rule); `None` when it is not one.
    pub(super) fn parse(value: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(value).ok()?;
        let (w, s) = text.split_once(',')?;
        let digits = |v: &str| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
        if !digits(w) || !digits(s) {
            return None;
        }
        let layout = ShardLayout {
            unit_ms: w.parse().ok().filter(|&w| w >= MIN_UNIT_MS)?,
            shards: s
                .parse()
                .ok()
                .filter(|s: &u32| s.is_power_of_two() && *s <= MAX_SHARDS)?,
        };
        Some(Meta { layout })
    }
}

/// A layout as a records hash's meta field, `<unit ms>,<shards>`, written once (a layout's
/// unit width and shard count take at most 20 and 8 digits).
#[derive(Clone, Copy)]
pub(super) struct MetaArg {
    bytes: [u8; 30],
    len: u8,
}

impl MetaArg {
    fn of(layout: &ShardLayout) -> Self {
        let mut bytes = [0u8; 30];
        let mut out = &mut bytes[..];
        // 30 bytes hold the longest meta field.
        let _ = write!(out, "{},{}", layout.unit_ms, layout.shards);
        let len = (30 - out.len()) as u8;
        MetaArg { bytes, len }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl fmt::Debug for MetaArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.as_bytes()))
    }
}

impl ToRedisArgs for MetaArg {
    fn write_redis_args<W: ?Sized + RedisWrite>(&self, out: &mut W) {
        out.write_arg(self.as_bytes());
    }
}

impl ShardLayout {
    /// The layout for records kept `record_ttl`, committed at about `rate` per second.
    pub(super) fn sized(record_ttl: Duration, rate: u64) -> Self {
        let ttl_ms = record_ttl.as_millis() as u64;
        let unit_ms = (ttl_ms / u64::from(UNITS_PER_TTL)).max(MIN_UNIT_MS);
        // A hash holds a TTL's records, a unit more, and those not swept yet (a unit).
        let held_ms = ttl_ms.saturating_add(2 * unit_ms);
        let per_group = rate.saturating_mul(held_ms) / 1_000;
        let shards = per_group.div_ceil(RECORDS_PER_HASH).max(1);
        let shards = shards.min(u64::from(MAX_SHARDS)) as u32;
        ShardLayout {
            unit_ms,
            shards: shards.next_power_of_two(),
        }
    }

    /// As written in a layout key.
    pub(super) fn encode(&self) -> String {
        format!("w={} s={}", self.unit_ms, self.shards)
    }

    /// What a layout key holds, or `None` when unreadable.
    pub(super) fn decode(text: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(text).ok()?;
        let mut unit_ms = None;
        let mut shards = None;
        for part in text.split_ascii_whitespace() {
            match part.split_once('=')? {
                ("w", v) => unit_ms = v.parse().ok(),
                ("s", v) => shards = v.parse().ok(),
                _ => {}
            }
        }
        let layout = ShardLayout {
            unit_ms: unit_ms.filter(|&w| w >= MIN_UNIT_MS)?,
            shards: shards.filter(|s: &u32| s.is_power_of_two() && *s <= MAX_SHARDS)?,
        };
        Some(layout)
    }

    /// Whether records kept `record_ttl_ms` go into the records hashes (else each in a key of
    /// its own): a record is kept up to a unit longer than its TTL, at most half of it.
    pub(super) fn shards_keep(&self, record_ttl_ms: u64) -> bool {
        record_ttl_ms >= 2 * self.unit_ms
    }

    /// As a records hash's meta field.
    pub(super) fn meta(&self) -> MetaArg {
        MetaArg::of(self)
    }

    /// The longest a record is kept in this layout.
    pub(super) fn longest_kept_ms(&self) -> u64 {
        MAX_KEPT_UNITS * self.unit_ms
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

/// The records hash and the field of the record whose claim key is `claim` (a claim key
/// found by a scan): `<group>{<shard>}<key>` is the record `<group><key>` (the group's braces
/// unescaped), whose records hash is `<group>{<shard>}:r`.
pub(super) fn record_of_claim(claim: &str) -> Option<(String, [u8; FIELD_BYTES])> {
    let open = claim.find('{')?;
    let close = open + claim[open..].find('}')?;
    let group = claim[..open].replace("%7B", "{").replace("%7D", "}");
    let key = RecordKey::from_text(format!("{group}{}", &claim[close + 1..]));
    let mut field = [0u8; FIELD_BYTES];
    field.copy_from_slice(&key.fingerprint().to_le_bytes()[..FIELD_BYTES]);
    Some((format!("{}{RECORDS_SUFFIX}", &claim[..=close]), field))
}

/// The records hash of shard 0 of the group whose escaped start is `group`: every layout has
/// a shard 0, so a group's records are found there whatever its shard count.
pub(super) fn first_records_hash(group: &str) -> String {
    format!("{group}{{0}}{RECORDS_SUFFIX}")
}

/// Where one record lives.
#[derive(Debug, Clone)]
pub(super) struct Location {
    /// Its group's layout.
    pub(super) layout: ShardLayout,
    /// Its claim key, `<group>{<shard>}<key>`.
    pub(super) claim: String,
    /// Its field in its shard's records hash.
    pub(super) field: [u8; FIELD_BYTES],
    /// Where the claim key's `<group>{<shard>}` ends (the records hash's name is that and
    /// `:r`).
    tag_end: usize,
}

impl Location {
    /// Where `key` lives in a group laid out as `layout`.
    pub(super) fn of(key: &RecordKey, layout: &ShardLayout) -> Self {
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

    /// Its shard's records hash, as a command argument (written into the command, no string
    /// of its own).
    pub(super) fn records(&self) -> RecordsName<'_> {
        RecordsName {
            tag: &self.claim[..self.tag_end],
        }
    }
}

/// The name of a records hash, `<group>{<shard>}:r`.
#[derive(Debug, Clone, Copy)]
pub(super) struct RecordsName<'a> {
    tag: &'a str,
}

impl fmt::Display for RecordsName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{RECORDS_SUFFIX}", self.tag)
    }
}

impl ToRedisArgs for RecordsName<'_> {
    fn write_redis_args<W: ?Sized + RedisWrite>(&self, out: &mut W) {
        // Writing to a command's buffer cannot fail.
        let _ = write!(out.writer_for_next_arg(), "{}{RECORDS_SUFFIX}", self.tag);
    }
}

/// What a key found by a scan of a group is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyKind {
    /// A claim.
    Claim,
    /// A records hash.
    Records,
    /// A group's layout.
    Layout,
}

/// What the Redis key `key` of this layout is. A claim key never ends in `}:r`: its record
/// key's last part follows the tag, and that part has no `:`.
pub(super) fn kind_of(key: &str) -> KeyKind {
    let (head, rest) = split(key);
    if rest == LAYOUT_SUFFIX {
        KeyKind::Layout
    } else if key.ends_with(RECORDS_SUFFIX) && head.ends_with("}:") {
        KeyKind::Records
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
        let layout = ShardLayout::sized(DAY, 1_000);
        assert_eq!(layout.unit_ms, 3 * 3600 * 1000);
        // 108 million records held (a day and two units) over 524 288 shards: 206 each.
        assert_eq!(layout.shards, 524_288);
        assert_eq!(ShardLayout::sized(DAY, 0).shards, 1);
        assert_eq!(ShardLayout::sized(DAY, u64::MAX).shards, MAX_SHARDS);
        assert_eq!(
            ShardLayout::sized(Duration::from_secs(1), 1).unit_ms,
            MIN_UNIT_MS
        );
        assert!(layout.shards_keep(6 * 3600 * 1000));
        assert!(!layout.shards_keep(6 * 3600 * 1000 - 1));
    }

    #[test]
    fn a_layout_reads_back_and_garbage_does_not() {
        let layout = ShardLayout::sized(DAY, 50);
        assert_eq!(
            ShardLayout::decode(layout.encode().as_bytes()),
            Some(layout)
        );
        for bad in [
            "",
            "w=0 s=4",
            "w=249 s=4",
            "w=60000 s=3",
            "w=60000",
            "s=4",
            "x",
            "w=a s=b",
        ] {
            assert_eq!(ShardLayout::decode(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn a_stamp_is_live_for_64_units_and_read_by_one_rule() {
        let unit_ms = 1_000_000;
        let stamp = Stamp::parse(b"19").unwrap();
        let live = |at| stamp.live_for(unit_ms, at);
        assert_eq!(live(10_500_000), Some(Duration::from_millis(8_500_000)));
        assert_eq!(live(18_999_999), Some(Duration::from_millis(1)));
        assert_eq!(live(19_000_000), None);
        // Not live again until its stamp comes round (never read by then: swept or expired).
        for dead_units in 0..STAMP_MODULUS - LIVE_UNITS {
            assert_eq!(
                live(19_000_000 + dead_units * unit_ms),
                None,
                "{dead_units}"
            );
        }
        // Across the stamps' wrap: unit 127 + 1.
        let wrapped = Stamp::parse(b"0").unwrap();
        assert!(wrapped.live_for(unit_ms, 127_000_000).is_some());
        assert!(wrapped.live_for(unit_ms, 128_000_000).is_none());
        // Anything but 1 to 3 digits below 128 is no stamp (the scripts' rule).
        for bad in [
            &b""[..],
            b"128",
            b"0x10",
            b"5.5",
            b"-3",
            b" 1",
            b"1 ",
            b"0012",
            b"x",
        ] {
            assert_eq!(
                Stamp::parse(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(Stamp::parse(b"007"), Some(Stamp(7)));
        assert_eq!(Stamp::parse(b"127"), Some(Stamp(127)));
    }

    #[test]
    fn a_meta_field_gives_the_layout_its_records_were_written_under() {
        let layout = ShardLayout {
            unit_ms: 7500,
            shards: 16,
        };
        let mut cmd = redis::cmd("X");
        cmd.arg(layout.meta());
        assert_eq!(
            cmd.args_iter().nth(1),
            Some(redis::Arg::Simple(&b"7500,16"[..]))
        );
        let meta = Meta::parse(b"7500,16").unwrap();
        assert_eq!(
            meta.layout,
            ShardLayout {
                unit_ms: 7500,
                shards: 16
            }
        );
        for bad in [
            &b""[..],
            b"57",
            b"7500,16,1",
            b"249,16",
            b"7500,15",
            b"7500,x",
            b",16",
            b"-1,16",
        ] {
            assert_eq!(Meta::parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_record_and_its_records_hash_share_a_hash_tag_and_are_told_apart() {
        let key = RecordKey::new(KeyParts {
            prefix: "dedup",
            namespace: "g{1}",
            topic: "Orders",
            tag: None,
            key: "o:42",
        });
        let layout = ShardLayout {
            unit_ms: 1_000,
            shards: 16,
        };
        let at = Location::of(&key, &layout);
        let records = at.records().to_string();
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
        assert!(records.ends_with("}:r"), "{records}");
        assert_eq!(tag(&at.claim), tag(&records));
        assert_eq!(
            record_of_claim(&at.claim),
            Some((records.clone(), at.field))
        );
        assert_eq!(kind_of(&at.claim), KeyKind::Claim);
        assert_eq!(kind_of(&records), KeyKind::Records);
        assert_eq!(kind_of("dedup:g:Orders::{layout}"), KeyKind::Layout);
        for key in ["r", ":r", "123"] {
            let claim = Location::of(
                &RecordKey::new(KeyParts {
                    prefix: "dedup",
                    namespace: "g",
                    topic: "Orders",
                    tag: None,
                    key,
                }),
                &layout,
            )
            .claim;
            assert_eq!(kind_of(&claim), KeyKind::Claim, "{claim}");
        }
    }
}
