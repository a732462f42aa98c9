-- wrk script: GET /health, built and counted the same way as orders.lua, so the
-- two runs cost the load generator the same and their rates compare.
--   wrk -t1 -c64 -d10s -s bench/health.lua http://127.0.0.1:8080

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  sent = 0
  statuses = {}
end

function request()
  sent = sent + 1
  return wrk.format("GET", "/health", { ["X-Request"] = tostring(sent) })
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local seconds = summary.duration / 1e6
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      io.write(string.format("status %d: %d answers, %.0f/s\n", status, n, n / seconds))
    end
  end
end
