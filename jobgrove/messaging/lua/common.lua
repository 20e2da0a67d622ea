-- Shared functions of every state-change script (jobgrove.messaging.scripts puts the
-- generated prelude before this: NS, ROOT, the named arguments A.*, the tree's keys K.*,
-- ready_key(node), TREE_CHANNEL, DONE_CHANNEL and node_channel(node)).

-- Timestamps come from the Redis server's clock, so started/finished times order the
-- way the changes happened, whatever the clocks of the nodes say.
local server_time = redis.call('TIME')
local NOW = server_time[1] .. '.' .. string.format('%06d', tonumber(server_time[2]))

local function opt(v)
  if v == false or v == nil or v == '' then return cjson.null end
  return v
end

-- Status events are for whoever watches this tree (a viewer, `submit --follow`, a
-- node relaying it): with nobody subscribed to the tree's channel, building one (five
-- reads) and publishing it is skipped, asked once per script run. Safe, because pub/sub
-- is only a hint: a watcher reads the tree again once its subscription is live. Not on
-- a Redis Cluster, where a subscriber may be connected to another server than this one
-- (NUMSUB counts this server's). Measured on the wide tree with nobody watching: 43.7
-- -> 31.8 Redis commands and 6-28 us less Redis CPU per job (docs/performance.md).
local WATCHED = nil
local function watched()
  if WATCHED == nil then
    WATCHED = ON_CLUSTER or redis.call('PUBSUB', 'NUMSUB', TREE_CHANNEL)[2] > 0
  end
  return WATCHED
end

-- `attempt`: only given when it changed (a retry); viewers keep the last one seen.
local function publish_status(id, state, attempt)
  if not watched() then return end
  local msg = cjson.encode({
    type = 'status', tree = ROOT, job = id, state = state,
    node = opt(redis.call('HGET', K.node, id)),
    summary = opt(redis.call('HGET', K.summary, id)),
    cause = opt(redis.call('HGET', K.cause, id)),
    started = opt(redis.call('HGET', K.started, id)),
    finished = opt(redis.call('HGET', K.finished, id)),
    attempt = attempt,
  })
  redis.call('PUBLISH', TREE_CHANNEL, msg)
end

local function hint_nodes(kind, extra)
  local msg = {t = kind, root = ROOT}
  if extra then msg.cause = extra end
  local encoded = cjson.encode(msg)
  for _, n in ipairs(redis.call('SMEMBERS', K.nodes)) do
    redis.call('PUBLISH', node_channel(n), encoded)
  end
end

-- Called after any change that may have finished the root.
local function check_done()
  local st = redis.call('HGET', K.state, ROOT)
  -- The tree is done once its root is finished and no job of it is still running.
  if (st == 'SUCCESS' or st == 'FAILED' or st == 'ABORTED')
      and redis.call('SCARD', K.open) == 0
      and redis.call('HEXISTS', K.meta, 'finished') == 0 then
    redis.call('HSET', K.meta, 'finished', NOW)
    local done = cjson.encode({type = 'done', tree = ROOT, state = st})
    redis.call('PUBLISH', TREE_CHANNEL, done)
    -- Waiters only care about this one message; a channel of its own spares them
    -- every status change of a big tree.
    redis.call('PUBLISH', DONE_CHANNEL, done)
    hint_nodes('done', nil)
  end
end

local function finish_job(id, state, cause)
  redis.call('HSET', K.state, id, state)
  redis.call('HSET', K.finished, id, NOW)
  if cause then redis.call('HSET', K.cause, id, cause) end
  redis.call('SREM', K.open, id)
  redis.call('HDEL', K.running, id)
  redis.call('HDEL', K.abort, id)
  redis.call('HDEL', K.owner, id)
  publish_status(id, state)
end

local STATES = {NEW = true, WAITING = true, RUNNING = true, SUCCESS = true,
                FAILED = true, ABORTED = true}

-- A failure or abort of `cause`: every NEW/WAITING job ends ABORTED now, every
-- RUNNING job is flagged (it ends ABORTED when its node reports back). A job whose
-- state cannot be read ends FAILED, so the tree still reaches its end.
local function abort_tree(cause)
  if redis.call('HEXISTS', K.meta, 'abort_cause') == 1 then return end
  redis.call('HSET', K.meta, 'abort_cause', cause)
  for _, id in ipairs(redis.call('SMEMBERS', K.open)) do
    local st = redis.call('HGET', K.state, id)
    if st == 'NEW' or st == 'WAITING' then
      finish_job(id, 'ABORTED', cause)
    elseif st == 'RUNNING' then
      if redis.call('HEXISTS', K.abort, id) == 0 then redis.call('HSET', K.abort, id, cause) end
    elseif not STATES[st] then
      redis.call('HSET', K.summary, id, 'corrupt record: state ' .. tostring(st))
      finish_job(id, 'FAILED', nil)
    end
  end
  for _, n in ipairs(redis.call('SMEMBERS', K.nodes)) do
    redis.call('DEL', ready_key(n))
  end
  redis.call('DEL', K.delayed)
  redis.call('PUBLISH', TREE_CHANNEL, cjson.encode({type = 'abort', tree = ROOT, cause = cause}))
  hint_nodes('abort', cause)
  check_done()
end

-- The jobs this script run failed as corrupt records, {'corrupt', id, why, ...}: the
-- claim and finish scripts add it to the end of their reply when it is not empty, so
-- that the node logs each (once: a failed job is never failed again).
local CORRUPT = {'corrupt'}

-- A record of job `id` cannot be read: the job ends FAILED and its tree aborts, the
-- normal way, so the tree still reaches a final state.
local function fail_corrupt(id, why)
  CORRUPT[#CORRUPT + 1] = id
  CORRUPT[#CORRUPT + 1] = why
  redis.call('HSET', K.summary, id, 'corrupt record: ' .. why)
  finish_job(id, 'FAILED', nil)
  abort_tree(id)
  check_done()
end

-- The decoded spec of job `id`, or nil and why not (read before any write).
local function read_spec(id)
  local raw = redis.call('HGET', K.spec, id)
  if not raw then return nil, 'spec of job ' .. id .. ' is missing' end
  local ok, spec = pcall(cjson.decode, raw)
  if not ok or type(spec) ~= 'table' then
    return nil, 'spec of job ' .. id .. ' is not a JSON object'
  end
  if type(spec.children) ~= 'table' then
    return nil, 'spec of job ' .. id .. ' has no children list'
  end
  local grafted = redis.call('HGET', K.grafted, id)
  if grafted then
    local ok_g, more = pcall(cjson.decode, grafted)
    if not ok_g or type(more) ~= 'table' then
      return nil, 'grafted children of job ' .. id .. ' are not a list'
    end
    for _, child in ipairs(more) do spec.children[#spec.children + 1] = child end
  end
  for _, child in ipairs(spec.children) do
    if type(child) ~= 'string' then
      return nil, 'spec of job ' .. id .. ' lists a child that is not an id'
    end
  end
  return spec, raw
end

-- WAITING -> RUNNING for one job on `node`, claimed by process `instance`. Returns
-- {id, token, spec, children results, attempt, the tree's run, grafted children}, or
-- nil if its record could not be read (then the job has failed as corrupt).
local function claim_one(id, node, token, instance)
  local spec, raw = read_spec(id)  -- spec.children includes the grafted ones
  if not spec then
    fail_corrupt(id, raw)
    return nil
  end
  redis.call('HSET', K.state, id, 'RUNNING')
  redis.call('HSET', K.started, id, NOW)
  redis.call('HSET', K.token, id, token)
  redis.call('HSET', K.running, id, node)
  redis.call('HSET', K.owner, id, instance)
  publish_status(id, 'RUNNING')
  local results = {}
  local children = spec.children
  -- In chunks: unpack() of a parent's whole child list would overflow Lua's stack
  -- past about 8,000 children (and a script failing half-way is not rolled back).
  for s = 1, #children, 1000 do
    local part = {unpack(children, s, math.min(s + 999, #children))}
    local raw = redis.call('HMGET', K.results, unpack(part))
    for j, child in ipairs(part) do
      if raw[j] then results[child] = raw[j] end
    end
  end
  return {id, token, raw, cjson.encode(results), redis.call('HGET', K.attempt, id) or '1',
          redis.call('HGET', K.meta, 'run') or '1', redis.call('HGET', K.grafted, id) or '[]'}
end

-- A failed attempt of RUNNING job `id` (its spec decoded): if it has retries left, it
-- waits out its delay (WAITING, in K.delayed) and true is returned with the seconds;
-- otherwise false. An abort never retries: the caller checks that first.
local function retry(id, spec, summary)
  local attempt = tonumber(redis.call('HGET', K.attempt, id) or '1') or 1
  local retries = tonumber(spec.retries) or 0
  if attempt > retries then return false end
  local delay = math.min((tonumber(spec.retry_delay) or 1) * 2 ^ (attempt - 1), 300)
  redis.call('HSET', K.state, id, 'WAITING')
  redis.call('HSET', K.attempt, id, attempt + 1)
  redis.call('HSET', K.summary, id, 'attempt ' .. attempt .. ' failed: ' .. summary)
  redis.call('HDEL', K.running, id)
  redis.call('HDEL', K.owner, id)
  redis.call('ZADD', K.delayed, tonumber(NOW) + delay, id)
  publish_status(id, 'WAITING', attempt + 1)
  return true, delay
end

-- Jobs whose retry delay is over go back to their node's ready list (with a hint for
-- the other nodes; `node` is about to claim anyway).
local function release_due(node)
  local due = redis.call('ZRANGEBYSCORE', K.delayed, '-inf', NOW)
  for _, id in ipairs(due) do
    redis.call('ZREM', K.delayed, id)
    local n = redis.call('HGET', K.node, id)
    if n and redis.call('HGET', K.state, id) == 'WAITING' then
      redis.call('RPUSH', ready_key(n), id)
      if n ~= node then
        redis.call('PUBLISH', node_channel(n), cjson.encode({t = 'ready', root = ROOT}))
      end
    end
  end
end

-- Fencing: claims and outcomes carry the lease epoch of the process making them; a
-- tree remembers the highest epoch each node has used in it. False if `epoch` is
-- older (the process lost its node name to a newer one); otherwise records it.
local function epoch_current(node, epoch)
  local seen = tonumber(redis.call('HGET', K.epochs, node) or '0') or 0
  epoch = tonumber(epoch) or 0
  if epoch < seen then return false end
  if epoch > seen then redis.call('HSET', K.epochs, node, epoch) end
  return true
end

local function context_json()
  local ctx = redis.call('HGETALL', K.ctx)
  local ctx_map = {}
  for i = 1, #ctx, 2 do ctx_map[ctx[i]] = ctx[i + 1] end
  return cjson.encode(ctx_map)
end
