-- KEYS: lock.  ARGV: token.  Release only our own lock.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
