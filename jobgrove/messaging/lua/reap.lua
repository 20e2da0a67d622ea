-- reap: node A.node is lost (or restarted, or stopped); RUNNING jobs of it end.
--   A.node     the node
--   A.summary  summary of the jobs it ends
--   A.spare    if not '': jobs claimed by this process instance are spared
--   A.epoch    if not '': the lease epoch of a new process of A.node, recorded so
--              that older processes of it are fenced off in this tree
--   A.upto     if not '': the newest epoch of A.node the caller knows of; if a newer
--              process of A.node has used this tree since, nothing is reaped (that
--              process, alive, settles what older ones left)
-- A job lost with its node is a failed attempt: one with retries left (and not asked to
-- abort) waits out its retry delay. Of the others, the first not already asked to abort
-- ends FAILED and aborts the tree by the usual rule; the rest end ABORTED (cause: their
-- abort's cause, or that first job). Running it twice changes nothing the second time.
-- Returns the ids of the jobs it ended (or put back to wait for a retry).
if A.upto ~= '' then
  local seen = tonumber(redis.call('HGET', K.epochs, A.node) or '0') or 0
  if seen > (tonumber(A.upto) or 0) then return {} end
end
if A.epoch ~= '' then epoch_current(A.node, A.epoch) end
local running = redis.call('HGETALL', K.running)
local mine = {}
for i = 1, #running, 2 do
  if running[i + 1] == A.node then
    if A.spare == '' or redis.call('HGET', K.owner, running[i]) ~= A.spare then
      mine[#mine + 1] = running[i]
    end
  end
end
if #mine == 0 then return {} end
local first_failed = nil
local retrying = {}
for _, id in ipairs(mine) do
  if not redis.call('HGET', K.abort, id) then
    local spec = read_spec(id)
    local attempt = tonumber(redis.call('HGET', K.attempt, id) or '1') or 1
    if spec and attempt <= (tonumber(spec.retries) or 0) then
      retrying[id] = spec
    elseif not first_failed then
      first_failed = id
    end
  end
end
if not first_failed then
  for _, id in ipairs(mine) do
    if retrying[id] then retry(id, retrying[id], A.summary) end
  end
end
if first_failed then
  redis.call('HSET', K.summary, first_failed, A.summary)
  finish_job(first_failed, 'FAILED', nil)
  abort_tree(first_failed)
end
for _, id in ipairs(mine) do
  if id ~= first_failed and (first_failed or not retrying[id]) then
    redis.call('HSET', K.summary, id, A.summary)
    finish_job(id, 'ABORTED', redis.call('HGET', K.abort, id) or first_failed)
  end
end
check_done()
return mine
