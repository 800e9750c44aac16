-- KEYS: message index, parked webhooks for that message (one hash slot: {message_id})
-- ARGV: run_id, ttl, mode ('force': Nen's 202 or its lookup named the run, Nen's word; 'free':
--       a webhook's run hint, only while the messageId is bound to no other run)
-- Returns {'ok', the other run it was bound to ('' none), webhooks parked before the binding...}
-- ('force'), {'ok', ''} ('free'), or {'taken', the run it is bound to} ('free').
local current = redis.call('GET', KEYS[1])
local other = ''
if current and current ~= ARGV[1] then other = current end
if other ~= '' and ARGV[3] == 'free' then return {'taken', other} end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
local out = {'ok', other}
if ARGV[3] == 'free' then return out end  -- the reconcile sweep replays those parked
for _, body in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do out[#out + 1] = body end
return out
