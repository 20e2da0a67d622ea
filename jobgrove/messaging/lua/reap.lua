-- Node ARGV[5] is lost (or restarted): each of its RUNNING jobs in this tree ends
-- FAILED with summary ARGV[6] (ABORTED if it was already asked to abort), and the tree
-- aborts by the usual rule. Running it twice changes nothing the second time.
-- Returns the ids of the jobs it ended.
local node, summary = ARGV[5], ARGV[6]
local running = redis.call('HGETALL', T .. ':running')
local ended = {}
local first_failed = nil
for i = 1, #running, 2 do
  local id, on = running[i], running[i + 1]
  if on == node then
    redis.call('HSET', T .. ':summary', id, summary)
    local abort_cause = redis.call('HGET', T .. ':abort', id)
    if abort_cause then
      finish_job(id, 'ABORTED', abort_cause)
    else
      finish_job(id, 'FAILED', nil)
      first_failed = first_failed or id
    end
    ended[#ended + 1] = id
  end
end
if first_failed then abort_tree(first_failed) end
check_done()
return ended
