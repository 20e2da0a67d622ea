-- graft: add subtrees under job A.parent, which has not started (NEW or WAITING); a
-- WAITING parent goes back to NEW until its new children succeed.
--   A.parent  the job to graft under
--   A.jobs    JSON array of new jobs, parents before children, each
--             [id, parent id, node, spec JSON, number of children]
--   A.limit   most jobs the tree may hold
-- Everything is checked before the first write. Returns {'ok'} or {'refused', why}.
local st = redis.call('HGET', K.state, A.parent)
if not st then return {'refused', 'unknown job ' .. A.parent} end
if redis.call('HEXISTS', K.meta, 'abort_cause') == 1 then
  return {'refused', 'the tree is aborting'}
end
if st ~= 'NEW' and st ~= 'WAITING' then
  return {'refused', 'job ' .. A.parent .. ' is ' .. st .. ': only a job that has not '
          .. 'started (NEW or WAITING) can get new children'}
end
local pnode = redis.call('HGET', K.node, A.parent)
local pending = tonumber(redis.call('HGET', K.pending, A.parent) or '0')
if not pnode or not pending or not read_spec(A.parent) then
  return {'refused', 'the record of job ' .. A.parent .. ' cannot be read'}
end
local ok, jobs = pcall(cjson.decode, A.jobs)
if not ok or type(jobs) ~= 'table' or #jobs == 0 then return {'refused', 'no jobs given'} end
local size = tonumber(redis.call('HGET', K.meta, 'size') or '0') or 0
if size + #jobs > tonumber(A.limit) then
  return {'refused', 'the tree would hold ' .. (size + #jobs) .. ' jobs; the limit is '
          .. A.limit}
end
local tops, ready_nodes = {}, {}
for _, job in ipairs(jobs) do
  local id, parent, node, spec, children = job[1], job[2], job[3], job[4], job[5]
  redis.call('HSET', K.spec, id, spec)
  redis.call('HSET', K.node, id, node)
  redis.call('HSET', K.parent, id, parent)
  redis.call('SADD', K.open, id)
  redis.call('SADD', K.nodes, node)
  if children > 0 then
    redis.call('HSET', K.state, id, 'NEW')
    redis.call('HSET', K.pending, id, children)
  else
    redis.call('HSET', K.state, id, 'WAITING')
    redis.call('RPUSH', ready_key(node), id)
    ready_nodes[node] = true
  end
  if parent == A.parent then tops[#tops + 1] = id end
end
redis.call('HSET', K.pending, A.parent, pending + #tops)
-- Its children: those of its spec, then these (status, and the results it gets when it
-- runs). Kept apart: decoding and encoding the spec again could change its params.
local grafted = cjson.decode(redis.call('HGET', K.grafted, A.parent) or '[]')
for _, id in ipairs(tops) do grafted[#grafted + 1] = id end
redis.call('HSET', K.grafted, A.parent, cjson.encode(grafted))
if st == 'WAITING' then
  redis.call('HSET', K.state, A.parent, 'NEW')
  redis.call('LREM', ready_key(pnode), 0, A.parent)
  redis.call('ZREM', K.delayed, A.parent)
  publish_status(A.parent, 'NEW')
end
redis.call('HINCRBY', K.meta, 'size', #jobs)
redis.call('PUBLISH', TREE_CHANNEL, cjson.encode(
  {type = 'graft', tree = ROOT, parent = A.parent, jobs = tops}))
for node in pairs(ready_nodes) do
  redis.call('PUBLISH', node_channel(node), cjson.encode({t = 'ready', root = ROOT}))
end
return {'ok'}
