-- wrk script: POST /db/main/execute single-row INSERT OR REPLACE with random ids.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local rows = tonumber(os.getenv("ROWS") or "100000")
request = function()
  local id = math.random(1, rows * 10)
  return wrk.format(nil, "/db/main/execute", nil,
    '{"sql":"INSERT OR REPLACE INTO users (id, name, email, age, bio) VALUES (?, ?, ?, ?, ?)","params":['
    .. id .. ',"user' .. id .. '","user' .. id .. '@example.com",' .. (18 + id % 62) .. ',"Bio for user ' .. id .. '"]}')
end
response = function(status, headers, body)
  if status ~= 200 then io.stderr:write("status " .. status .. ": " .. body .. "\n") end
end
