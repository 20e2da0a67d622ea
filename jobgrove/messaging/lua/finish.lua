-- finish: record the outcomes of RUNNING jobs of one tree, each on its own
-- (compare-and-set on its run token and the claiming process), in one script run.
-- Each item of ITEMS has these fields:
--   A.job          the job
--   A.token        its run token (from the claim)
--   A.instance     the node process reporting (must be the one that claimed it)
--   A.epoch        its lease epoch (fencing, as in claim)
--   A.outcome      'SUCCESS' or 'FAILED'
--   A.summary      one-line summary ('' keeps the stored one)
--   A.result       JSON result ('' for none)
--   A.reporter     the node recording it
--   A.claim_token  run token to claim the parent with, if it becomes runnable on the
--                  reporter ('' never claims here)
--   A.attempt      the attempt of this run, and
--   A.run          the tree's run it belongs to: a job WAITING for them has lost its
--                  claim in a failover and is claimed again first ('': never)
--   A.log          '<log size>:<text>', the end of the job's log ('' for none): stored
--                  for this run, or for a late report when none is stored yet
-- A failure with retries left is a failed attempt: the job waits out its retry delay
-- (WAITING) and the tree goes on; the reply is then {'ok', 'WAITING', '', seconds}.
-- A stale token or a job no longer RUNNING changes nothing (a fenced-off late result);
-- a report from a process that lost its node name is refused ('fenced'). A job flagged
-- for abort ends ABORTED whatever it reports. Everything read is checked before the
-- first write: a record that cannot be read fails its job (corrupt), the tree aborts.
-- Returns, per item, {verdict, final state[, node the parent became runnable on[, context JSON,
-- then the parent's claim as claim.lua gives it]]}.
local function finish_one(A)
  local id = A.job
  local st = redis.call('HGET', K.state, id)
  if st == 'WAITING' and A.attempt ~= ''
      and (redis.call('HGET', K.attempt, id) or '1') == A.attempt
      and (redis.call('HGET', K.meta, 'run') or '1') == A.run
      and redis.call('HGET', K.node, id) == A.reporter
      and redis.call('HEXISTS', K.meta, 'abort_cause') == 0
      and epoch_current(A.reporter, A.epoch) then
    -- The claim of this run was lost in a failover (it had not reached the replica that
    -- is the primary now): the job is WAITING again although it ran. Claim it for this
    -- very run (same attempt, same tree run, its own node, a process not fenced off)
    -- again, here, so that its outcome is recorded below; it never runs twice.
    redis.call('LREM', ready_key(A.reporter), 0, id)
    redis.call('ZREM', K.delayed, id)
    redis.call('HSET', K.state, id, 'RUNNING')
    redis.call('HSETNX', K.started, id, NOW)
    redis.call('HSET', K.token, id, A.token)
    redis.call('HSET', K.running, id, A.reporter)
    redis.call('HSET', K.owner, id, A.instance)
    st = 'RUNNING'
  end
  local token = redis.call('HGET', K.token, id)
  if A.log ~= '' and st and (token == A.token or redis.call('HEXISTS', K.logs, id) == 0) then
    redis.call('HSET', K.logs, id, A.log)
  end
  if st and not STATES[st] and token == A.token then
    -- Its state was damaged while it ran: record its end as what it is, a corrupt
    -- record, so that its tree still ends.
    fail_corrupt(id, 'state ' .. st .. ' of job ' .. id .. ' is not a state')
    return {'ok', 'FAILED'}
  end
  if st ~= 'RUNNING' then return {'stale', st or ''} end
  if not token then
    fail_corrupt(id, 'run token of job ' .. id .. ' is missing')
    return {'ok', 'FAILED'}
  end
  if token ~= A.token then return {'stale', st} end
  local node = redis.call('HGET', K.running, id)
  local owner = redis.call('HGET', K.owner, id)
  if not node or not owner then
    fail_corrupt(id, 'the claim record of job ' .. id .. ' is incomplete')
    return {'ok', 'FAILED'}
  end
  if owner ~= A.instance or not epoch_current(node, A.epoch) then return {'fenced', st} end
  if A.summary ~= '' then redis.call('HSET', K.summary, id, A.summary) end
  local abort_cause = redis.call('HGET', K.abort, id)
  if abort_cause then
    finish_job(id, 'ABORTED', abort_cause)
    check_done()
    return {'ok', 'ABORTED'}
  end
  if A.outcome ~= 'SUCCESS' then
    local spec = read_spec(id)
    if spec then
      local retried, delay = retry(id, spec, A.summary)
      if retried then return {'ok', 'WAITING', '', tostring(delay)} end
    end
    finish_job(id, 'FAILED', nil)
    abort_tree(id)
    return {'ok', 'FAILED'}
  end
  -- Read (and check) what a success changes before writing anything.
  local parent = redis.call('HGET', K.parent, id)
  local pstate, pnode, left, corrupt
  if parent then
    pstate = redis.call('HGET', K.state, parent)
    pnode = redis.call('HGET', K.node, parent)
    left = tonumber(redis.call('HGET', K.pending, parent) or '')
    if not STATES[pstate] then
      corrupt = 'state ' .. tostring(pstate)
    elseif not pnode then
      corrupt = 'node of job ' .. parent .. ' is missing'
    elseif pstate == 'NEW' and not left then
      corrupt = 'pending count of job ' .. parent .. ' is not a number'
    end
  end
  if A.result ~= '' then redis.call('HSET', K.results, id, A.result) end
  finish_job(id, 'SUCCESS', nil)
  if corrupt then
    fail_corrupt(parent, corrupt)
    return {'ok', 'SUCCESS'}
  end
  local ready_on = ''
  if parent then
    if left then left = redis.call('HINCRBY', K.pending, parent, -1) end
    if left and left <= 0 and pstate == 'NEW' then
      redis.call('HSET', K.state, parent, 'WAITING')
      publish_status(parent, 'WAITING')
      if pnode == A.reporter and A.claim_token ~= '' then
        -- The reporting node has the slot this job just freed: it runs the parent now,
        -- saving a claim round trip per level of the tree.
        local claimed = claim_one(parent, pnode, A.claim_token, A.instance)
        check_done()
        if not claimed then return {'ok', 'SUCCESS'} end
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
end

-- Each item on its own: a Lua error in one (a record it cannot handle) costs only that
-- item, reported as {'error', text}; the items before it stay recorded, as separate
-- scripts would have left them.
local replies = {}
for i, item in ipairs(ITEMS) do
  local ok, reply = pcall(finish_one, item)
  if not ok then
    if type(reply) == 'table' then reply = reply.err or reply.message or cjson.encode(reply) end
    reply = {'error', tostring(reply)}
  end
  replies[i] = reply
end
if #CORRUPT > 1 then replies[#replies + 1] = CORRUPT end
return replies
