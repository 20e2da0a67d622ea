-- Record the outcome of RUNNING job ARGV[5], run token ARGV[6]: ARGV[7] SUCCESS or
-- FAILED, summary ARGV[8], result JSON ARGV[9] ('' for none), reporting node ARGV[10],
-- ARGV[11] a run token to claim the parent with, if it becomes runnable on the reporter
-- ('' to never claim here). A stale token or a job
-- no longer RUNNING changes nothing (a fenced-off late result). A job flagged for
-- abort ends ABORTED whatever it reports. Returns {verdict, final state[, node the
-- parent became runnable on[, context JSON, then the parent's claim as claim.lua gives]]}.
local id, token, outcome, summary, result = ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local reporter, claim_token = ARGV[10], ARGV[11]
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
    publish_status(parent, 'WAITING')
    if pnode == reporter and claim_token ~= '' then
      -- The reporting node has the slot this job just freed: it runs the parent now,
      -- saving a claim round trip per level of the tree.
      local claimed = claim_one(parent, pnode, claim_token)
      check_done()
      return {'ok', 'SUCCESS', pnode, context_json(), unpack(claimed)}
    end
    redis.call('RPUSH', T .. ':ready:' .. pnode, parent)
    -- The reporting node claims its own parent at once (see ready_on); others need a hint.
    if pnode ~= reporter then
      redis.call('PUBLISH', CH .. 'node:' .. pnode, cjson.encode({t = 'ready', root = ROOT}))
    end
    ready_on = pnode
  end
end
check_done()
-- ready_on: the node whose job became runnable, so a local parent starts without
-- waiting for the pub/sub round trip.
return {'ok', 'SUCCESS', ready_on}
