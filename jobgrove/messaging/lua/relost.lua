-- relost: the first part of finish. The claim of the run being finished was lost in a
-- failover (it had not reached the replica that is the primary now), so the job is
-- WAITING again although it ran: it is claimed for that run again, here, in the same
-- step as the finish below, which then records its outcome. It never runs twice.
--   A.attempt  the attempt of the lost claim ('' never claims here)
--   A.run      the tree's run of the lost claim
-- Only a job of the reporting node, WAITING for that very attempt of that very run (a
-- retry or a rerun makes another one), in a tree that is not aborting, for a process
-- that is not fenced off.
if A.attempt ~= '' and redis.call('HGET', K.state, A.job) == 'WAITING'
    and (redis.call('HGET', K.attempt, A.job) or '1') == A.attempt
    and (redis.call('HGET', K.meta, 'run') or '1') == A.run
    and redis.call('HGET', K.node, A.job) == A.reporter
    and redis.call('HEXISTS', K.meta, 'abort_cause') == 0
    and epoch_current(A.reporter, A.epoch) then
  redis.call('LREM', ready_key(A.reporter), 0, A.job)
  redis.call('ZREM', K.delayed, A.job)
  redis.call('HSET', K.state, A.job, 'RUNNING')
  redis.call('HSETNX', K.started, A.job, NOW)
  redis.call('HSET', K.token, A.job, A.token)
  redis.call('HSET', K.running, A.job, A.reporter)
  redis.call('HSET', K.owner, A.job, A.instance)
end
