//! The Lua scripts behind commit, release, renew (and claim before Redis 7.0), and the
//! values a claim holds: `c<token>` while CONSUMING. A CONSUMED record is a field of its
//! shard's records hash, its value a stamp ([`super::layout`]).
//!
//! Every script that reads a stamp gets now's (`ARGV[n]`, the caller's clock) and reads it as
//! [`ShardLayout::live_for`](super::layout::ShardLayout::live_for) does: live while 1 to 64
//! units ahead, modulo 128. A stamp that is not a number is an error (the script fails, and
//! the store's call with it).

use redis::Script;

use crate::store::OwnerToken;

/// Lua: `live(stamp, now)`, whether a record's stamp is live at unit `now` (both modulo 128).
macro_rules! live_fn {
    () => {
        r"
local function live(stamp, now)
  local s = tonumber(stamp)
  if not s then error('a records hash holds a value that is not a stamp') end
  local ahead = (s - now) % 128
  return ahead >= 1 and ahead <= 64
end
"
    };
}

/// `KEYS[1]` claim key, `KEYS[2]` the records hash; `ARGV[1]` owner value (`c<token>`),
/// `ARGV[2]` processing TTL in ms, `ARGV[3]` the record's field, `ARGV[4]` now's stamp.
/// Returns 0 claimed, 1 in flight, 2 consumed, -1 unreadable claim.
pub(crate) const CLAIM: &str = concat!(
    live_fn!(),
    r"
local at = redis.call('HGET', KEYS[2], ARGV[3])
if at and live(at, tonumber(ARGV[4])) then return 2 end
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
/// record's field, `ARGV[3]` now's stamp, `ARGV[4]` the record's stamp, `ARGV[5]` when it
/// stops being live and `ARGV[6]` now (Unix ms); `ARGV[7]` the record TTL in ms when the
/// record is kept in its own key (a TTL too short for the hashes), else `0`.
/// Returns 0 committed, 1 lost to another owner, 2 already consumed.
///
/// A record already CONSUMED stays so (a claim this owner holds on it is one a claim made on
/// a CONSUMED record, [`super::RedisStore`]'s `claim_native`: it goes). Else a claim of
/// another owner wins; this owner's, or one that expired (nobody else took it), is
/// committed: one `HSET` (with the sweep's unit, after the sweep, on the hash's first commit
/// of a unit), the hash's expiry (only ever moved later) and the claim's `DEL`.
pub(crate) const COMMIT: &str = concat!(
    live_fn!(),
    r"
local v = redis.call('GET', KEYS[1])
if v == '1' then return 2 end
local now = tonumber(ARGV[3])
local found = redis.call('HMGET', KEYS[2], ARGV[2], '')
if found[1] and live(found[1], now) then
  if v == ARGV[1] then redis.call('DEL', KEYS[1]) end
  return 2
end
if v and v ~= ARGV[1] then return 1 end
if ARGV[7] ~= '0' then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[7])
  return 0
end
if found[2] == ARGV[3] then
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[4])
else
  if found[2] then
    local all = redis.call('HGETALL', KEYS[2])
    local gone = {}
    for i = 1, #all, 2 do
      if all[i] ~= '' and not live(all[i + 1], now) then
        gone[#gone + 1] = all[i]
        if #gone == 1000 then
          redis.call('HDEL', KEYS[2], unpack(gone))
          gone = {}
        end
      end
    end
    if #gone > 0 then redis.call('HDEL', KEYS[2], unpack(gone)) end
  end
  redis.call('HSET', KEYS[2], '', ARGV[3], ARGV[2], ARGV[4])
end
local left = redis.call('PTTL', KEYS[2])
if left < 0 or tonumber(ARGV[6]) + left < tonumber(ARGV[5]) then
  redis.call('PEXPIREAT', KEYS[2], ARGV[5])
end
if v then redis.call('DEL', KEYS[1]) end
return 0
"
);

/// The value of a claim key holding a CONSUMED record of its own (a record TTL too short
/// for the records hashes, [`super::layout`]).
pub(super) const CONSUMED_KEY_VALUE: &[u8] = b"1";

/// `KEYS[1]` claim key, `KEYS[2]` the records hash; `ARGV[1]` owner value, `ARGV[2]` the
/// record's field, `ARGV[3]` now's stamp. Returns 1 when the claim was deleted; a claim on a
/// CONSUMED record is deleted too, but answers 0: there was no record in flight to release.
pub(crate) const RELEASE: &str = concat!(
    live_fn!(),
    r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  local at = redis.call('HGET', KEYS[2], ARGV[2])
  if at and live(at, tonumber(ARGV[3])) then return 0 end
  return 1
end
return 0
"
);

/// `KEYS[1]` claim key, `KEYS[2]` the records hash; `ARGV[1]` owner value, `ARGV[2]` TTL in
/// ms, `ARGV[3]` the record's field, `ARGV[4]` now's stamp. Returns 1 when renewed; a claim on
/// a CONSUMED record is deleted instead.
pub(crate) const RENEW: &str = concat!(
    live_fn!(),
    r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  local at = redis.call('HGET', KEYS[2], ARGV[3])
  if at and live(at, tonumber(ARGV[4])) then
    redis.call('DEL', KEYS[1])
    return 0
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"
);

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
    #[test]
    fn the_scripts_read_stamps_as_the_layout_does() {
        // The Lua `live` and `ShardLayout::live_for` must agree on the modulus and the window.
        use super::super::layout::{LIVE_UNITS, STAMP_MODULUS};
        let lua = live_fn!();
        assert!(lua.contains(&format!("% {STAMP_MODULUS}\n")), "{lua}");
        assert!(lua.contains(&format!("ahead <= {LIVE_UNITS}\n")), "{lua}");
    }

    #[test]
    fn owner_values_start_with_c_as_the_claim_script_expects() {
        // The claim script tells a claim from garbage by its first byte, 99 ('c').
        assert!(super::CLAIM.contains("== 99"));
        let token = crate::store::OwnerToken::from_u64(255).unwrap();
        assert_eq!(super::owner_value(token), "cff");
    }
}
