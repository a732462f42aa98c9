-- KEYS: stock buyers keys holds seq returning
-- ARGV: quantity max_per_user user_id key_field key_value hold_member now_ms
local now = mature(KEYS[1], KEYS[6])
local prior = redis.call('HGET', KEYS[3], ARGV[4])
if prior then return {3, prior} end
local stock = redis.call('GET', KEYS[1])
if not stock then return {4, ''} end
local quantity = tonumber(ARGV[1])
if tonumber(stock) < quantity then
  -- Not sold out if enough is on its way back: say when it will be here.
  local short = quantity - tonumber(stock)
  local coming = redis.call('ZRANGE', KEYS[6], 0, -1, 'WITHSCORES')
  for i = 1, #coming, 2 do
    short = short - tonumber(string.match(coming[i], ':(%d+)$'))
    if short <= 0 then return {5, tostring(tonumber(coming[i + 1]) - now)} end
  end
  return {1, stock}
end
local held = tonumber(redis.call('HGET', KEYS[2], ARGV[3]) or '0')
if held + quantity > tonumber(ARGV[2]) then return {2, tostring(held)} end
redis.call('DECRBY', KEYS[1], quantity)
redis.call('HINCRBY', KEYS[2], ARGV[3], quantity)
redis.call('HSET', KEYS[3], ARGV[4], ARGV[5])
redis.call('ZADD', KEYS[4], ARGV[7], ARGV[6])
redis.call('INCR', KEYS[5])
return {0, tostring(tonumber(stock) - quantity)}
