-- fail: a record of job A.job could not be read outside Redis (a spec the node cannot
-- decode, say), or its outcome could not be recorded: the job ends FAILED (ABORTED if
-- its tree was aborting it), its tree aborts the normal way.
--   A.job       the job
--   A.summary   why ("corrupt record: ...")
--   A.token     '' (any state but a finished one), or the run token of the claim
--               reporting it: then only that very claim, still RUNNING, still held
--               by process A.instance, is ended (a stale or fenced process's report
--               never ends another run of the job)
--   A.instance  the reporting process (with A.token)
-- A finished job is left alone. Returns {verdict, state} as abort.lua does.
local st = redis.call('HGET', K.state, A.job)
if not st then return {'unknown', ''} end
if st == 'SUCCESS' or st == 'FAILED' or st == 'ABORTED' then return {'finished', st} end
if A.token ~= '' then
  if st ~= 'RUNNING' then return {'stale', st} end
  -- A claim record that cannot be read at all (a damaged hash) cannot be checked, and
  -- no run of the job could ever be recorded: ending it is the only way out.
  local ok, token = pcall(redis.call, 'HGET', K.token, A.job)
  local ok2, owner = pcall(redis.call, 'HGET', K.owner, A.job)
  if (ok and token ~= A.token) or (ok2 and owner ~= A.instance) then
    return {'stale', st}
  end
end
redis.call('HSET', K.summary, A.job, A.summary)
local abort_cause = redis.call('HGET', K.abort, A.job)
if abort_cause then
  finish_job(A.job, 'ABORTED', abort_cause)
  check_done()
  return {'ok', 'ABORTED'}
end
finish_job(A.job, 'FAILED', nil)
abort_tree(A.job)
check_done()
return {'ok', 'FAILED'}
