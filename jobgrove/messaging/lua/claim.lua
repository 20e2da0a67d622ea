-- claim: up to A.max runnable jobs of this tree for node A.node, WAITING -> RUNNING.
--   A.node        the claiming node
--   A.max         most jobs to claim
--   A.token_base  run tokens are A.token_base .. ':' .. i
--   A.instance    the node process claiming (it alone may finish or recover them)
--   A.epoch       its lease epoch (fencing: an older epoch than the tree has seen for
--                 this node means the process lost its name; nothing is claimed)
-- A job is popped from the ready list once and moves only from WAITING, so it can
-- never start twice. A job whose record cannot be read fails (corrupt) instead.
-- Jobs whose retry delay is over are made ready first.
-- Returns {'fenced'}, or {'ok'} then, if a job was claimed, the tree context (JSON)
-- and per job: id, run token, spec JSON, children's results (JSON object of raw JSON
-- strings), attempt.
if not epoch_current(A.node, A.epoch) then return {'fenced'} end
local ready = ready_key(A.node)
if redis.call('HEXISTS', K.meta, 'abort_cause') == 1 then
  redis.call('DEL', ready)
  return {'ok'}
end
release_due(A.node)
local ids = redis.call('LPOP', ready, tonumber(A.max))
if not ids then return {'ok'} end
local out = {'ok', ''}
for i, id in ipairs(ids) do
  local st = redis.call('HGET', K.state, id)
  if st == 'WAITING' then
    local claimed = claim_one(id, A.node, A.token_base .. ':' .. i, A.instance)
    if claimed then
      for _, v in ipairs(claimed) do out[#out + 1] = v end
    end
  elseif st and not STATES[st] then
    fail_corrupt(id, 'state ' .. st)
  end
end
if #out > 2 then out[2] = context_json() end
if #CORRUPT > 1 then out[#out + 1] = CORRUPT end
if #out == 2 then return {'ok'} end
return out
