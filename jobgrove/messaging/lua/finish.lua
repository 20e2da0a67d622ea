-- Record the outcome of RUNNING job ARGV[5], run token ARGV[6]: ARGV[7] SUCCESS or
-- FAILED, summary ARGV[8], result JSON ARGV[9] ('' for none). A stale token or a job
-- no longer RUNNING changes nothing (a fenced-off late result). A job flagged for
-- abort ends ABORTED whatever it reports. Returns {verdict, final state}.
local id, token, outcome, summary, result = ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local st = redis.call('HGET', T .. ':state', id)
if st ~= 'RUNNING' or redis.call('HGET', T .. ':token', id) ~= token then
  return {'stale', st or ''}
end
if summary ~= '' then redis.call('HSET', T .. ':summary', id, summary) end
local abort_cause = redis.call('HGET', T .. ':abort', id)
if abort_cause then
  finish_job(id, 'ABORTED', abort_cause)
  check_done()
  return {'ok', 'ABORTED'}
end
if outcome ~= 'SUCCESS' then
  finish_job(id, 'FAILED', nil)
  abort_tree(id)
  return {'ok', 'FAILED'}
end
if result ~= '' then redis.call('HSET', T .. ':results', id, result) end
finish_job(id, 'SUCCESS', nil)
local parent = redis.call('HGET', T .. ':parent', id)
local ready_on = ''
if parent then
  local left = redis.call('HINCRBY', T .. ':pending', parent, -1)
  if left <= 0 and redis.call('HGET', T .. ':state', parent) == 'NEW' then
    local pnode = redis.call('HGET', T .. ':node', parent)
    redis.call('HSET', T .. ':state', parent, 'WAITING')
    redis.call('RPUSH', T .. ':ready:' .. pnode, parent)
    publish_status(parent, 'WAITING')
    redis.call('PUBLISH', CH .. 'node:' .. pnode, cjson.encode({t = 'ready', root = ROOT}))
    ready_on = pnode
  end
end
check_done()
-- ready_on: the node whose job became runnable, so a local parent starts without
-- waiting for the pub/sub round trip.
return {'ok', 'SUCCESS', ready_on}
