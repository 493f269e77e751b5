-- Token bucket with continuous refill: the semantics are in redis.rs.
-- KEYS[1]: the bucket, a hash {tokens, last}.
-- ARGV: capacity, refill per second, cost, longest TTL in ms.
-- Returns {allowed (0 or 1), tokens left (%.17g string)}.

-- Before Redis 5 a script that calls TIME may only write once it has switched
-- to effects replication; later versions do so always and keep this as a no-op.
if redis.replicate_commands then pcall(redis.replicate_commands) end

local capacity = tonumber(ARGV[1])
local refill = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local max_ttl = tonumber(ARGV[4])

-- Server time, so gateways with skewed clocks agree on one bucket.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)

local state = redis.call('HMGET', KEYS[1], 'tokens', 'last')
local tokens = tonumber(state[1])
local last = tonumber(state[2])
if tokens == nil or last == nil then
  tokens = capacity
  last = now
end
-- A server clock stepped back refills nothing, and keeps the later `last` so
-- the interval is not refilled twice once the clock catches up. The min also
-- applies then: a bucket whose capacity was lowered holds no more than it.
tokens = math.min(capacity, tokens + math.max(0, now - last) * refill / 1000)
last = math.max(last, now)

local allowed = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
end

-- Expire when the bucket is full again: a missing bucket is a full one, so
-- the key is dropped exactly when it stops carrying information.
local ttl = math.ceil((capacity - tokens) / refill * 1000)
if ttl < 1 then ttl = 1 end
if ttl > max_ttl then ttl = max_ttl end

-- %.17g round-trips a double; Lua's tostring (%.14g) would lose tokens.
local tokens_text = string.format('%.17g', tokens)
redis.call('HSET', KEYS[1], 'tokens', tokens_text, 'last', string.format('%d', last))
redis.call('PEXPIRE', KEYS[1], string.format('%d', ttl))
return {allowed, tokens_text}
