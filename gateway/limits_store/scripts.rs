//! The Lua scripts the store runs: each one step done atomically in one round trip.
//! Times come from the server's clock (`TIME`), so replicas whose clocks disagree still
//! share one bucket correctly. Numbers are written with `%.0f`, exact for the integers
//! used here on every Redis and Valkey version.

/// One request against a GCRA bucket (the algorithm of governor, which the local store
/// uses). KEYS[1]: the bucket; ARGV[1]: the interval in which one request comes back
/// (µs); ARGV[2]: the burst. Returns `{1, remaining, µs until full}` when allowed, or
/// `{0, 0, µs until one request passes}`. The key holds the theoretical arrival time and
/// expires when the bucket is full again: an idle client costs no memory.
pub const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - burst * interval
if now < allow_at then
  return {0, 0, allow_at - now}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return {1, math.floor((now - allow_at) / interval), new_tat - now}
"#;

/// Whether a client is over its failed-login limit. KEYS[1]: its count; ARGV[1]: the
/// limit. Returns the milliseconds left in its window when over, else -1.
pub const LOGINS_BLOCKED: &str = r#"
local n = tonumber(redis.call('GET', KEYS[1])) or 0
if n < tonumber(ARGV[1]) then return -1 end
local left = redis.call('PTTL', KEYS[1])
if left < 0 then return -1 end
return left
"#;

/// Counts one failed login. KEYS[1]: the count; ARGV[1]: the window (ms), opened by the
/// first failure. Returns the count.
pub const LOGIN_FAILED: &str = r#"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
"#;
