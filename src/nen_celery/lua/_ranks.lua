-- Status ranks, kept equal to status.RANK (a test checks every pair against can_transition).
local RANK = {queued=0, unknown=1, submitted=1, processing=2,
              success=3, failed=3, rejected=3, submit_failed=3}
local function can_transition(cur, new)
  if RANK[new] == nil then return false end
  if cur == 'unknown' and new == 'submitted' then return true end
  return RANK[new] > (RANK[cur] or -1)
end
local function push_history(key, status, now, source)
  local raw = redis.call('HGET', key, 'history')
  local hist = {}
  if raw and raw ~= '' then hist = cjson.decode(raw) end
  hist[#hist + 1] = {status=status, at=tonumber(now), source=source}
  redis.call('HSET', key, 'history', cjson.encode(hist))
end
