-- KEYS: stock buyers keys holds seq returning
-- ARGV: hold_member quantity user_id key_field order_id tickets_back
local now = mature(KEYS[1], KEYS[6])
if redis.call('ZREM', KEYS[4], ARGV[1]) == 0 then return 0 end
if tonumber(ARGV[6]) > 0 and redis.call('EXISTS', KEYS[1]) == 1 then
  give_back(KEYS[6], now, ARGV[5], ARGV[6])
end
if redis.call('HINCRBY', KEYS[2], ARGV[3], -tonumber(ARGV[2])) <= 0 then
  redis.call('HDEL', KEYS[2], ARGV[3])
end
local entry = redis.call('HGET', KEYS[3], ARGV[4])
if entry and string.sub(entry, 1, string.len(ARGV[5])) == ARGV[5] then
  redis.call('HDEL', KEYS[3], ARGV[4])
end
redis.call('INCR', KEYS[5])
return 1
