"""The node reaps its own orphans (child subreaper): a shell job given as a string is
recorded ABORTED in milliseconds, processes jobs leave behind are reaped, and no child
that Python code of the node waits for itself is ever taken from it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from jobgrove import Client
from jobgrove.jobs import reaper
from tests.cluster import wait_state
from tests.helpers import wait_for

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="child subreapers are a Linux feature")


#: A "shell" that leaves processes behind and exits: each waits for the file argv[1];
#: with "own-group" in argv, one of them first moves to a process group of its own (in
#: the same session), as job control would, so ending the job's group does not end it.
LEAVER = """
import os, sys, time
for own_group in ["own-group" in sys.argv, False][:int(sys.argv[2])]:
    pid = os.fork()
    if pid == 0:
        while not os.path.exists(sys.argv[1]):
            time.sleep(0.01)
        os._exit(0)
    if own_group:
        os.setpgid(pid, pid)
"""


def children(pid: int) -> dict[int, tuple[str, int]]:
    """Children of ``pid``: {child pid: (state, session id)}."""
    found = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            text = Path(f"/proc/{pid}/task/{tid}/children").read_text()
        except OSError:
            continue
        for child in map(int, text.split()):
            try:
                stat = Path(f"/proc/{child}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2:].split()
            found[child] = (fields[0], int(fields[3]))
    return found


def zombies(pid: int) -> list[int]:
    return [child for child, (state, _) in children(pid).items() if state == "Z"]


def test_abort_of_a_string_shell_job_is_recorded_in_milliseconds(
        cluster: Any, redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    node = cluster.start("n1", redis_url)
    client = Client(redis_url)
    took = []
    for _ in range(3):
        # sh forks sleep (a command follows it), so the abort orphans a grandchild.
        job = client.submit({"kind": "shell", "node": "n1",
                             "params": {"command": "sleep 10; echo x"}})
        wait_state(client, job, "RUNNING")
        wait_for(lambda: any(s != "Z" for s, _ in children(node.pid).values()),
                 what="the shell to start")
        asked = time.time()
        client.abort(job)
        wait_state(client, job, "ABORTED", timeout=10)
        took.append(client.job(job)["finished"] - asked)
    with capsys.disabled():
        print(f"\n  abort of `sh -c 'sleep 10; echo x'` recorded after "
              f"{', '.join(f'{t * 1000:.0f}' for t in took)} ms")
    assert max(took) < 0.5, took  # the shell's grace is 5 s; PID 1 used to take ~1 s
    wait_for(lambda: not children(node.pid), timeout=5, what="no child left, not even a zombie")


def test_orphans_a_job_leaves_are_adopted_and_reaped(cluster: Any, redis_url: str,
                                                     tmp_path: Path) -> None:
    node = cluster.start("n1", redis_url)
    client = Client(redis_url)
    gate = tmp_path / "gate"
    job = client.submit({"kind": "shell", "node": "n1", "params": {
        "command": [sys.executable, "-c", LEAVER, str(gate), "1", "own-group"]}})
    assert client.wait(job, timeout=10)["state"] == "SUCCESS"
    orphans = wait_for(lambda: [c for c, (s, _) in children(node.pid).items() if s != "Z"],
                       what="the orphan to be the node's child")
    gate.touch()
    wait_for(lambda: not (set(orphans) & set(children(node.pid))),
             timeout=reaper.SWEEP_INTERVAL + 5, what="the node to reap its orphan")
    assert not zombies(node.pid)


def test_sweep_never_takes_a_child_forked_here() -> None:
    reaper.adopt_orphans()
    same_session = subprocess.Popen(["sh", "-c", "exit 7"])
    own_session = subprocess.Popen(["sh", "-c", "exit 8"], start_new_session=True)
    me = os.getpid()
    wait_for(lambda: {same_session.pid, own_session.pid} <= set(zombies(me)),
             what="both children to exit (zombies, not yet waited for)")
    reaper.sweep()
    assert same_session.wait(timeout=5) == 7 and own_session.wait(timeout=5) == 8


def test_sweep_and_reap_group_take_adopted_orphans(tmp_path: Path) -> None:
    assert reaper.adopt_orphans()
    me = os.getpid()
    gate = tmp_path / "gate"
    # Like a shell job: one process left in its group, one in a group of its own.
    shell = subprocess.Popen([sys.executable, "-c", LEAVER, str(gate), "2", "own-group"],
                             start_new_session=True)
    assert shell.wait(timeout=5) == 0
    orphans = wait_for(lambda: [c for c, (_, sid) in children(me).items() if sid == shell.pid],
                       what="the orphans to be adopted")
    assert len(orphans) == 2
    with reaper.sweeping:  # (the node's sweeper, if one runs here, waits meanwhile)
        gate.touch()
        wait_for(lambda: set(orphans) <= set(zombies(me)), what="the orphans to exit")
        assert reaper.reap_group(shell.pid) == 1  # the one left in the shell's group
        assert reaper.sweep() == 1  # the one that left it
    assert not set(orphans) & set(children(me))
