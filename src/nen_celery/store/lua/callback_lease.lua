-- One execution of a callback per (run, attempt) at a time (celery.callback_task.CallbackTask).
-- KEYS: lease (string: its holder, expiring), done (string: the holder that finished)
-- Both keys sit under the run's key, so in its slot.
-- ARGV: mode ('claim' | 'renew' | 'finish' | 'release'), holder ('<task id>/<nonce>'),
--       ttl (claim, renew: the lease in ms; finish: the retention in s; release: not sent)
local mode, holder = ARGV[1], ARGV[2]
if mode == 'claim' then
  -- claimed | busy | done
  if redis.call('EXISTS', KEYS[2]) == 1 then return 'done' end
  local cur = redis.call('GET', KEYS[1])
  if cur and cur ~= holder then return 'busy' end
  redis.call('SET', KEYS[1], holder, 'PX', tonumber(ARGV[3]))
  return 'claimed'
elseif mode == 'renew' then
  -- 1 while ``holder`` holds the lease; 0 once it lapsed (never taken back: another may hold it)
  if redis.call('GET', KEYS[1]) ~= holder then return 0 end
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
  return 1
elseif mode == 'finish' then
  -- the callback reached its end: done for good (until the retention), lease dropped
  redis.call('SET', KEYS[2], holder, 'EX', tonumber(ARGV[3]))
  if redis.call('GET', KEYS[1]) == holder then redis.call('DEL', KEYS[1]) end
  return 1
elseif mode == 'release' then
  -- not its end (the callback asked for a retry): the next execution may claim at once
  if redis.call('GET', KEYS[1]) ~= holder then return 0 end
  redis.call('DEL', KEYS[1])
  return 1
end
return redis.error_reply('callback_lease: unknown mode ' .. tostring(mode))
