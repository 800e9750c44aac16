-- KEYS: key (the sweep's lock; RunStore.release_message: a messageId index entry)
-- ARGV: token (the value only its owner holds)
-- Compare-and-delete: release only our own lock (or index entry).
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
