-- wrk script of bench/proxy.py: GET /generate?model=<m>&label=<random class>&seed=<random seed>[&version=<v>],
-- counting the status codes and the proxy's X-Cache-Status values.
--   wrk -t1 -c64 -d10s -s bench/proxy.lua http://127.0.0.1:8080 -- mnist-cgan 10 40 0123456789ab
-- Arguments after "--": the model, the number of classes (0: no label), the number of seeds (drawn from
-- 0…seeds−1: 40 × 10 classes fit every cache, 2^31−1 practically never hits) and the version ("" for none).

local threads = {}

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  model = args[1] or "mnist-cgan"
  classes = tonumber(args[2] or "10")
  seeds = tonumber(args[3] or "2147483647")
  version = args[4] or ""
  statuses = {}
  cache = {}
  math.randomseed(os.time() + 7919 * id)
end

function request()
  local q = "/generate?model=" .. model .. "&seed=" .. math.random(0, seeds - 1)
  if classes > 0 then
    q = q .. "&label=" .. math.random(0, classes - 1)
  end
  if version ~= "" then
    q = q .. "&version=" .. version
  end
  return wrk.format("GET", q)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  local c = headers["X-Cache-Status"] or headers["x-cache-status"] or "none"
  cache[c] = (cache[c] or 0) + 1
end

local function merged(name)
  local total, out = {}, {}
  for _, thread in ipairs(threads) do
    for k, n in pairs(thread:get(name)) do
      total[k] = (total[k] or 0) + n
    end
  end
  for k, n in pairs(total) do
    out[#out + 1] = string.format('"%s": %d', k, n)
  end
  return table.concat(out, ", ")
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, "status": %d, ' ..
    '"timeout": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, "statuses": {%s}, "cache": {%s}}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max, merged("statuses"), merged("cache")))
end
