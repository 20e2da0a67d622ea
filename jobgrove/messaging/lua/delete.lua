-- delete: remove a done tree, every key of it at once (see messaging/retention.py).
--   A.inline  largest tree (in jobs) whose ids the reply carries
-- Refused while any job of the tree is RUNNING ({'running', count}) or while the tree
-- is not done ({'not_done', root state}); a tree with no keys left gives {'gone'}.
-- Otherwise every key of the tree is unlinked (freed in the background), its ready
-- lists included, but the job id -> node hash, which is renamed K.doomed and gets the
-- tags as field 'tags': what the caller still has to remove from the indexes that span
-- trees (the id index, tag indexes, node sets) and which log files the nodes remove.
-- The caller deletes K.doomed last. Returns {'ok'} then, for a tree of up to
-- A.inline jobs, K.doomed's fields and values (saving the caller a read).
if redis.call('EXISTS', K.meta) == 0 then return {'gone'} end
local running = redis.call('HLEN', K.running)
if running > 0 then return {'running', running} end
if redis.call('HEXISTS', K.meta, 'finished') == 0 then
  return {'not_done', redis.call('HGET', K.state, ROOT) or ''}
end
local tags = redis.call('HGET', K.meta, 'tags') or '{}'
local size = tonumber(redis.call('HGET', K.meta, 'size') or '') or 0
local nodes = redis.call('SMEMBERS', K.nodes)
if redis.call('EXISTS', K.node) == 1 then
  redis.call('RENAME', K.node, K.doomed)
end
redis.call('HSET', K.doomed, 'tags', tags)
local doomed = {}
for part, key in pairs(K) do
  if part ~= 'doomed' and part ~= 'node' then doomed[#doomed + 1] = key end
end
for _, n in ipairs(nodes) do doomed[#doomed + 1] = ready_key(n) end
redis.call('UNLINK', unpack(doomed))
if size <= tonumber(A.inline) and redis.call('HLEN', K.doomed) <= size + 1 then
  local out = redis.call('HGETALL', K.doomed)
  table.insert(out, 1, 'ok')
  return out
end
return {'ok'}
