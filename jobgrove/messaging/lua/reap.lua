-- reap: node A.node is lost (or restarted, or stopped); its RUNNING jobs in this tree end.
--   A.node     the node
--   A.summary  summary of the jobs it ends
-- The first one not already asked to abort ends FAILED and aborts the tree by the usual
-- rule; the others end ABORTED (cause: their abort's cause, or that first job). Running
-- it twice changes nothing the second time. Returns the ids of the jobs it ended.
local running = redis.call('HGETALL', K.running)
local mine = {}
for i = 1, #running, 2 do
  if running[i + 1] == A.node then mine[#mine + 1] = running[i] end
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
