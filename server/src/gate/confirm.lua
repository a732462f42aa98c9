-- KEYS: holds seq ; ARGV: hold members
local removed = redis.call('ZREM', KEYS[1], unpack(ARGV))
redis.call('INCR', KEYS[2])
return removed
