-- progress: RUNNING job A.job (run token A.token) reports how far it got.
--   A.job       the job
--   A.token     its run token (a fenced-off run reports nothing)
--   A.progress  JSON {"fraction": f, "message": m}
-- Returns 1 if stored, 0 if the job is not that run any more.
if redis.call('HGET', K.state, A.job) ~= 'RUNNING'
    or redis.call('HGET', K.token, A.job) ~= A.token then
  return 0
end
redis.call('HSET', K.progress, A.job, A.progress)
redis.call('PUBLISH', TREE_CHANNEL, cjson.encode(
  {type = 'progress', tree = ROOT, job = A.job, progress = cjson.decode(A.progress)}))
return 1
