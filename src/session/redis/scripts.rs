//! The Lua scripts the store runs, each on one key (so a cluster never sees CROSSSLOT):
//! a write and its invalidation message in one round trip, the compare-and-set of
//! `replace`, and the lock's compare-and-renew and compare-and-delete. `EVALSHA` first;
//! the crate loads a script the server does not know yet.

use std::sync::LazyLock;

use ::redis::Script;

/// KEYS[1] = key; ARGV = value, ttl ms, channel, message.
pub static PUT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1",
    )
});

/// KEYS[1] = key; ARGV = expected, value, ttl ms, channel, message. 1 if written.
pub static REPLACE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1",
    )
});

/// KEYS[1] = key; ARGV = channel, message.
pub static DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1",
    )
});

/// KEYS[1] = lock; ARGV = token, ttl ms. 1 if still ours and extended.
pub static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0",
    )
});

/// KEYS[1] = lock; ARGV = token. 1 if it was ours and is released.
pub static UNLOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0",
    )
});
