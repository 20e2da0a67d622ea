-- reap: node A.node is lost (or restarted, or stopped); RUNNING jobs of it end.
--   A.node     the node
--   A.summary  summary of the jobs it ends
--   A.spare    if not '': jobs claimed by this process instance are spared
--   A.epoch    if not '': the lease epoch of a new process of A.node, recorded so
--              that older processes of it are fenced off in this tree
--   A.upto     if not '': the newest epoch of A.node the caller knows of; if a newer
--              process of A.node has used this tree since, nothing is reaped (that
--              process, alive, settles what older ones left)
-- The first one not already asked to abort ends FAILED and aborts the tree by the usual
-- rule; the others end ABORTED (cause: their abort's cause, or that first job). Running
-- it twice changes nothing the second time. Returns the ids of the jobs it ended.
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
for _, id in ipairs(mine) do
  if not redis.call('HGET', K.abort, id) then
    first_failed = id
    break
  end
end
if first_failed then
  redis.call('HSET', K.summary, first_failed, A.summary)
  finish_job(first_failed, 'FAILED', nil)
  abort_tree(first_failed)
end
for _, id in ipairs(mine) do
  if id ~= first_failed then
    redis.call('HSET', K.summary, id, A.summary)
    finish_job(id, 'ABORTED', redis.call('HGET', K.abort, id) or first_failed)
  end
end
check_done()
return mine
