//! The Lua scripts admission runs in Redis, each over keys of one Redis
//! Cluster slot.

/// Takes a lease for `ARGV[1]` in the sets of the organization
/// (`KEYS[1]`), the agent (`KEYS[2]`) and the number (`KEYS[3]`), one Redis
/// Cluster slot. `ARGV[4..6]` are the three levels' limits, `-1` for none.
///
/// Returns `{code, level, active, limit}`: code 0 = refused (at the limit of
/// `level`: 1 organization, 2 agent, 3 number), 1 = admitted, 2 = the call
/// already holds a lease (a retry), 3 = over the limit of `level` but
/// admitted (shadow mode). `active` and `limit` are the refusing level's
/// (the organization's when admitted), `active` counting live leases
/// including this call's when admitted. Public for the benchmarks, which run
/// it alone as the floor of `RouteCall`.
pub const TAKE_LEASE: &str = r"
local now = redis.call('TIME')
now = now[1] * 1000 + math.floor(now[2] / 1000)
local active = {}
for i = 1, 3 do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  active[i] = redis.call('ZCARD', KEYS[i])
end
local org_limit = tonumber(ARGV[4])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return {2, 1, active[1], org_limit}
end
local lease_ms = tonumber(ARGV[2])
local over = 0
for i = 1, 3 do
  local limit = tonumber(ARGV[3 + i])
  if limit >= 0 and active[i] >= limit then
    if ARGV[3] == 'enforce' then
      return {0, i, active[i], limit}
    end
    if over == 0 then over = i end
  end
end
for i = 1, 3 do
  redis.call('ZADD', KEYS[i], now + lease_ms, ARGV[1])
  -- a set lives as long as its longest lease, so idle ones leave nothing
  if redis.call('PTTL', KEYS[i]) < lease_ms then
    redis.call('PEXPIRE', KEYS[i], lease_ms)
  end
end
if over > 0 then
  return {3, over, active[over] + 1, tonumber(ARGV[3 + over])}
end
return {1, 1, active[1] + 1, org_limit}
";

/// Counts the live leases of the sets `KEYS[1..3]` (organization, agent,
/// number) at Redis server time (the clock leases are scored by), without
/// reaping the expired ones: a lease is live while its expiry is after now.
pub(super) const COUNT_LEASES: &str = r"
local now = redis.call('TIME')
now = now[1] * 1000 + math.floor(now[2] / 1000)
local counts = {}
for i = 1, #KEYS do
  counts[i] = redis.call('ZCOUNT', KEYS[i], '(' .. now, '+inf')
end
return counts
";

/// Releases `ARGV[1]`'s lease from the sets `KEYS` (one slot): how many
/// held it.
pub(super) const RELEASE_LEASE: &str = r"
local removed = 0
for i = 1, #KEYS do
  removed = removed + redis.call('ZREM', KEYS[i], ARGV[1])
end
return removed
";

/// Brings one organization's leases in line with its call records (one
/// Redis Cluster slot: `KEYS[1]` is the organization's set, `KEYS[2..]` its
/// agents' and numbers' sets that the calls below name).
///
/// `ARGV[1]` is the lease lifetime (ms), `ARGV[2]` the number of open calls
/// `n`; then for each open call its id, its start (ms since the epoch) and
/// the indexes in `KEYS` of its agent's and its number's sets; then for each
/// ended call its id and the same two indexes. An open call without a live
/// lease gets one, expiring a lease lifetime after its start (a call already
/// past it is left out); an ended call's lease is removed from its three
/// sets.
///
/// Returns `{added, removed}`: the leases found missing, and those found
/// held by calls that had ended.
pub(super) const RECONCILE_LEASES: &str = r"
local now = redis.call('TIME')
now = now[1] * 1000 + math.floor(now[2] / 1000)
local lease_ms = tonumber(ARGV[1])
local open = tonumber(ARGV[2])
local added, removed = 0, 0
local at = 3
for _ = 1, open do
  local id, expiry = ARGV[at], tonumber(ARGV[at + 1]) + lease_ms
  local sets = {KEYS[1], KEYS[tonumber(ARGV[at + 2])], KEYS[tonumber(ARGV[at + 3])]}
  at = at + 4
  if expiry > now then
    if redis.call('ZADD', KEYS[1], 'NX', expiry, id) == 1 then added = added + 1 end
    for i = 2, 3 do redis.call('ZADD', sets[i], 'NX', expiry, id) end
    for i = 1, 3 do
      if redis.call('PTTL', sets[i]) < expiry - now then
        redis.call('PEXPIRE', sets[i], expiry - now)
      end
    end
  end
end
while at <= #ARGV do
  local id = ARGV[at]
  removed = removed + redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[tonumber(ARGV[at + 1])], id)
  redis.call('ZREM', KEYS[tonumber(ARGV[at + 2])], id)
  at = at + 3
end
return {added, removed}
";
