-- wrk script: POST /db/main/execute, one single-row INSERT with bound params per request,
-- carrying "writeConcern":{"level": $LEVEL} (majority by default; local for comparison).
-- Ids are unique per run and wrk thread ((RUN * 16 + thread number) * 1e9 + a counter; RUN
-- from the environment, 0 by default), so no request collides with another and every answer
-- other than 200 is a real failure. At the end it prints the
-- number of non-200 answers as "non-200 answers: N" (the run script checks it is 0).
local level = os.getenv("LEVEL") or "majority"
local run = tonumber(os.getenv("RUN") or "0")
local threads = {}
local counter = 0

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  non200 = 0
  ok200 = 0
  base = (run * 16 + tid) * 1000000000
end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

request = function()
  counter = counter + 1
  local id = base + counter
  return wrk.format(nil, "/db/main/execute", nil,
    '{"sql":"INSERT INTO bench_rows (id, name, email, age) VALUES (?, ?, ?, ?)","params":['
    .. id .. ',"user' .. id .. '","user' .. id .. '@example.com",' .. (18 + id % 62)
    .. '],"writeConcern":{"level":"' .. level .. '"}}')
end

response = function(status, headers, body)
  if status == 200 then
    ok200 = ok200 + 1
  else
    non200 = non200 + 1
    if non200 <= 5 then io.stderr:write("status " .. status .. ": " .. body .. "\n") end
  end
end

done = function(summary, latency, requests)
  local bad, good = 0, 0
  for _, t in ipairs(threads) do
    bad = bad + t:get("non200")
    good = good + t:get("ok200")
  end
  io.write(string.format("200 answers: %d\nnon-200 answers: %d\n", good, bad))
end
