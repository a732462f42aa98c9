-- KEYS: buyers keys seq
-- Tickets held over all buyers, idempotency entries, and the sequence number.
local held = 0
for _, tickets in ipairs(redis.call('HVALS', KEYS[1])) do held = held + tonumber(tickets) end
return {held, redis.call('HLEN', KEYS[2]), tonumber(redis.call('GET', KEYS[3]) or '0')}
