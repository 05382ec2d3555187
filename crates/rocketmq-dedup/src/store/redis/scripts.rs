//! The Lua scripts behind commit, release, renew (and claim before Redis 7.0), and the
//! values a record holds: `c<token>` while CONSUMING, `1` once CONSUMED.
//!
//! `1` is an integer to Redis, which keeps it inside the key's object (no allocation for the
//! value).

use redis::Script;

use crate::store::OwnerToken;

/// `KEYS[1]` record key, `ARGV[1]` owner value (`c<token>`), `ARGV[2]` processing TTL in ms.
/// Returns 0 claimed, 1 in flight, 2 consumed, -1 unreadable record.
pub(crate) const CLAIM: &str = r"
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

/// `KEYS[1]` record key, `ARGV[1]` owner value, `ARGV[2]` record TTL in ms.
/// Returns 0 committed, 1 lost to another owner, 2 already consumed.
pub(crate) const COMMIT: &str = r"
local v = redis.call('GET', KEYS[1])
if v == '1' then return 2 end
if v and v ~= ARGV[1] then return 1 end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[2])
return 0
";

/// `KEYS[1]` record key, `ARGV[1]` owner value. Returns 1 when the claim was deleted.
pub(crate) const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
";

/// `KEYS[1]` record key, `ARGV[1]` owner value, `ARGV[2]` TTL in ms. Returns 1 when renewed.
pub(crate) const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
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

/// What the store says of a record value that is neither a claim nor the CONSUMED mark.
pub(super) const UNREADABLE_VALUE: &str = "value is neither a claim (c…) nor a consumed mark (1)";

/// Whether a record's value is the CONSUMED mark, `1`.
pub(super) fn is_consumed(value: &[u8]) -> bool {
    value == b"1"
}

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

    #[test]
    fn the_scripts_and_the_client_agree_on_the_consumed_mark() {
        for script in [super::CLAIM, super::COMMIT] {
            assert!(script.contains("if v == '1' then return 2 end"));
        }
        assert!(super::COMMIT.contains("SET', KEYS[1], '1'"));
        assert!(super::is_consumed(b"1"));
        assert!(
            !super::is_consumed(b"c1") && !super::is_consumed(b"10") && !super::is_consumed(b"d")
        );
    }
}
