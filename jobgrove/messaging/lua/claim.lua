-- claim: up to A.max runnable jobs of this tree for node A.node, WAITING -> RUNNING.
--   A.node        the claiming node
--   A.max         most jobs to claim
--   A.token_base  run tokens are A.token_base .. ':' .. i
-- A job is popped from the ready list once and moves only from WAITING, so it can
-- never start twice. Returns a flat array: the tree context (JSON, only if a job was
-- claimed), then per job: id, run token, spec JSON, children's results (JSON object
-- of raw JSON strings).
local ready = ready_key(A.node)
if redis.call('HEXISTS', K.meta, 'abort_cause') == 1 then
  redis.call('DEL', ready)
  return {}
end
local ids = redis.call('LPOP', ready, tonumber(A.max))
if not ids then return {} end
local out = {''}
for i, id in ipairs(ids) do
  if redis.call('HGET', K.state, id) == 'WAITING' then
    for _, v in ipairs(claim_one(id, A.node, A.token_base .. ':' .. i)) do out[#out + 1] = v end
  end
end
if #out == 1 then return {} end
out[1] = context_json()
return out
