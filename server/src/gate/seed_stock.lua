-- KEYS: stock returning seq ; ARGV: available token
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local now = mature(KEYS[1], KEYS[2])
redis.call('SET', KEYS[1], 0)
if tonumber(ARGV[1]) > 0 then give_back(KEYS[2], now, ARGV[2], ARGV[1]) end
redis.call('INCR', KEYS[3])
return 1
