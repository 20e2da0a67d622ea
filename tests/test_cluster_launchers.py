"""The launchers in scripts/: the per-node launcher (config file + environment, then
exec of `jobgrove node`) and the local N-node cluster."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobgrove import Client
from tests.cluster import REPO, record_of, wait_done
from tests.helpers import free_port, wait_for

pytestmark = pytest.mark.redis

LAUNCHER = REPO / "scripts" / "jobgrove-node"
LOCAL_CLUSTER = REPO / "scripts" / "local-cluster"


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; killed at teardown."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.send_signal(signal.SIGTERM)
    for proc in started:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def env_without_jobgrove(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBGROVE_")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def launch(procs: list[subprocess.Popen[bytes]], args: list[str], err: Path,
           env: dict[str, str]) -> subprocess.Popen[bytes]:
    with open(err, "wb") as out:
        proc = subprocess.Popen([sys.executable, str(LAUNCHER), *args], cwd=REPO, env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    procs.append(proc)
    return proc


def test_launcher_starts_a_node_from_its_config(redis_url: str, tmp_path: Path,
                                                procs: list[subprocess.Popen[bytes]]) -> None:
    logs = tmp_path / "logs"
    notify = tmp_path / "notified"
    config = tmp_path / "node.conf"
    config.write_text(f"""# a node of the test cluster
NAME=from-file
REDIS_URL={redis_url}
LISTEN=127.0.0.1:0
ADVERTISE="viewer.example:8750"
export LOG_DIR='{logs}'
CONCURRENCY=3
IMPORTS=tests.cluster
NOTIFY_COMMAND=sh -c 'echo "$JOBGROVE_EVENT" >> {notify}'
EXTRA_ARGS=--lease 1.5 --abort-grace "2"
""")
    err = tmp_path / "stderr"
    # The environment overrides the file.
    proc = launch(procs, [str(config)], err, env_without_jobgrove(JOBGROVE_NAME="launched"))
    client = Client(redis_url)

    def registered() -> dict | None:
        assert proc.poll() is None, err.read_text()
        record = record_of(client, "launched")
        return record if record and record["alive"] else None

    record = wait_for(registered, timeout=30, interval=0.05, what="the launched node")
    # exec: the launcher's process *is* the node.
    assert record["pid"] == proc.pid
    assert record["concurrency"] == 3
    assert record["address"] == "viewer.example:8750"
    assert "jgc-gate" in record["kinds"]
    assert record_of(client, "from-file") is None
    root = client.submit({"kind": "shell", "node": "launched",
                          "params": {"command": "echo hello from the launcher"}})
    assert wait_done(client, root)["state"] == "SUCCESS"
    log = logs / root[:2] / f"{root[2:]}.log"
    assert "hello from the launcher" in log.read_text()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    assert record_of(client, "launched")["alive"] is False


def test_launcher_reads_the_config_named_by_the_environment(
        redis_url: str, tmp_path: Path, procs: list[subprocess.Popen[bytes]]) -> None:
    config = tmp_path / "env.conf"
    config.write_text(f"NAME=env-node\nLISTEN=none\nLOG_DIR={tmp_path / 'logs'}\n")
    env = env_without_jobgrove(JOBGROVE_NODE_CONFIG=str(config), JOBGROVE_REDIS_URL=redis_url)
    proc = launch(procs, [], tmp_path / "stderr", env)
    client = Client(redis_url)
    wait_for(lambda: (record_of(client, "env-node") or {}).get("pid") == proc.pid,
             timeout=30, interval=0.05, what="the node named in the env config")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=15) == 0


BAD_CONFIGS = [
    ("LISTEN=none\n", {}, "NAME is required"),
    ("NAME=has space\n", {}, "not a valid node name"),
    ("NAME=a/b\n", {}, "not a valid node name"),
    ("NAME=ok\nNAMES=typo\n", {}, "unknown key 'NAMES'"),
    ("NAME=ok\nthis is not a setting\n", {}, ":2: expected KEY=VALUE"),
    ("NAME=ok\nNAME=twice\n", {}, "NAME is set twice"),
    ("NAME=ok\nCONCURRENCY=0\n", {}, "CONCURRENCY must be a positive integer"),
    ("NAME=ok\n", {"JOBGROVE_CONCURRENCY": "many"}, "CONCURRENCY must be a positive integer"),
    ("NAME=ok\nLISTEN=8750\n", {}, "LISTEN '8750' is not HOST:PORT"),
    ("NAME=ok\nLISTEN=host:99999\n", {}, "is not HOST:PORT"),
    ("NAME=ok\nADVERTISE=nowhere\n", {}, "ADVERTISE 'nowhere' is not HOST:PORT"),
    ("NAME=ok\nREDIS_URL=localhost:6379\n", {}, "REDIS_URL: bad Redis URL 'localhost:6379': no "
                                               "scheme"),
    ("NAME=ok\nREDIS_URL=redis+sentinel://u:hunter2@h:1\n", {},
     "REDIS_URL: bad Redis URL 'redis+sentinel://u:***@h:1': missing SERVICE"),
    ("NAME=ok\nIMPORTS=good.module bad-module\n", {}, "'bad-module' is not a Python module"),
    ("NAME=ok\nSECRET_FILE=/nonexistent/secret\n", {}, "SECRET_FILE '/nonexistent/secret'"),
    ("NAME=ok\nEXTRA_ARGS=--lease 'unbalanced\n", {}, "EXTRA_ARGS: No closing quotation"),
    ("NAME=ok\nLISTEN=\"none\n", {}, "unbalanced quote"),
    ("NAME=ok\nJOBGROVE=/nonexistent/jobgrove\n", {}, "command not found"),
]


@pytest.mark.parametrize(("content", "env", "message"), BAD_CONFIGS,
                         ids=[m for _, _, m in BAD_CONFIGS])
def test_launcher_rejects_bad_config_clearly(tmp_path: Path, content: str,
                                             env: dict[str, str], message: str) -> None:
    config = tmp_path / "bad.conf"
    config.write_text(content)
    result = subprocess.run([sys.executable, str(LAUNCHER), str(config)], cwd=REPO,
                            env=env_without_jobgrove(**env), capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2, result
    assert result.stderr.startswith("jobgrove-node: error: "), result.stderr
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("url", ["redis+sentinel://u:pw@127.0.0.1:26379,127.0.0.1:26380/svc/1",
                                 "redis+cluster://127.0.0.1:7000,127.0.0.1:7001"])
def test_launcher_takes_sentinel_and_cluster_urls(tmp_path: Path, url: str) -> None:
    config = tmp_path / "node.conf"
    config.write_text(f"NAME=n1\nREDIS_URL={url}\n")
    result = subprocess.run([sys.executable, str(LAUNCHER), "--print", str(config)], cwd=REPO,
                            env=env_without_jobgrove(), capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result
    assert f"--redis {url}" in result.stdout


def test_launcher_errors_of_the_node_itself_come_through(tmp_path: Path) -> None:
    config = tmp_path / "node.conf"
    config.write_text(f"NAME=n1\nLISTEN=none\nREDIS_URL=redis://127.0.0.1:{free_port()}/0\n"
                      f"LOG_DIR={tmp_path / 'logs'}\n")
    result = subprocess.run([sys.executable, str(LAUNCHER), str(config)], cwd=REPO,
                            env=env_without_jobgrove(), capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 3, result
    assert "Redis unavailable" in result.stderr and "Traceback" not in result.stderr
    result = subprocess.run([sys.executable, str(LAUNCHER), "/nonexistent.conf"], cwd=REPO,
                            env=env_without_jobgrove(), capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2
    assert "cannot read config file '/nonexistent.conf'" in result.stderr


def test_local_cluster_starts_and_stops_n_nodes(redis_url: str, tmp_path: Path,
                                                procs: list[subprocess.Popen[bytes]]) -> None:
    out = tmp_path / "out"
    with open(out, "wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, str(LOCAL_CLUSTER), "-n", "3", "--redis", redis_url,
             "--base-port", "0", "--log-dir", str(tmp_path / "logs"), "--", "--lease", "2"],
            cwd=REPO, env=env_without_jobgrove(), stdin=subprocess.DEVNULL, stdout=sink,
            stderr=subprocess.STDOUT)
    procs.append(proc)
    client = Client(redis_url)

    def all_up() -> bool:
        assert proc.poll() is None, out.read_text()
        nodes = {n["name"]: n for n in client.nodes()}
        return all(nodes.get(f"n{i}", {}).get("alive") for i in (1, 2, 3))

    wait_for(all_up, timeout=40, interval=0.05, what="n1, n2 and n3")
    addresses = {n["name"]: n["address"] for n in client.nodes()}
    assert all(a and a.startswith("127.0.0.1:") for a in addresses.values()), addresses
    root = client.submit({"kind": "noop", "node": "n1", "children": [
        {"kind": "noop", "node": "n2"}, {"kind": "noop", "node": "n3"}]})
    assert wait_done(client, root)["state"] == "SUCCESS"
    # Ctrl-C: every node stops gracefully, the script exits 0.
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 0, out.read_text()
    text = out.read_text()
    for name in ("n1", "n2", "n3"):
        assert f"[{name}] " in text and f"node {name} stopped" in text
    assert not any(n["alive"] for n in client.nodes())
