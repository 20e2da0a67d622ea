-- abort: a user abort of job A.job; acts exactly like a failure of it.
--   A.job  the job to abort (any job of the tree)
-- Returns {verdict, state}: 'unknown', 'finished' (nothing to do), or 'ok'.
local id = A.job
local st = redis.call('HGET', K.state, id)
if not st then return {'unknown', ''} end
if st == 'SUCCESS' or st == 'FAILED' or st == 'ABORTED' then return {'finished', st} end
if st == 'RUNNING' then
  if redis.call('HEXISTS', K.abort, id) == 0 then
    redis.call('HSET', K.abort, id, id)
  end
  redis.call('HSETNX', K.summary, id, 'aborted by user')
else
  redis.call('HSET', K.summary, id, 'aborted by user')
  finish_job(id, 'ABORTED', id)
end
abort_tree(id)
return {'ok', redis.call('HGET', K.state, id)}
