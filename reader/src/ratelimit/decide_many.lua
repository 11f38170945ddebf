-- Rate-limit decisions, one or several, in one atomic step on Redis's own clock (one
-- reading of TIME for all): the decisions are taken one after another in the order
-- given, each seeing everything the ones before it committed, so a batch decides
-- exactly as the same decisions sent one by one at that instant would.
-- KEYS: pairs of one client's keys, each pair once: KEYS[2k-1] its GCRA state
--       (theoretical arrival time, microseconds), KEYS[2k] its quota hash (w = window
--       id, bytes, credits).
-- ARGV: ARGV[1] = n, the number of key pairs; then 5 values per pair, the limits of
--       its client's tier: period_us, tolerance_us, window_us, byte_quota,
--       credit_quota; then 4 values per decision: k (which key pair), cost, pending
--       requests, pending credits (admitted from a pod-local lease and not yet
--       recorded: committed first, whatever the decision).
-- Must hold: a request is committed only if all three limits allow it; every key
-- written carries a TTL; each key is read once and written at most once.
-- Returns 7 values per decision, in order: {refused (0 none, 1 requests, 2 bytes,
--          3 credits), retry_us, remaining burst, us until the burst is full, bytes left,
--          credits left, us until window end}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local pairs_n = tonumber(ARGV[1])
local clients = {}
local out = {}

-- Loads pair k's state (once per call) with its tier's limits.
local function client(k)
  local c = clients[k]
  if c ~= nil then return c end
  local a = 1 + (k - 1) * 5
  local q = redis.call('HMGET', KEYS[2 * k], 'w', 'bytes', 'credits')
  c = {
    tat = tonumber(redis.call('GET', KEYS[2 * k - 1]) or '0'),
    w = tonumber(q[1]),
    bytes = tonumber(q[2]) or 0,
    credits = tonumber(q[3]) or 0,
    rate_written = false,
    quota_written = false,
    period = tonumber(ARGV[a + 1]),
    tolerance = tonumber(ARGV[a + 2]),
    window = tonumber(ARGV[a + 3]),
    byte_quota = tonumber(ARGV[a + 4]),
    credit_quota = tonumber(ARGV[a + 5]),
  }
  clients[k] = c
  return c
end

-- Commits requests and credits to c in window wid (a new window starts empty).
local function commit(c, wid, added_requests, added_credits)
  c.tat = c.tat + c.period * added_requests
  c.rate_written = true
  if c.w ~= wid then
    c.w = wid
    c.bytes = 0
    c.credits = 0
  end
  c.credits = c.credits + added_credits
  c.quota_written = true
end

local first = 1 + pairs_n * 5
for i = 0, (#ARGV - first) / 4 - 1 do
  local a = first + i * 4
  local c = client(tonumber(ARGV[a + 1]))
  local cost = tonumber(ARGV[a + 2])
  local pending = tonumber(ARGV[a + 3])
  local pending_credits = tonumber(ARGV[a + 4])
  local window = c.window
  local wid = math.floor(now / window)
  local window_end = (wid + 1) * window
  if c.tat < now then c.tat = now end
  if pending > 0 or pending_credits > 0 then commit(c, wid, pending, pending_credits) end
  local bytes = 0
  local credits = 0
  if c.w == wid then
    bytes = c.bytes
    credits = c.credits
  end
  local refused = 0
  local retry = 0
  if c.tat - now > c.tolerance then
    refused = 1
    retry = c.tat - c.tolerance - now
  end
  if refused == 0 and c.byte_quota > 0 and bytes >= c.byte_quota then
    refused = 2
    retry = window_end - now
  end
  if refused == 0 and c.credit_quota > 0 and credits + cost > c.credit_quota then
    refused = 3
    retry = window_end - now
  end
  if refused == 0 then
    commit(c, wid, 1, cost)
    credits = c.credits
  end
  local remaining = math.floor((now + c.tolerance - c.tat) / c.period) + 1
  if refused > 0 or remaining < 0 then remaining = 0 end
  local o = i * 7
  out[o + 1] = refused
  out[o + 2] = math.floor(retry)
  out[o + 3] = remaining
  out[o + 4] = math.floor(c.tat - now)
  out[o + 5] = math.max(c.byte_quota - bytes, 0)
  out[o + 6] = math.max(c.credit_quota - credits, 0)
  out[o + 7] = math.floor(window_end - now)
end
for k, c in pairs(clients) do
  if c.rate_written then
    redis.call('SET', KEYS[2 * k - 1], string.format('%.0f', c.tat), 'PX', math.floor((c.tat - now) / 1000) + 1000)
  end
  if c.quota_written then
    redis.call('HSET', KEYS[2 * k], 'w', string.format('%.0f', c.w), 'bytes', string.format('%.0f', c.bytes), 'credits', string.format('%.0f', c.credits))
    redis.call('PEXPIRE', KEYS[2 * k], math.floor(c.window / 1000) * 2)
  end
end
return out
