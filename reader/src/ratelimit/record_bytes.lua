-- Adds response bytes to a client's byte quota for the current window.
-- KEYS[1]: the client's quota hash (w = window id, bytes, credits).
-- ARGV: window_us, bytes.
-- Must hold: a new window starts from zero; the hash carries a TTL.
-- Returns the bytes counted in the current window so far.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[1])
local wid = math.floor(now / window)
if tonumber(redis.call('HGET', KEYS[1], 'w')) ~= wid then
  redis.call('HSET', KEYS[1], 'w', string.format('%.0f', wid), 'bytes', 0, 'credits', 0)
end
local total = redis.call('HINCRBY', KEYS[1], 'bytes', ARGV[2])
redis.call('PEXPIRE', KEYS[1], math.floor(window / 1000) * 2)
return total
