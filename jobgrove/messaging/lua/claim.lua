-- Claim up to ARGV[6] runnable jobs of this tree for node ARGV[5]: WAITING -> RUNNING.
-- A job is popped from the ready list once and moves only from WAITING, so it can
-- never start twice. Returns a flat array: the tree context (JSON, only if a job was
-- claimed), then per job: id, run token, spec JSON, children's results (JSON object
-- of raw JSON strings).
local node, max, tokenbase = ARGV[5], tonumber(ARGV[6]), ARGV[7]
local ready = T .. ':ready:' .. node
if redis.call('HEXISTS', T .. ':meta', 'abort_cause') == 1 then
  redis.call('DEL', ready)
  return {}
end
local ids = redis.call('LPOP', ready, max)
if not ids then return {} end
local out = {''}
for i, id in ipairs(ids) do
  if redis.call('HGET', T .. ':state', id) == 'WAITING' then
    for _, v in ipairs(claim_one(id, node, tokenbase .. ':' .. i)) do out[#out + 1] = v end
  end
end
if #out == 1 then return {} end
out[1] = context_json()
return out
