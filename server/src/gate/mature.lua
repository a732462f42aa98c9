-- KEYS: stock returning
mature(KEYS[1], KEYS[2])
return redis.call('ZCARD', KEYS[2])
