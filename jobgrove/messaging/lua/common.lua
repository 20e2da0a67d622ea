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

local function publish_status(id, state)
  local msg = cjson.encode({
    type = 'status', tree = ROOT, job = id, state = state,
    node = opt(redis.call('HGET', K.node, id)),
    summary = opt(redis.call('HGET', K.summary, id)),
    cause = opt(redis.call('HGET', K.cause, id)),
    started = opt(redis.call('HGET', K.started, id)),
    finished = opt(redis.call('HGET', K.finished, id)),
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
  publish_status(id, state)
end

-- A failure or abort of `cause`: every NEW/WAITING job ends ABORTED now, every
-- RUNNING job is flagged (it ends ABORTED when its node reports back).
local function abort_tree(cause)
  if redis.call('HEXISTS', K.meta, 'abort_cause') == 1 then return end
  redis.call('HSET', K.meta, 'abort_cause', cause)
  for _, id in ipairs(redis.call('SMEMBERS', K.open)) do
    local st = redis.call('HGET', K.state, id)
    if st == 'NEW' or st == 'WAITING' then
      finish_job(id, 'ABORTED', cause)
    elseif st == 'RUNNING' and redis.call('HEXISTS', K.abort, id) == 0 then
      redis.call('HSET', K.abort, id, cause)
    end
  end
  for _, n in ipairs(redis.call('SMEMBERS', K.nodes)) do
    redis.call('DEL', ready_key(n))
  end
  redis.call('PUBLISH', TREE_CHANNEL, cjson.encode({type = 'abort', tree = ROOT, cause = cause}))
  hint_nodes('abort', cause)
  check_done()
end

-- WAITING -> RUNNING for one job on `node`; returns {id, token, spec, children results}.
local function claim_one(id, node, token)
  redis.call('HSET', K.state, id, 'RUNNING')
  redis.call('HSET', K.started, id, NOW)
  redis.call('HSET', K.token, id, token)
  redis.call('HSET', K.running, id, node)
  publish_status(id, 'RUNNING')
  local spec = redis.call('HGET', K.spec, id)
  local results = {}
  local children = cjson.decode(spec).children
  -- In chunks: unpack() of a parent's whole child list would overflow Lua's stack
  -- past about 8,000 children (and a script failing half-way is not rolled back).
  for s = 1, #children, 1000 do
    local part = {unpack(children, s, math.min(s + 999, #children))}
    local raw = redis.call('HMGET', K.results, unpack(part))
    for j, child in ipairs(part) do
      if raw[j] then results[child] = raw[j] end
    end
  end
  return {id, token, spec, cjson.encode(results)}
end

local function context_json()
  local ctx = redis.call('HGETALL', K.ctx)
  local ctx_map = {}
  for i = 1, #ctx, 2 do ctx_map[ctx[i]] = ctx[i + 1] end
  return cjson.encode(ctx_map)
end
