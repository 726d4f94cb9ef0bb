-- wrk script: every request carries a key picked at random from KEYS_FILE (one per line),
-- then prints the RESULT line of report.lua.
local keys = {}
local path = os.getenv("KEYS_FILE")
for line in io.lines(path) do
  if #line > 0 then keys[#keys + 1] = line end
end
math.randomseed(os.time())
request = function()
  wrk.headers["x-api-key"] = keys[math.random(#keys)]
  return wrk.format(nil)
end
dofile(os.getenv("REPORT_LUA"))
