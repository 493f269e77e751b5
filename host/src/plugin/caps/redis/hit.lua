-- Sliding window, two-window estimate: the semantics are in redis.rs.
-- KEYS[1]: the window, a hash {win, cur, prev, len}. One key rather than one per
-- window keeps the script to one hash slot (Redis Cluster) and the key as given.
-- ARGV: limit, window in ms, cost.
-- Returns {allowed (0 or 1), previous count, current count after the hit
-- (%.17g strings), elapsed ms in the current window}.

-- Before Redis 5 a script that calls TIME may only write once it has switched
-- to effects replication; later versions do so always and keep this as a no-op.
if redis.replicate_commands then pcall(redis.replicate_commands) end

local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])

-- Server time, so gateways with skewed clocks share window boundaries.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local index = math.floor(now / window)
local elapsed = now - index * window

local state = redis.call('HMGET', KEYS[1], 'win', 'cur', 'prev', 'len')
local win = tonumber(state[1])
local cur = tonumber(state[2]) or 0
local prev = tonumber(state[3]) or 0
-- Counted with another window length (the limit's `per` changed): its
-- index means nothing in this one, so it starts afresh, as in memory. (A
-- hash written before `len` was kept has none: it is taken as this length.)
local len = tonumber(state[4]) or window
if win == nil or len ~= window or win < index - 1 then
  win, prev, cur = index, 0, 0
elseif win == index - 1 then
  win, prev, cur = index, cur, 0
end
-- win > index: the server clock stepped back over a boundary. The stored,
-- later window keeps its counts, which can only refuse more, never less.

local estimate = prev * (window - elapsed) / window + cur
local allowed = 0
if estimate + cost <= limit then
  cur = cur + cost
  allowed = 1
  -- A refusal changes nothing that the window index does not already imply,
  -- so only a hit writes. 2 x window after the last hit, neither count is read.
  redis.call('HSET', KEYS[1], 'win', string.format('%d', win), 'cur', string.format('%.17g', cur),
    'prev', string.format('%.17g', prev), 'len', string.format('%d', window))
  redis.call('PEXPIRE', KEYS[1], string.format('%d', 2 * window))
end

return {allowed, string.format('%.17g', prev), string.format('%.17g', cur), elapsed}
