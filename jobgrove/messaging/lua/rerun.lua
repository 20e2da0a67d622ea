-- rerun: run again what did not succeed in a done tree. FAILED and ABORTED jobs (and
-- SUCCESS jobs whose work an undo hook took back) go back to NEW, or WAITING when all
-- their children succeeded; the other SUCCESS jobs keep their state and results and do
-- not run again. The tree's run number grows by one.
-- No arguments. Returns {'ok', run} or {'refused', why}.
local root_state = redis.call('HGET', K.state, ROOT)
if not root_state then return {'refused', 'unknown tree ' .. ROOT} end
if redis.call('HLEN', K.running) > 0 then
  return {'refused', 'a job of the tree is running'}
end
if root_state == 'SUCCESS' then return {'refused', 'the tree succeeded'} end
if redis.call('HEXISTS', K.meta, 'finished') == 0 then
  return {'refused', 'the tree is not done yet'}
end
local states = redis.call('HGETALL', K.state)
local parent_of = {}
local raw = redis.call('HGETALL', K.parent)
for i = 1, #raw, 2 do parent_of[raw[i]] = raw[i + 1] end
local again = {}
for i = 1, #states, 2 do
  local id, st = states[i], states[i + 1]
  if st ~= 'SUCCESS' or redis.call('HEXISTS', K.undone, id) == 1 then again[id] = true end
end
-- A job running again cannot leave its ancestors SUCCESS.
for id in pairs(again) do
  local p = parent_of[id]
  while p and not again[p] do
    again[p] = true
    p = parent_of[p]
  end
end
local waiting_on = {}
for id in pairs(again) do
  local p = parent_of[id]
  if p then waiting_on[p] = (waiting_on[p] or 0) + 1 end
end
local ids = {}
for id in pairs(again) do ids[#ids + 1] = id end
table.sort(ids)  -- deterministic order: ready lists start in a stable order
local ready_nodes = {}
for _, id in ipairs(ids) do
  for _, part in ipairs({'started', 'finished', 'summary', 'cause', 'token', 'owner', 'abort',
                         'attempt', 'progress', 'results', 'undone'}) do
    redis.call('HDEL', K[part], id)
  end
  redis.call('SADD', K.open, id)
  local n = waiting_on[id] or 0
  if n > 0 then
    redis.call('HSET', K.state, id, 'NEW')
    redis.call('HSET', K.pending, id, n)
  else
    redis.call('HSET', K.state, id, 'WAITING')
    redis.call('HDEL', K.pending, id)
    local node = redis.call('HGET', K.node, id)
    if node then
      redis.call('RPUSH', ready_key(node), id)
      ready_nodes[node] = true
    end
  end
end
redis.call('HDEL', K.meta, 'finished', 'abort_cause')
redis.call('DEL', K.delayed)
local run = (tonumber(redis.call('HGET', K.meta, 'run') or '1') or 1) + 1
redis.call('HSET', K.meta, 'run', run)
redis.call('PUBLISH', TREE_CHANNEL, cjson.encode({type = 'rerun', tree = ROOT, run = run}))
for node in pairs(ready_nodes) do
  redis.call('PUBLISH', node_channel(node), cjson.encode({t = 'ready', root = ROOT}))
end
return {'ok', tostring(run)}
