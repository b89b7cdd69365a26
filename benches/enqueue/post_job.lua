-- wrk script of benches/enqueue/run.sh: every request creates a job of a stored configuration
-- (POST /jobs {"component": ..., "config": ...} with the token header); the answers are counted
-- by status, over all threads, and printed at the end as "status <code>: <count>" lines.
--
-- Environment: JOBQ_TOKEN, JOBQ_COMPONENT, JOBQ_CONFIG.

local function required(name)
  local value = os.getenv(name)
  if value == nil or value == "" then
    error(name .. " is not set")
  end
  return value
end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-StorageApi-Token"] = required("JOBQ_TOKEN")
wrk.body = string.format('{"component": "%s", "config": "%s"}',
  required("JOBQ_COMPONENT"), required("JOBQ_CONFIG"))

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  statuses = {}
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      total[status] = (total[status] or 0) + count
    end
  end
  for status, count in pairs(total) do
    io.write(string.format("status %d: %d\n", status, count))
  end
end
