-- KEYS: run hash, timers, secure key
-- ARGV: now, lease (seconds), retry_ambiguous ('1'/'0'), holder (the task id), execution (a
--       token unique per task execution), mark post ('1': count the first POST here)
-- submit_holder holds '<holder>/<execution>'.
-- Returns {verdict, detail}: ok(the attempt number counted, '0': none) | done(status) |
-- busy(seconds left) | ambiguous | missing; 'ok' also carries the record (HGETALL, after the
-- count) and the sealed secure params ('' if none), so the submit task needs no further read
-- before it signs and sends.
-- The same task id (a redelivery of the holder's own message) may take the lease back at once,
-- but only while no POST is marked in flight: a broker reconnect redelivers messages whose task
-- is still running, so a live holder may be mid-POST until its lease lapses. Only the execution
-- holding the lease marks a POST (here, or begin_post for a later one), so two executions never
-- both send.
-- With mark post the first POST is counted in this script (runstate.SUBMIT, first_post: the
-- round trip begin_post took): from here a crash leaves the run possibly sent, and every path
-- that proves the POST was not sent uncounts it (post_not_sent.lua). Not when the run has secure
-- params whose sealed copy is gone: the task ends it secure_gone, which a count would refuse.
local key = KEYS[1]
if redis.call('EXISTS', key) == 0 then return {'missing', ''} end
local now = tonumber(ARGV[1])
local status = redis.call('HGET', key, 'status')
if status ~= 'queued' then return {'done', status} end
local lease = tonumber(redis.call('HGET', key, 'submit_lease_until') or '0') or 0
local holder = string.match(redis.call('HGET', key, 'submit_holder') or '', '^[^/]*')
local inflight = (tonumber(redis.call('HGET', key, 'post_inflight') or '0') or 0) > 0
if lease > now and (holder ~= ARGV[4] or inflight) then return {'busy', tostring(lease - now)} end
if inflight and ARGV[3] ~= '1' then
  return {'ambiguous', ''}
end
local until_ = now + tonumber(ARGV[2])
redis.call('HSET', key, 'submit_lease_until', until_, 'submit_holder', ARGV[4] .. '/' .. ARGV[5])
-- if this holder vanishes with its message, reconciliation looks again after the lease
redis.call('ZADD', KEYS[2], until_ + 1, redis.call('HGET', key, 'run_id'))
local secure = redis.call('GET', KEYS[3]) or ''
local attempt = 0
if ARGV[6] == '1' and not (redis.call('HGET', key, 'has_secure') == '1' and secure == '') then
  attempt = count_post(key, ARGV[1])
end
return {'ok', tostring(attempt), redis.call('HGETALL', key), secure}
