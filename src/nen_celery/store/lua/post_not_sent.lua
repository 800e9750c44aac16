-- KEYS: run hash
-- ARGV: execution (the token claim_submit recorded), untried ('1': the request was never made,
--       so attempts is uncounted too; '0': it was tried, a connect error)
-- The POST last counted (by claim_submit or begin_post) surely never reached Nen: uncount that
-- one only. post_inflight counts the POSTs of this attempt that may have reached Nen, so one whose
-- fate is unknown stays counted after a later connect error: once possibly sent, always.
-- Returns 1, or 0 for an execution that no longer holds the submit lease (it changes nothing).
if not holds_submit(KEYS[1], ARGV[1]) then return 0 end
local n = tonumber(redis.call('HGET', KEYS[1], 'post_inflight') or '0') or 0
if n > 0 then
  redis.call('HSET', KEYS[1], 'post_inflight', n - 1)
  if ARGV[2] == '1' then
    local tried = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0') or 0
    if tried > 0 then redis.call('HSET', KEYS[1], 'attempts', tried - 1) end
  end
end
return 1
