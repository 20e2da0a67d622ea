-- fail: a record of job A.job could not be read outside Redis (a spec the node cannot
-- decode, say): the job ends FAILED, its tree aborts the normal way.
--   A.job      the job
--   A.summary  why ("corrupt record: ...")
-- A finished job is left alone. Returns {verdict, state} as abort.lua does.
local st = redis.call('HGET', K.state, A.job)
if not st then return {'unknown', ''} end
if st == 'SUCCESS' or st == 'FAILED' or st == 'ABORTED' then return {'finished', st} end
redis.call('HSET', K.summary, A.job, A.summary)
finish_job(A.job, 'FAILED', nil)
abort_tree(A.job)
check_done()
return {'ok', 'FAILED'}
