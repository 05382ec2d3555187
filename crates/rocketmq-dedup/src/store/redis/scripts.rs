//! The Lua scripts behind claim, commit, release and renew, and the values a claim key holds:
//! `c<token>` while CONSUMING, `1` for a record kept in a key of its own.
//!
//! # One clock
//! Every time a script reads or writes is the Redis server's own (`TIME`): the unit a stamp
//! is counted from, the sweep's "now", the records hash's expiry (relative, `PEXPIRE`, and only
//! ever moved later). A consumer's clock enters no script, so a consumer minutes off cannot
//! expire, keep or sweep anyone's records. The unit width is the records hash's own (its meta
//! field, [`super::layout`]), so a store configured otherwise reads and writes a hash as the
//! store that made it did.
//!
//! # Stamps
//! A stamp is 1 to 3 ASCII digits whose value is below 128 ([`super::layout::Stamp`] reads the
//! same rule in Rust). A field holding anything else is dead: never read as live, deleted by the
//! sweep, and counted in the commit's answer so that the store logs it.
//!
//! # Bounded work
//! No script's work grows with a hash's size: a commit sweeps at most one `HSCAN` step
//! (100 fields of a hashtable, `HSCAN … COUNT 100`; a listpack, at most `hash-max-listpack-entries`
//! fields, comes whole), and a hash is rewritten (to return to a listpack) only when it holds
//! at most the number of fields the caller allows.

use redis::Script;

use crate::store::OwnerToken;

/// Lua: `live(v, now)`: true when value `v` is the stamp of a record live at unit `now`, false
/// when it is the stamp of a dead one, nil when it is no stamp (1 to 3 ASCII digits, below 128:
/// [`Stamp::parse`](super::layout::Stamp::parse)'s rule).
macro_rules! stamp_fns {
    () => {
        r"
local function live(v, now)
  if #v == 0 or #v > 3 or string.find(v, '%D') then return nil end
  local s = tonumber(v)
  if s >= 128 then return nil end
  local ahead = (s - now % 128) % 128
  return ahead >= 1 and ahead <= 64
end
"
    };
}

/// Lua: `record_live(hash, field, width)`, whether the record of `field` in the records hash
/// `hash` is live now (the hash's own unit width, else `width`; the server's clock).
macro_rules! record_live_fn {
    () => {
        r"
local function record_live(hash, field, width)
  local found = redis.pcall('HMGET', hash, field, '')
  if not found[1] then return false end
  local w = tonumber(string.match(found[2] or '', '^(%d+),%d+$') or width)
  if w < 250 then w = tonumber(width) end
  local t = redis.call('TIME')
  return live(found[1], math.floor((t[1] * 1000 + math.floor(t[2] / 1000)) / w))
end
"
    };
}

/// `KEYS[1]` claim key, `KEYS[2]` the records hash; `ARGV[1]` owner value (`c<token>`),
/// `ARGV[2]` processing TTL in ms, `ARGV[3]` the record's field, `ARGV[4]` the unit width for a
/// hash without a meta field. Returns 0 claimed, 1 in flight, 2 consumed, -1 unreadable claim.
///
/// Atomic: a claim that finds the record CONSUMED writes nothing, so no claim key is ever left
/// on a CONSUMED record for another claim to read as in flight.
pub(crate) const CLAIM: &str = concat!(
    stamp_fns!(),
    record_live_fn!(),
    r"
if record_live(KEYS[2], ARGV[3], ARGV[4]) then return 2 end
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 0
end
if v == '1' then return 2 end
if v == ARGV[1] then return 0 end
if string.byte(v, 1) == 99 then return 1 end
return -1
"
);

/// `KEYS[1]` claim key, `KEYS[2]` the records hash; `ARGV[1]` owner value, `ARGV[2]` the
/// record's field, `ARGV[3]` the record TTL in ms when the record is kept in its own key (a TTL
/// too short for the hashes), else `0`; `ARGV[4]` the caller's meta field (`<unit ms>,<shards>`)
/// and, worked out by the caller for that unit width from its reading of the server's clock
/// ([`super::clock`]): `ARGV[5]` the unit now (at the earliest), `ARGV[6]` the record's stamp,
/// `ARGV[7]` when its hash may expire (the server's Unix ms: when the record stops being live,
/// plus the width of the caller's time bounds, so that an expiry set once is not set again) and
/// `ARGV[8]` that less the server's time at the latest; `ARGV[9]` the most fields a hashtable
/// may hold to be rewritten after a sweep pass; `ARGV[10]` and `ARGV[11]` the server's time
/// (Unix ms) at the earliest and the latest, `ARGV[12]` the record TTL in ms. A caller with no
/// reading of the clock (a Cluster, whose masters each have their own) sends `ARGV[5]` to
/// `ARGV[8]`, `ARGV[10]` and `ARGV[11]` empty: the script reads `TIME` and works them out
/// itself, as it does for a hash written under another meta field.
///
/// Returns the outcome (0 committed, 1 lost to another owner, 2 already consumed) plus 8 times
/// the values found that were not stamps, a meta field or a sweep state (or a records hash that
/// was no hash).
///
/// A record already CONSUMED stays so. Else a claim of another owner wins; this owner's, or
/// one that expired (nobody else took it), is committed: its stamp (`HSET`), one sweep step
/// (100 fields) when a pass is due or under way, the hash's expiry (moved only
/// later) and the claim's `DEL`.
pub(crate) const COMMIT: &str = concat!(
    stamp_fns!(),
    r"
local v = redis.call('GET', KEYS[1])
if v == '1' then return 2 end
local bad = 0
local found = redis.pcall('HMGET', KEYS[2], ARGV[2], '', '~')
if found.err then
  redis.call('DEL', KEYS[2])
  bad = 1
  found = {}
end
local meta = found[2]
local now, stamp, expire_at, lead = tonumber(ARGV[5]), ARGV[6], ARGV[7], tonumber(ARGV[8])
if not now or (meta and meta ~= ARGV[4]) then
  local w = tonumber(string.match(ARGV[4], '^(%d+),'))
  local lo, hi = tonumber(ARGV[10]), tonumber(ARGV[11])
  if not lo then
    local t = redis.call('TIME')
    lo = t[1] * 1000 + math.floor(t[2] / 1000)
    hi = lo
  end
  if meta and meta ~= ARGV[4] then
    local own = tonumber(string.match(meta, '^(%d+),%d+$'))
    if own and own >= 250 then
      w = own
    else
      meta = nil
      bad = bad + 1
    end
  end
  local dead_from = math.floor((hi + math.min(tonumber(ARGV[12]), 60 * w)) / w) + 1
  now, stamp = math.floor(lo / w), dead_from % 128
  expire_at = dead_from * w + hi - lo + 1
  lead = expire_at - hi
end
if found[1] then
  local alive = live(found[1], now)
  if alive then
    if v == ARGV[1] then redis.call('DEL', KEYS[1]) end
    return 2 + 8 * bad
  end
  if alive == nil then bad = bad + 1 end
end
if v and v ~= ARGV[1] then return 1 + 8 * bad end
if ARGV[3] ~= '0' then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[3])
  return 8 * bad
end
if not meta then
  redis.call('HSET', KEYS[2], '', ARGV[4], ARGV[2], stamp)
else
  redis.call('HSET', KEYS[2], ARGV[2], stamp)
  local last = tonumber(found[3])
  if not last or now > last then
    local u, c = now, '0'
    if not last and found[3] then
      u, c = string.match(found[3], '^(%d+),(%d+)$')
      if not u then
        bad = bad + 1
        u, c = now, '0'
      end
    end
    local step = redis.call('HSCAN', KEYS[2], c, 'COUNT', 100)
    c = step[1]
    local gone = {}
    local fields = step[2]
    for i = 1, #fields, 2 do
      local f = fields[i]
      if f ~= '' and f ~= '~' then
        local alive = live(fields[i + 1], now)
        if not alive then
          gone[#gone + 1] = f
          if alive == nil then bad = bad + 1 end
          if #gone == 1000 then
            redis.call('HDEL', KEYS[2], unpack(gone))
            gone = {}
          end
        end
      end
    end
    if #gone > 0 then redis.call('HDEL', KEYS[2], unpack(gone)) end
    local state = u .. ',' .. c
    if c == '0' then state = u end
    if c == '0' and redis.call('OBJECT', 'ENCODING', KEYS[2]) == 'hashtable'
        and redis.call('HLEN', KEYS[2]) <= tonumber(ARGV[9]) then
      local all = redis.call('HGETALL', KEYS[2])
      local left = redis.call('PTTL', KEYS[2])
      redis.call('DEL', KEYS[2])
      local args = {'', meta, '~', state}
      for i = 1, #all, 2 do
        if all[i] ~= '' and all[i] ~= '~' then
          args[#args + 1] = all[i]
          args[#args + 1] = all[i + 1]
        end
      end
      redis.call('HSET', KEYS[2], unpack(args))
      if left > 0 then redis.call('PEXPIRE', KEYS[2], left) end
    else
      redis.call('HSET', KEYS[2], '~', state)
    end
  end
end
local left = redis.call('PTTL', KEYS[2])
if left < lead then redis.call('PEXPIREAT', KEYS[2], expire_at) end
if v then redis.call('DEL', KEYS[1]) end
return 8 * bad
"
);

/// The value of a claim key holding a CONSUMED record of its own (a record TTL too short
/// for the records hashes, [`super::layout`]).
pub(super) const CONSUMED_KEY_VALUE: &[u8] = b"1";

/// `KEYS[1]` claim key, `KEYS[2]` the records hash; `ARGV[1]` owner value, `ARGV[2]` the
/// record's field, `ARGV[3]` the unit width for a hash without a meta field. Returns 1 when the
/// claim was deleted; a claim on a CONSUMED record (one a native claim left a moment, see
/// [`super::RedisStore`]) is deleted too, but answers 0: there was no record in flight.
pub(crate) const RELEASE: &str = concat!(
    stamp_fns!(),
    record_live_fn!(),
    r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  if record_live(KEYS[2], ARGV[2], ARGV[3]) then return 0 end
  return 1
end
return 0
"
);

/// `KEYS[1]` claim key, `KEYS[2]` the records hash; `ARGV[1]` owner value, `ARGV[2]` TTL in
/// ms, `ARGV[3]` the record's field, `ARGV[4]` the unit width for a hash without a meta field.
/// Returns 1 when renewed; a claim on a CONSUMED record is deleted instead.
pub(crate) const RENEW: &str = concat!(
    stamp_fns!(),
    record_live_fn!(),
    r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  if record_live(KEYS[2], ARGV[3], ARGV[4]) then
    redis.call('DEL', KEYS[1])
    return 0
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"
);

/// What a commit script answered: the outcome's code and the values it found that were not
/// stamps.
pub(super) fn commit_answer(answer: i64) -> (i64, i64) {
    (answer.rem_euclid(8), answer.div_euclid(8))
}

/// The four scripts, hashed once per process.
pub(super) struct Scripts {
    pub(super) claim: LuaScript,
    pub(super) commit: LuaScript,
    pub(super) release: LuaScript,
    pub(super) renew: LuaScript,
}

/// A script and its source: the hash to call it by, the text to load again on `NOSCRIPT`.
pub(super) struct LuaScript {
    pub(super) script: Script,
    pub(super) source: &'static str,
}

impl LuaScript {
    fn new(source: &'static str) -> Self {
        LuaScript {
            script: Script::new(source),
            source,
        }
    }
}

/// The scripts, built on first use.
pub(super) fn scripts() -> &'static Scripts {
    static SCRIPTS: std::sync::OnceLock<Scripts> = std::sync::OnceLock::new();
    SCRIPTS.get_or_init(|| Scripts {
        claim: LuaScript::new(CLAIM),
        commit: LuaScript::new(COMMIT),
        release: LuaScript::new(RELEASE),
        renew: LuaScript::new(RENEW),
    })
}

/// What the store says of a claim key's value that is not a claim.
pub(super) const UNREADABLE_VALUE: &str =
    "a claim key holds something other than a claim (c…) or a CONSUMED mark (1)";

/// The value of a claim held by `token`.
pub(super) fn owner_value(token: OwnerToken) -> String {
    format!("c{:x}", token.get())
}

#[cfg(test)]
mod tests {
    use super::super::layout::{LIVE_UNITS, MIN_UNIT_MS, STAMP_MODULUS};

    #[test]
    fn the_scripts_read_stamps_and_meta_as_the_layout_does() {
        // The Lua rules and `Stamp::parse`, `live_for` and `Meta::parse` must agree on the
        // modulus, the live window, the digits and the narrowest unit.
        let lua = stamp_fns!();
        assert!(lua.contains(&format!("(s - now % {STAMP_MODULUS}) % {STAMP_MODULUS}")));
        assert!(lua.contains(&format!("ahead <= {LIVE_UNITS}\n")), "{lua}");
        assert!(lua.contains(&format!("s >= {STAMP_MODULUS}")), "{lua}");
        assert!(lua.contains("#v > 3"), "{lua}");
        let record_live = record_live_fn!();
        assert!(record_live.contains(&format!("w < {MIN_UNIT_MS}")));
        assert!(super::COMMIT.contains(&format!("own >= {MIN_UNIT_MS}")));
        for script in [record_live, super::COMMIT] {
            assert!(script.contains("'^(%d+),%d+$'"));
        }
    }

    #[test]
    fn owner_values_start_with_c_as_the_claim_script_expects() {
        // The claim script tells a claim from garbage by its first byte, 99 ('c').
        assert!(super::CLAIM.contains("== 99"));
        let token = crate::store::OwnerToken::from_u64(255).unwrap();
        assert_eq!(super::owner_value(token), "cff");
    }

    #[test]
    fn commit_answers_carry_the_outcome_and_the_bad_values() {
        assert_eq!(super::commit_answer(0), (0, 0));
        assert_eq!(super::commit_answer(2), (2, 0));
        assert_eq!(super::commit_answer(8 * 3 + 1), (1, 3));
    }
}
