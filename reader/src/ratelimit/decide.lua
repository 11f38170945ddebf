-- One rate-limit decision, atomically, on Redis's own clock.
-- KEYS[1]: the client's GCRA state (theoretical arrival time, microseconds).
-- KEYS[2]: the client's quota hash (w = window id, bytes, credits).
-- ARGV: period_us, tolerance_us, window_us, byte_quota, credit_quota, cost,
--       pending requests, pending credits (admitted from a pod-local lease and not yet
--       recorded: committed first, whatever the decision).
-- Must hold: the request is committed only if all three limits allow it; every key
-- written carries a TTL.
-- Returns {refused (0 none, 1 requests, 2 bytes, 3 credits), retry_us, remaining burst,
--          us until the burst is full, bytes left, credits left, us until window end}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local period = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local byte_quota = tonumber(ARGV[4])
local credit_quota = tonumber(ARGV[5])
local cost = tonumber(ARGV[6])
local pending = tonumber(ARGV[7])
local pending_credits = tonumber(ARGV[8])
local wid = math.floor(now / window)
local window_end = (wid + 1) * window
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local q = redis.call('HMGET', KEYS[2], 'w', 'bytes', 'credits')
local bytes = 0
local credits = 0
local current = tonumber(q[1]) == wid
if current then
  bytes = tonumber(q[2]) or 0
  credits = tonumber(q[3]) or 0
end
local function commit(added_requests, added_credits)
  tat = tat + period * added_requests
  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.floor((tat - now) / 1000) + 1000)
  if not current then
    redis.call('HSET', KEYS[2], 'w', string.format('%.0f', wid), 'bytes', 0, 'credits', 0)
    current = true
  end
  credits = credits + added_credits
  redis.call('HINCRBY', KEYS[2], 'credits', added_credits)
  redis.call('PEXPIRE', KEYS[2], math.floor(window / 1000) * 2)
end
if pending > 0 or pending_credits > 0 then commit(pending, pending_credits) end
local refused = 0
local retry = 0
if tat - now > tolerance then
  refused = 1
  retry = tat - tolerance - now
end
if refused == 0 and byte_quota > 0 and bytes >= byte_quota then
  refused = 2
  retry = window_end - now
end
if refused == 0 and credit_quota > 0 and credits + cost > credit_quota then
  refused = 3
  retry = window_end - now
end
if refused == 0 then commit(1, cost) end
local remaining = math.floor((now + tolerance - tat) / period) + 1
if refused > 0 or remaining < 0 then remaining = 0 end
return {refused, math.floor(retry), remaining, math.floor(tat - now), math.max(byte_quota - bytes, 0), math.max(credit_quota - credits, 0), math.floor(window_end - now)}
