-- wrk script: GET <path>?label=<random class>&seed=<random seed>, counting the status codes.
--   wrk -t1 -c64 -d10s -s bench/generate.lua http://127.0.0.1:8000 -- /generate 10
-- Arguments after "--": the path (default /generate), the number of classes (default 10; 0: no label) and the
-- number of seeds (default 2^31−1): seeds are drawn from 0…seeds−1, so by default the server's cache of seeded
-- images (512 entries) practically never hits; with a few seeds (40 × 10 classes) every answer comes from it.
-- A fourth argument "post" sends POST <path> with the JSON body {"seed": …, "label": …} instead (LitServe's
-- /predict); "png" sends POST <path> with PNG bodies, the files named one a line in the file given as the fifth
-- argument, in turn (each connection starting at another one): image-in routes such as /models/m/translate.

local threads = {}

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  path = args[1] or "/generate"
  classes = tonumber(args[2] or "10")
  seeds = tonumber(args[3] or "2147483647")
  method = args[4] or "get"
  statuses = {}
  if method == "png" then
    bodies = {}
    for name in io.lines(args[5]) do
      local f = assert(io.open(name, "rb"))
      bodies[#bodies + 1] = f:read("*a")
      f:close()
    end
    turn = id
  end
  math.randomseed(os.time() + 7919 * id)
end

function request()
  if method == "png" then
    turn = turn % #bodies + 1
    return wrk.format("POST", path, {["Content-Type"] = "image/png"}, bodies[turn])
  end
  if method == "post" then
    local body = '{"seed": ' .. math.random(0, seeds - 1)
    if classes > 0 then
      body = body .. ', "label": ' .. math.random(0, classes - 1)
    end
    return wrk.format("POST", path, {["Content-Type"] = "application/json"}, body .. "}")
  end
  local q = "?seed=" .. math.random(0, seeds - 1)
  if classes > 0 then
    q = q .. "&label=" .. math.random(0, classes - 1)
  end
  return wrk.format("GET", path .. q)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total, counts = {}, {}
  for _, thread in ipairs(threads) do
    for code, n in pairs(thread:get("statuses")) do
      total[code] = (total[code] or 0) + n
    end
  end
  for code, n in pairs(total) do
    counts[#counts + 1] = string.format('"%d": %d', code, n)
  end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f, ' ..
    '"statuses": {%s}}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
    table.concat(counts, ", ")))
end
