-- Token bucket shared by every worker talking to Nen. One key (a hash), so it is one slot.
-- KEYS: bucket (a hash: tokens, a float, negative = slots already promised; ts, when `tokens`
--       was true, in the future while paused; epoch, bumped by each pause)
-- ARGV: mode ("take" or "pause"), rate (tokens/s, > 0), burst (capacity, >= 1),
--       now (seconds, or "" to use the Redis clock: one clock for every worker),
--       arg (take: the longest wait the caller accepts, s; pause: how long to hold off, s)
-- take  -> {1, wait, epoch}: a token is reserved, to be used after `wait` seconds
--          {0, wait, epoch}: none within the accepted wait; nothing reserved
-- pause -> {1, until, epoch}: no token before `until`, then one token and the rate again;
--          promises made before the pause are void (their holders see the epoch change)
local key, mode = KEYS[1], ARGV[1]
local rate, burst = tonumber(ARGV[2]), tonumber(ARGV[3])
local now = tonumber(ARGV[4])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local arg = tonumber(ARGV[5])

local state = redis.call('HMGET', key, 'tokens', 'ts', 'epoch')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
local epoch = tonumber(state[3]) or 0
if now > ts then -- refill up to now
  tokens = math.min(burst, tokens + (now - ts) * rate)
  ts = now
end

local function save()
  redis.call('HSET', key, 'tokens', tostring(tokens), 'ts', tostring(ts), 'epoch', epoch)
  -- once full again the bucket is the same as no key at all
  local full_in = (ts - now) + (burst - tokens) / rate
  redis.call('PEXPIRE', key, math.ceil(full_in * 1000) + 60000)
end

if mode == 'pause' then
  local untl = now + arg
  if untl > ts then
    ts, tokens, epoch = untl, 1, epoch + 1
    save()
  end
  return {1, tostring(math.max(untl, ts)), epoch}
end

local after = tokens - 1
local wait = (ts + math.max(0, -after) / rate) - now
if wait > arg then
  return {0, tostring(wait), epoch}
end
tokens = after
save()
return {1, tostring(math.max(0, wait)), epoch}
