-- wrk script for a seated event: every request a different buyer with its
-- own Idempotency-Key. SEATS (a JSON list, like ["A-1-1"]) asks every buyer
-- for those seats (after the first, each is told `seat_taken`); otherwise
-- each asks for ZONE's best seat (QUANTITY of them). Counts answers by status.
--   EVENT_ID=1 ZONE=A wrk -t1 -c64 -d10s -s bench/seats.lua http://127.0.0.1:8080
--   EVENT_ID=1 SEATS='["A-1-1"]' wrk -t1 -c64 -d10s -s bench/seats.lua http://127.0.0.1:8080

local event_id = os.getenv("EVENT_ID") or "1"
local seats = os.getenv("SEATS")
local zone = os.getenv("ZONE") or "A"
local quantity = os.getenv("QUANTITY") or "1"
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
  tag = tostring(os.time()) .. "-" .. tostring(thread_id)
end

function request()
  sent = sent + 1
  local user = "s" .. tag .. "-" .. sent
  local want
  if seats then
    want = '"seats":' .. seats
  else
    want = '"zone":"' .. zone .. '","quantity":' .. quantity
  end
  local body = '{"event_id":' .. event_id .. ',"user_id":"' .. user .. '",' .. want .. '}'
  return wrk.format("POST", "/orders",
    { ["Content-Type"] = "application/json", ["Idempotency-Key"] = user }, body)
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
