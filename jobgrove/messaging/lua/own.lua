-- own: process A.instance re-asserts its claim of RUNNING job A.job. A write, so that
-- a WAIT after it proves the claim has reached the replicas before the job runs (a
-- claim recovered with --min-replicas-ack).
--   A.job       the job
--   A.instance  the node process that claimed it
-- Returns 1, or 0 if the job is not RUNNING for A.instance.
if redis.call('HGET', K.state, A.job) ~= 'RUNNING'
    or redis.call('HGET', K.owner, A.job) ~= A.instance then
  return 0
end
redis.call('HSET', K.owner, A.job, A.instance)
return 1
