"""A job whose log cannot be written ends FAILED with the reason in its summary.

Two real write failures, no patched functions: a node process whose file-size limit
(RLIMIT_FSIZE) its job log outgrows while a command writes, which the kernel refuses
with EFBIG mid-way as it would refuse a full disk with ENOSPC; and job logs that are
links to /dev/full, where every write fails with ENOSPC itself.
"""

from __future__ import annotations

import contextlib
import resource
from typing import Any

from jobgrove import Client, Job, JobContext, LogWriteError, job_kind
from jobgrove.jobs.log import log_path
from tests.cluster import wait_done

#: The node process's file-size limit: its job log outgrows it, its stderr does not.
FILE_LIMIT = 256 * 1024


@job_kind("jgt-log-swallower")
class LogSwallower(Job):
    """Logs, ignores that the log cannot be written, and returns as if all went well."""

    def run(self, ctx: JobContext) -> Any:
        with contextlib.suppress(LogWriteError):
            ctx.log.info("working")
        return {"done": True}


def test_command_outgrowing_a_failing_log_is_drained_and_fails_with_the_reason(
        cluster: Any, redis_url: str) -> None:
    node = cluster.start("n1", redis_url)
    # (CPython ignores SIGXFSZ, so past the limit a write fails instead of killing it.)
    resource.prlimit(node.pid, resource.RLIMIT_FSIZE, (FILE_LIMIT, FILE_LIMIT))
    client = Client(redis_url)
    # About 9 MB of log lines: far past the limit, and past any pipe buffer, so a
    # command whose output stopped being read would block or die of SIGPIPE (141).
    tree = client.submit({"kind": "noop", "node": "n1", "children": [
        {"kind": "shell", "params": {"command": "seq 1 300000; echo done"}}]})
    status = wait_done(client, tree)
    child = status["children"][0]
    assert child["state"] == "FAILED", child
    assert child["summary"] == ("cannot write the job's log: File too large "
                                "(the command exited with code 0)")
    assert status["state"] == "ABORTED" and status["cause"] == child["id"]
    log = node.log_file(child["id"])
    assert 0 < log.stat().st_size <= FILE_LIMIT
    assert node.stderr().count("cannot write the job's log") == 1  # once, not per line


def test_jobs_fail_when_their_log_is_a_full_device(nodes: Any, redis_url: str,
                                                   log_dir: str) -> None:
    client = Client(redis_url)
    # Submitted before the node exists, so the logs can be made links to /dev/full
    # before anything writes them.
    tree = client.submit({"kind": "noop", "node": "n1", "children": [
        {"kind": "sleep", "params": {"seconds": 0.01}},
        {"kind": "jgt-log-swallower"},
        {"kind": "shell", "params": {"command": ["echo", "never runs"]}}]},
        allow_unknown_node=True)
    children = client.status(tree)["children"]
    for child in children:
        path = log_path(f"{log_dir}/n1", child["id"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to("/dev/full")
    nodes("n1", redis_url, concurrency=1)  # one at a time: the first failure aborts the rest
    status = client.wait(tree, timeout=20)
    first = status["children"][0]
    assert first["state"] == "FAILED", status
    assert first["summary"] == "cannot write the job's log: No space left on device"
    assert status["state"] == "ABORTED"


def test_a_job_that_ignores_its_failing_log_still_fails(nodes: Any, redis_url: str,
                                                        log_dir: str) -> None:
    client = Client(redis_url)
    tree = client.submit({"kind": "jgt-log-swallower", "node": "n1"}, allow_unknown_node=True)
    path = log_path(f"{log_dir}/n1", tree)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to("/dev/full")
    nodes("n1", redis_url)
    status = client.wait(tree, timeout=20)
    assert status["state"] == "FAILED"
    assert status["summary"] == "cannot write the job's log: No space left on device"
