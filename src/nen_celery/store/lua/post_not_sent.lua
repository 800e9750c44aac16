-- KEYS: run hash
-- ARGV: execution (the token claim_submit recorded)
-- The POST begin_post just counted surely never reached Nen (a connect error): uncount that one
-- only. post_inflight counts the POSTs of this attempt that may have reached Nen, so one whose
-- fate is unknown stays counted after a later connect error: once possibly sent, always.
-- Returns 1, or 0 for an execution that no longer holds the submit lease (it changes nothing).
if not holds_submit(KEYS[1], ARGV[1]) then return 0 end
local n = tonumber(redis.call('HGET', KEYS[1], 'post_inflight') or '0') or 0
if n > 0 then redis.call('HSET', KEYS[1], 'post_inflight', n - 1) end
return 1
