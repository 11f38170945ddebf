-- Records n requests (and their credits) that a pod admitted from a hot client's local
-- lease, and reports what is left so the lease can be renewed.
-- KEYS[1]: the client's GCRA state; KEYS[2]: its quota hash.
-- ARGV: period_us, tolerance_us, window_us, byte_quota, credit_quota, n, credits.
-- Must hold: what was admitted is always recorded (never refused: it already happened);
-- every key written carries a TTL.
-- Returns {remaining burst, us until the burst is full, bytes left, credits left,
--          us until window end}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local period = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local byte_quota = tonumber(ARGV[4])
local credit_quota = tonumber(ARGV[5])
local n = tonumber(ARGV[6])
local cost = tonumber(ARGV[7])
local wid = math.floor(now / window)
local window_end = (wid + 1) * window
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + period * n
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.floor((new_tat - now) / 1000) + 1000)
local q = redis.call('HMGET', KEYS[2], 'w', 'bytes', 'credits')
local bytes = 0
local credits = 0
if tonumber(q[1]) == wid then
  bytes = tonumber(q[2]) or 0
  credits = tonumber(q[3]) or 0
else
  redis.call('HSET', KEYS[2], 'w', string.format('%.0f', wid), 'bytes', 0, 'credits', 0)
end
credits = credits + cost
redis.call('HINCRBY', KEYS[2], 'credits', cost)
redis.call('PEXPIRE', KEYS[2], math.floor(window / 1000) * 2)
local remaining = math.floor((now + tolerance - new_tat) / period) + 1
if remaining < 0 then remaining = 0 end
return {remaining, math.floor(new_tat - now), math.max(byte_quota - bytes, 0), math.max(credit_quota - credits, 0), math.floor(window_end - now)}
