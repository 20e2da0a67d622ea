-- Claim up to ARGV[6] runnable jobs of this tree for node ARGV[5]: WAITING -> RUNNING.
-- A job is popped from the ready list once and moves only from WAITING, so it can
-- never start twice. Returns a flat array: the tree context (JSON, only if a job was
-- claimed), then per job: id, run token, spec JSON, children's results (JSON object
-- of raw JSON strings).
local node, max, tokenbase = ARGV[5], tonumber(ARGV[6]), ARGV[7]
local ready = T .. ':ready:' .. node
if redis.call('HEXISTS', T .. ':meta', 'abort_cause') == 1 then
  redis.call('DEL', ready)
  return {}
end
local ids = redis.call('LPOP', ready, max)
if not ids then return {} end
local out = {''}
for i, id in ipairs(ids) do
  if redis.call('HGET', T .. ':state', id) == 'WAITING' then
    local token = tokenbase .. ':' .. i
    redis.call('HSET', T .. ':state', id, 'RUNNING')
    redis.call('HSET', T .. ':started', id, NOW)
    redis.call('HSET', T .. ':token', id, token)
    redis.call('HSET', T .. ':running', id, node)
    publish_status(id, 'RUNNING')
    local spec = redis.call('HGET', T .. ':spec', id)
    local results = {}
    local children = cjson.decode(spec).children
    if #children > 0 then
      local raw = redis.call('HMGET', T .. ':results', unpack(children))
      for j, child in ipairs(children) do
        if raw[j] then results[child] = raw[j] end
      end
    end
    out[#out + 1] = id
    out[#out + 1] = token
    out[#out + 1] = spec
    out[#out + 1] = cjson.encode(results)
  end
end
if #out == 1 then return {} end
local ctx = redis.call('HGETALL', T .. ':ctx')
local ctx_map = {}
for i = 1, #ctx, 2 do ctx_map[ctx[i]] = ctx[i + 1] end
out[1] = cjson.encode(ctx_map)
return out
