-- KEYS: stock keys returning
-- The event's idempotency keys if it is sold out with nothing coming back, else false.
mature(KEYS[1], KEYS[3])
if redis.call('GET', KEYS[1]) ~= '0' or redis.call('ZCARD', KEYS[3]) > 0 then return false end
return redis.call('HKEYS', KEYS[2])
