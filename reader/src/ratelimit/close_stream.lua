-- Unregisters one event stream of a client (it ended).
-- KEYS[1]: the client's open streams (see open_stream.lua). ARGV: stream id.
-- Must hold: only that stream is removed.
-- Returns the number of streams removed (0 or 1).
return redis.call('ZREM', KEYS[1], ARGV[1])
