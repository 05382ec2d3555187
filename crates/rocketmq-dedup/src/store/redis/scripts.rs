//! The Lua scripts behind commit, release, renew (and claim before Redis 7.0), and the
//! values a claim holds: `c<token>` while CONSUMING. A CONSUMED record is a field of a bucket
//! hash ([`super::layout`]).

use redis::Script;

use crate::store::OwnerToken;

/// `KEYS[1]` claim key, `KEYS[2..]` the live buckets; `ARGV[1]` owner value (`c<token>`),
/// `ARGV[2]` processing TTL in ms, `ARGV[3]` the record's field.
/// Returns 0 claimed, 1 in flight, 2 consumed, -1 unreadable claim.
pub(crate) const CLAIM: &str = r"
for i = 2, #KEYS do
  if redis.call('HEXISTS', KEYS[i], ARGV[3]) == 1 then return 2 end
end
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 0
end
if v == '1' then return 2 end
if v == ARGV[1] then return 0 end
if string.byte(v, 1) == 99 then return 1 end
return -1
";

/// `KEYS[1]` claim key, `KEYS[2]` the current bucket, `KEYS[3..]` the other live buckets;
/// `ARGV[1]` owner value, `ARGV[2]` the record's field, `ARGV[3]` when the current bucket
/// expires and `ARGV[4]` now (Unix ms); `ARGV[5]` the record TTL in ms when the record is kept
/// in its own key (a TTL too short for the buckets), else `0`.
/// Returns 0 committed, 1 lost to another owner, 2 already consumed.
///
/// A record already CONSUMED stays so (a claim this owner holds on it is one a claim made on
/// a CONSUMED record, [`super::RedisStore`]'s `claim_native`: it goes). Else a claim of
/// another owner wins; this owner's, or one that expired (nobody else took it), is
/// committed: one `HSET`, the bucket's expiry (only ever moved later, for stores with a
/// longer record TTL) and the claim's `DEL`.
pub(crate) const COMMIT: &str = r"
local v = redis.call('GET', KEYS[1])
if v == '1' then return 2 end
for i = 2, #KEYS do
  if redis.call('HEXISTS', KEYS[i], ARGV[2]) == 1 then
    if v == ARGV[1] then redis.call('DEL', KEYS[1]) end
    return 2
  end
end
if v and v ~= ARGV[1] then return 1 end
if ARGV[5] ~= '0' then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[5])
  return 0
end
redis.call('HSET', KEYS[2], ARGV[2], '')
local left = redis.call('PTTL', KEYS[2])
if left < 0 or tonumber(ARGV[4]) + left < tonumber(ARGV[3]) then
  redis.call('PEXPIREAT', KEYS[2], ARGV[3])
end
if v then redis.call('DEL', KEYS[1]) end
return 0
";

/// The value of a claim key holding a CONSUMED record of its own (a record TTL too short
/// for the buckets, [`super::layout`]).
pub(super) const CONSUMED_KEY_VALUE: &[u8] = b"1";

/// `KEYS[1]` claim key, `KEYS[2..]` the live buckets; `ARGV[1]` owner value, `ARGV[2]` the
/// record's field. Returns 1 when the claim was deleted; a claim on a CONSUMED record is
/// deleted too, but answers 0: there was no record in flight to release.
pub(crate) const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  for i = 2, #KEYS do
    if redis.call('HEXISTS', KEYS[i], ARGV[2]) == 1 then return 0 end
  end
  return 1
end
return 0
";

/// `KEYS[1]` claim key, `KEYS[2..]` the live buckets; `ARGV[1]` owner value, `ARGV[2]` TTL
/// in ms, `ARGV[3]` the record's field. Returns 1 when renewed; a claim on a CONSUMED record
/// is deleted instead.
pub(crate) const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  for i = 2, #KEYS do
    if redis.call('HEXISTS', KEYS[i], ARGV[3]) == 1 then
      redis.call('DEL', KEYS[1])
      return 0
    end
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

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
    fn owner_values_start_with_c_as_the_claim_script_expects() {
        // The claim script tells a claim from garbage by its first byte, 99 ('c').
        assert!(super::CLAIM.contains("== 99"));
        let token = crate::store::OwnerToken::from_u64(255).unwrap();
        assert_eq!(super::owner_value(token), "cff");
    }
}
