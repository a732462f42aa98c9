-- KEYS: stock buyers returning returned seq ; ARGV: return_id quantity user_id
-- Unseeded: a reseed may be writing what Postgres said before this return,
-- so it waits until the stock key (written last) is there.
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local now = mature(KEYS[1], KEYS[3])
if redis.call('SADD', KEYS[4], ARGV[1]) == 0 then return 0 end
give_back(KEYS[3], now, ARGV[1], ARGV[2])
if redis.call('HINCRBY', KEYS[2], ARGV[3], -tonumber(ARGV[2])) <= 0 then
  redis.call('HDEL', KEYS[2], ARGV[3])
end
redis.call('INCR', KEYS[5])
return 1
