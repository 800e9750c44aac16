-- KEYS: dispatch guard of one run attempt, the run hash (same slot).  ARGV: token, ttl, now, lease
-- The guard holds '<token>@<claimed at>' while a callback runs and '<token>|done' once it
-- reached its end. Returns:
--   'run'  first dispatch to start; or a redelivery of the running one (it did not finish);
--          or a newer dispatch taking over a claim older than the lease (its runner is gone)
--   'done' this dispatch already reached its end (only its ack was lost)
--   'skip' another dispatch holds or finished the callback
local v = redis.call('GET', KEYS[1])
local mine = ARGV[1] .. '@'
local function claim()
  redis.call('SET', KEYS[1], mine .. ARGV[3], 'EX', ARGV[2])
  -- the callback started: a redelivered ingest of the dispatching task must not dispatch again
  -- (ingest.lua), and the record need not keep the holder
  if redis.call('HGET', KEYS[2], 'completion') == 'sent' then
    redis.call('HDEL', KEYS[2], 'completion_holder')
  end
  return 'run'
end
if not v then return claim() end
if v == ARGV[1] .. '|done' then return 'done' end
if string.sub(v, 1, #mine) == mine then return claim() end
if string.sub(v, -5) == '|done' then return 'skip' end
local at = tonumber(string.match(v, '@([%d%.]+)$') or '0') or 0
if tonumber(ARGV[3]) - at > tonumber(ARGV[4]) then return claim() end
return 'skip'
