-- KEYS: stock holds seq returning ; ARGV: expected_seq available
local now = mature(KEYS[1], KEYS[4])
if (redis.call('GET', KEYS[3]) or '0') ~= ARGV[1] then return {0, ''} end
if redis.call('ZCARD', KEYS[2]) > 0 or redis.call('ZCARD', KEYS[4]) > 0 then return {0, ''} end
local current = redis.call('GET', KEYS[1])
if not current then return {0, ''} end
local available = tonumber(ARGV[2])
if available < tonumber(current) then
  redis.call('SET', KEYS[1], available)
elseif available > tonumber(current) then
  give_back(KEYS[4], now, 'correction-' .. ARGV[1], available - tonumber(current))
end
redis.call('INCR', KEYS[3])
return {1, current}
