-- Registers (or keeps alive) one open event stream of a client, fleet-wide.
-- KEYS[1]: the client's open streams: a sorted set of stream ids scored by the time,
--          in ms on Redis's clock, until which each counts as open.
-- ARGV: stream id, cap (0: no check, a keep-alive), ttl_ms.
-- Must hold: streams whose pod stopped renewing them stop counting after ttl_ms; the key
-- carries a TTL.
-- Returns 1 when registered, 0 when the client already holds `cap` streams.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local cap = tonumber(ARGV[2])
if cap > 0 and redis.call('ZSCORE', KEYS[1], ARGV[1]) == false
   and redis.call('ZCARD', KEYS[1]) >= cap then
  return 0
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
