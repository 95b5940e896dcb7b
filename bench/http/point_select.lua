-- wrk script: POST /db/main/query point selects by primary key over 100,000 rows.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local rows = tonumber(os.getenv("ROWS") or "100000")
request = function()
  local id = math.random(1, rows)
  return wrk.format(nil, "/db/main/query",
    nil, '{"sql":"SELECT * FROM users WHERE id = ?","params":[' .. id .. ']}')
end
response = function(status, headers, body)
  if status ~= 200 then io.stderr:write("status " .. status .. ": " .. body .. "\n") end
end
