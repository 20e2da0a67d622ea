-- finish: record the outcome of a RUNNING job (compare-and-set on its run token).
--   A.job          the job
--   A.token        its run token (from the claim)
--   A.outcome      'SUCCESS' or 'FAILED'
--   A.summary      one-line summary ('' keeps the stored one)
--   A.result       JSON result ('' for none)
--   A.reporter     the node recording it
--   A.claim_token  run token to claim the parent with, if it becomes runnable on the
--                  reporter ('' never claims here)
-- A stale token or a job no longer RUNNING changes nothing (a fenced-off late result).
-- A job flagged for abort ends ABORTED whatever it reports. Returns {verdict, final
-- state[, node the parent became runnable on[, context JSON, then the parent's claim as
-- claim.lua gives it]]}.
local id = A.job
local st = redis.call('HGET', K.state, id)
if st ~= 'RUNNING' or redis.call('HGET', K.token, id) ~= A.token then
  return {'stale', st or ''}
end
if A.summary ~= '' then redis.call('HSET', K.summary, id, A.summary) end
local abort_cause = redis.call('HGET', K.abort, id)
if abort_cause then
  finish_job(id, 'ABORTED', abort_cause)
  check_done()
  return {'ok', 'ABORTED'}
end
if A.outcome ~= 'SUCCESS' then
  finish_job(id, 'FAILED', nil)
  abort_tree(id)
  return {'ok', 'FAILED'}
end
if A.result ~= '' then redis.call('HSET', K.results, id, A.result) end
finish_job(id, 'SUCCESS', nil)
local parent = redis.call('HGET', K.parent, id)
local ready_on = ''
if parent then
  local left = redis.call('HINCRBY', K.pending, parent, -1)
  if left <= 0 and redis.call('HGET', K.state, parent) == 'NEW' then
    local pnode = redis.call('HGET', K.node, parent)
    redis.call('HSET', K.state, parent, 'WAITING')
    publish_status(parent, 'WAITING')
    if pnode == A.reporter and A.claim_token ~= '' then
      -- The reporting node has the slot this job just freed: it runs the parent now,
      -- saving a claim round trip per level of the tree.
      local claimed = claim_one(parent, pnode, A.claim_token)
      check_done()
      return {'ok', 'SUCCESS', pnode, context_json(), unpack(claimed)}
    end
    redis.call('RPUSH', ready_key(pnode), parent)
    -- The reporting node claims its own parent at once (see ready_on); others need a hint.
    if pnode ~= A.reporter then
      redis.call('PUBLISH', node_channel(pnode), cjson.encode({t = 'ready', root = ROOT}))
    end
    ready_on = pnode
  end
end
check_done()
-- ready_on: the node whose job became runnable, so a local parent starts without
-- waiting for the pub/sub round trip.
return {'ok', 'SUCCESS', ready_on}
