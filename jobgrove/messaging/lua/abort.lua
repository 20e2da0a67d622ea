-- A user abort of job ARGV[5]: acts exactly like a failure of it. Returns
-- {verdict, state}: 'unknown', 'finished' (nothing to do), or 'ok'.
local id = ARGV[5]
local st = redis.call('HGET', T .. ':state', id)
if not st then return {'unknown', ''} end
if st == 'SUCCESS' or st == 'FAILED' or st == 'ABORTED' then return {'finished', st} end
if st == 'RUNNING' then
  if redis.call('HEXISTS', T .. ':abort', id) == 0 then
    redis.call('HSET', T .. ':abort', id, id)
  end
  redis.call('HSETNX', T .. ':summary', id, 'aborted by user')
else
  redis.call('HSET', T .. ':summary', id, 'aborted by user')
  finish_job(id, 'ABORTED', id)
end
abort_tree(id)
return {'ok', redis.call('HGET', T .. ':state', id)}
