-- wrk script: every request is a different buyer with its own Idempotency-Key,
-- one ticket each, for the event in EVENT_ID. Counts answers by status, so the
-- report says how many orders were accepted, not just how many requests went out.
-- On a seated event, SEATS (a JSON list, like ["A-1-1"]) asks every buyer for
-- those seats, or ZONE for that zone's best seat.
--   EVENT_ID=1 wrk -t1 -c64 -d10s -s bench/orders.lua http://127.0.0.1:8080
--   EVENT_ID=1 ZONE=A wrk -t1 -c64 -d10s -s bench/orders.lua http://127.0.0.1:8080
-- With TOKENS (a file of buyer tokens, one a line: `flashtix token --count`),
-- request N carries token N as its bearer and names no user_id: its buyer is
-- the token's subject (a sale with tokens on). One thread only.
--   TOKENS=tokens.txt EVENT_ID=1 wrk -t1 -c64 -d10s -s bench/orders.lua URL

local event_id = os.getenv("EVENT_ID") or "1"
local seats = os.getenv("SEATS")
local zone = os.getenv("ZONE")
local want = '"quantity":1'
if seats then
  want = '"seats":' .. seats
elseif zone then
  want = '"zone":"' .. zone .. '","quantity":1'
end
local tokens_file = os.getenv("TOKENS")
local threads = {}
local next_thread = 0

function setup(thread)
  next_thread = next_thread + 1
  thread:set("thread_id", next_thread)
  table.insert(threads, thread)
end

function init(args)
  sent = 0
  statuses = {}
  -- Unique across runs too: a run tag from the clock, then thread and counter.
  tag = tostring(os.time()) .. "-" .. tostring(thread_id)
  tokens = {}
  if tokens_file then
    for line in io.lines(tokens_file) do
      tokens[#tokens + 1] = line
    end
  end
end

function request()
  sent = sent + 1
  local user = "w" .. tag .. "-" .. sent
  local headers = { ["Content-Type"] = "application/json", ["Idempotency-Key"] = user }
  local body
  if tokens_file then
    -- Past the last token, buyers come round again (and meet their limit).
    headers["Authorization"] = "Bearer " .. tokens[(sent - 1) % #tokens + 1]
    body = '{"event_id":' .. event_id .. ',' .. want .. '}'
  else
    body = '{"event_id":' .. event_id .. ',"user_id":"' .. user .. '",' .. want .. '}'
  end
  return wrk.format("POST", "/orders", headers, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local totals = {}
  for _, thread in ipairs(threads) do
    local counts = thread:get("statuses")
    for status, n in pairs(counts) do
      totals[status] = (totals[status] or 0) + n
    end
  end
  local seconds = summary.duration / 1e6
  for status, n in pairs(totals) do
    io.write(string.format("status %d: %d answers, %.0f/s\n", status, n, n / seconds))
  end
end
