-- Prepended to the scripts that move stock. RETURN_DELAY_MS is replaced by
-- the gate's return delay when the scripts are built.
local function mature(stock_key, returning_key)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local due = redis.call('ZRANGEBYSCORE', returning_key, '-inf', now)
  if #due > 0 then
    local back = 0
    for _, member in ipairs(due) do back = back + tonumber(string.match(member, ':(%d+)$')) end
    redis.call('ZREMRANGEBYSCORE', returning_key, '-inf', now)
    if redis.call('EXISTS', stock_key) == 1 then redis.call('INCRBY', stock_key, back) end
  end
  return now
end
local function give_back(returning_key, now, token, quantity)
  redis.call('ZADD', returning_key, now + RETURN_DELAY_MS, token .. ':' .. quantity)
end
