-- wrk script for the Partsflow benchmark: builds the requests of one scenario and
-- counts the answers by status code.
--
--   wrk ... -s partsflow.lua <url> -- reserve <warehouses,csv> <parts,csv> <job prefix> <site region>
--   wrk ... -s partsflow.lua <url> -- get <path with {id}> <ids file>
--   wrk ... -s partsflow.lua <url> -- event <ids file> <unix time of the first scan>
--
-- done() prints one line "PFBENCH {json}" with the status counts, which the harness
-- reads next to wrk's own --latency table.

local threads = {}

function setup(thread)
   thread:set("id", #threads + 1)
   table.insert(threads, thread)
end

local function split(text)
   local items = {}
   for item in string.gmatch(text, "[^,]+") do
      table.insert(items, item)
   end
   return items
end

local function read_lines(path)
   local items = {}
   for line in io.lines(path) do
      if line ~= "" then
         table.insert(items, line)
      end
   end
   return items
end

local function pick(items)
   return items[math.random(#items)]
end

local mode, counter = nil, 0
local warehouses, parts, ids, job_prefix, site_region, path_template, first_scan

function init(args)
   statuses = {}
   math.randomseed(os.time() * 1000 + id)
   mode = args[1]
   if mode ~= "get" then
      wrk.headers["Content-Type"] = "application/json"
   end
   if mode == "reserve" then
      warehouses, parts = split(args[2]), split(args[3])
      job_prefix, site_region = args[4], args[5]
      wrk.method = "POST"
   elseif mode == "get" then
      path_template, ids = args[2], read_lines(args[3])
      wrk.method = "GET"
   elseif mode == "event" then
      ids, first_scan = read_lines(args[2]), tonumber(args[3])
      wrk.method = "POST"
   else
      error("unknown mode " .. tostring(mode))
   end
end

function request()
   counter = counter + 1
   if mode == "reserve" then
      local body = string.format(
         '{"job_id":"%s-%d-%d","part_number":"%s","quantity":1,' ..
         '"required_by":"2030-01-01T08:00:00+00:00","priority":"routine","owner":"bench",' ..
         '"site":{"name":"Bench county hospital","region":"%s"},"warehouse":"%s"}',
         job_prefix, id, counter, pick(parts), site_region, pick(warehouses))
      return wrk.format(nil, "/inventory/api/v1/reservations", nil, body)
   elseif mode == "get" then
      local path = string.gsub(path_template, "{id}", pick(ids))
      return wrk.format(nil, path)
   else
      local at = os.date("!%Y-%m-%dT%H:%M:%S+00:00", first_scan + math.random(0, 3600))
      local body = string.format(
         '{"shipment_id":"%s","kind":"in_transit","occurred_at":"%s",' ..
         '"location":"bench road","event_id":"bench-%d-%d"}',
         pick(ids), at, id, counter)
      return wrk.format(nil, "/tracking/api/v1/events", nil, body)
   end
end

function response(status, headers, body)
   local key = tostring(status)
   statuses[key] = (statuses[key] or 0) + 1
end

function done(summary, latency, requests)
   local totals = {}
   for _, thread in ipairs(threads) do
      for status, count in pairs(thread:get("statuses") or {}) do
         totals[status] = (totals[status] or 0) + count
      end
   end
   local parts = {}
   for status, count in pairs(totals) do
      table.insert(parts, string.format('"%s":%d', status, count))
   end
   -- The latency distribution as 1000 quantiles, so that runs can be merged.
   local quantiles = {}
   for i = 1, 1000 do
      table.insert(quantiles, string.format("%d", latency:percentile(i / 10)))
   end
   io.write(string.format(
      'PFBENCH {"statuses":{%s},"requests":%d,"duration_us":%d,"errors":' ..
      '{"connect":%d,"read":%d,"write":%d,"timeout":%d},' ..
      '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d},"quantiles_us":[%s]}\n',
      table.concat(parts, ","), summary.requests, summary.duration,
      summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
      table.concat(quantiles, ",")))
end
