-- KEYS: message index, parked webhooks for that message (one hash slot: {message_id})
-- ARGV: run_id, ttl.  Returns the webhooks parked before the binding existed.
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return redis.call('LRANGE', KEYS[2], 0, -1)
