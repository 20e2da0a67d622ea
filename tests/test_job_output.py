"""Job output where users look: print(), sys.stderr, the standard logging module (any
logger, from the job's thread or one it starts) and ctx.log of a Python job go to that
job's log, never another's, nor the node's own output; stderr is marked. Two jobs run
interleaved on one real node process."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from jobgrove import Client, Job, JobContext, job_kind
from jobgrove.jobs.log import log_path
from tests.cluster import wait_done

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")
ROUNDS = 6


def bodies(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert all(STAMP.match(line) for line in lines), lines
    return [STAMP.sub("", line) for line in lines]


def test_two_concurrent_jobs_never_mix_their_output(cluster: Any, redis_url: str,
                                                    tmp_path: Path) -> None:
    node = cluster.start("o1", redis_url, concurrency=2)
    client = Client(redis_url)
    params = {"dir": str(tmp_path), "rounds": ROUNDS}
    root = client.submit({"kind": "noop", "node": "o1", "children": [
        {"kind": "jgc-chatter", "title": me, "params": {**params, "me": me, "other": other}}
        for me, other in (("alpha", "omega"), ("omega", "alpha"))]})
    status = wait_done(client, root)
    assert status["state"] == "SUCCESS", status
    for job in status["children"]:
        me = job["title"]
        other = "omega" if me == "alpha" else "alpha"
        text = bodies(log_path(node.log_dir, job["id"]))
        for i in range(ROUNDS):
            for line in (f"print {me} {i}", f"partial {me} {i} rest", f"thread {me} {i}",
                         f"[stderr] stderr {me} {i}",
                         f"WARNING tests.chatter: module logger {me} {i}",
                         f"INFO root: root logger {me} {i}",
                         f"INFO tests.chatter: thread-log {me} {i}",
                         f"DEBUG ctx-debug {me} {i}", f"WARNING ctx-warning {me} {i}"):
                assert text.count(line) == 1, (line, text)
        assert f"ERROR caught {me}" in text
        tail = text[text.index(f"ERROR caught {me}"):]
        assert tail[1] == "Traceback (most recent call last):"
        assert f"ValueError: boom {me}" in tail
        assert not [line for line in text if other in line], text
    # Nothing of theirs on the node's own output.
    node_output = node.stderr()
    for word in ("print alpha", "stderr omega", "module logger", "thread-log", "ctx-"):
        assert word not in node_output, node_output


@job_kind("jgt-levels")
class Levels(Job):
    def run(self, ctx: JobContext) -> Any:
        assert isinstance(ctx.log, logging.LoggerAdapter)
        for level in ("debug", "info", "warning", "error", "critical"):
            getattr(ctx.log, level)("%s line", level)
        ctx.log.log(logging.WARNING, "via log()")
        print("printed", "words")
        return None


def test_ctx_log_is_a_standard_logger_adapter(redis_url: str, nodes: Any) -> None:
    node = nodes("n1", redis_url)
    client = Client(redis_url)
    root = client.submit({"kind": "jgt-levels", "node": "n1"})
    assert client.wait(root, timeout=10)["state"] == "SUCCESS"
    text = bodies(log_path(node.log_dir, root))
    assert text[1:8] == ["DEBUG debug line", "info line", "WARNING warning line",
                         "ERROR error line", "CRITICAL critical line",
                         "WARNING via log()", "printed words"], text
