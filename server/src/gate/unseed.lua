-- KEYS: stock holds returning seq buyers keys ; ARGV: expected_seq
-- Forgets the event (the next order or reconciler pass reseeds it from
-- Postgres), only if nothing moved since the caller looked and nothing is in flight.
-- `returned` stays: a stock return already applied here must not be applied
-- again by a caller that read it from Postgres before it was deleted there.
if (redis.call('GET', KEYS[4]) or '0') ~= ARGV[1] then return 0 end
if redis.call('ZCARD', KEYS[2]) > 0 or redis.call('ZCARD', KEYS[3]) > 0 then return 0 end
redis.call('DEL', KEYS[1], KEYS[5], KEYS[6])
redis.call('INCR', KEYS[4])
return 1
