"""The command line, run as a real subprocess: exit codes, messages, --json outputs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from jobgrove import Client
from tests.helpers import free_port


def run(*args: str, redis: str | None = None, stdin: str | None = None,
        timeout: float = 60, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    env.pop("JOBGROVE_REDIS_URL", None)
    if redis is not None:
        env["JOBGROVE_REDIS_URL"] = redis
    if cwd is not None:  # (jobgrove itself must stay importable from elsewhere)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parent.parent),
                                                          env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "jobgrove", *args], input=stdin,
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)


def keys(redis_url: str) -> list[str]:
    return sorted(Client(redis_url).store.client.keys("*"))


@pytest.fixture
def node_n1(nodes: Any, redis_url: str) -> Any:
    return nodes("n1", redis_url, concurrency=4)


def write_spec(tmp_path: Path, spec: Any) -> str:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec) if not isinstance(spec, str) else spec)
    return str(path)


def test_submit_follow_success_and_failure_exit_codes(node_n1: Any, redis_url: str,
                                                      tmp_path: Path) -> None:
    ok = write_spec(tmp_path, {"kind": "noop", "node": "n1", "children": [
        {"kind": "shell", "params": {"command": ["echo", "hello"]}}]})
    result = run("submit", ok, "--follow", redis=redis_url)
    assert result.returncode == 0, result.stderr
    tree_id = result.stdout.splitlines()[0].strip()
    assert Client(redis_url).status(tree_id)["state"] == "SUCCESS"
    assert "SUCCESS" in result.stdout

    bad = write_spec(tmp_path, {"kind": "noop", "node": "n1", "children": [{"kind": "fail"}]})
    result = run("submit", bad, "--follow", "--json", redis=redis_url)
    assert result.returncode == 1, result.stderr
    status = json.loads(result.stdout)
    assert status["state"] == "ABORTED"
    assert status["children"][0]["state"] == "FAILED"


def test_status_list_nodes_json_shapes(node_n1: Any, redis_url: str, tmp_path: Path) -> None:
    client = Client(redis_url)
    ids = [client.submit({"kind": "noop", "node": "n1", "title": f"t{i}",
                          "tags": {"workspace": "w", "version": str(i)}}) for i in range(3)]
    for tree_id in ids:
        client.wait(tree_id, timeout=10)
    result = run("status", ids[0], "--json", redis=redis_url)
    assert result.returncode == 0
    status = json.loads(result.stdout)
    expected = {"id", "root", "parent", "node", "kind", "title", "state", "summary", "cause",
                "created", "started", "finished", "tags", "children"}
    assert expected <= set(status)
    assert status["tags"] == {"workspace": "w", "version": "0"}

    result = run("list", "--workspace", "w", "--json", "--limit", "2", redis=redis_url)
    assert result.returncode == 0
    listed = json.loads(result.stdout)
    assert [t["id"] for t in listed] == [ids[2], ids[1]]
    assert all("children" not in t for t in listed)
    assert "next cursor" in result.stderr

    result = run("nodes", "--json", redis=redis_url)
    nodes = json.loads(result.stdout)
    assert [n["name"] for n in nodes] == ["n1"]
    assert {"name", "alive", "address", "running"} <= set(nodes[0])
    assert nodes[0]["alive"] is True


def test_abort_cli(node_n1: Any, redis_url: str) -> None:
    client = Client(redis_url)
    tree_id = client.submit({"kind": "noop", "node": "n1", "children": [
        {"kind": "sleep", "params": {"seconds": 30}}]})
    result = run("abort", tree_id, redis=redis_url)
    assert result.returncode == 0, result.stderr
    status = client.wait(tree_id, timeout=10)
    assert status["state"] == "ABORTED" and status["cause"] == tree_id
    assert status["children"][0]["state"] == "ABORTED"
    again = run("abort", tree_id, redis=redis_url)
    assert again.returncode == 0 and "already finished" in again.stdout


@pytest.mark.parametrize(("spec", "needle"), [
    ("{not json", "not valid JSON"),
    ({"kind": "nope", "node": "n1"}, "root.kind: unknown kind 'nope'"),
    ({"node": "n1"}, "root.kind: missing"),
    ({"kind": "sleep", "node": "n1", "params": {"seconds": "x"}}, "root.params.seconds"),
    ({"kind": "noop", "node": "n1", "children": [{"kind": "noop", "tags": {}}]},
     "root.children[0].tags: tags are allowed on the root only"),
    ({"kind": "noop", "node": "n1", "tags": {"colour": "red"}}, "root.tags.colour"),
    ({"kind": "noop", "node": 7}, "root.node: node must be a string"),
    ({}, "empty tree"),
    ([], "must be an object"),
    ({"kind": "noop", "node": "ghost"}, "unknown node(s): ghost"),
    ({"kind": "sleep", "node": "n1", "params": {"seconds": 1e10}},
     "root.params.seconds: must be from 0 to 2678400 seconds (31 days), got 10000000000.0"),
    ({"kind": "shell", "node": "n1", "params": {"command": ["echo", "a\x00b"]}},
     "root.params.command[1]: must not contain a NUL byte"),
    ({"kind": "shell", "node": "n1", "params": {"command": "echo \x00"}},
     "root.params.command: must not contain a NUL byte"),
    ({"kind": "noop", "node": "n1", "children": [
        {"kind": "shell", "params": {"command": ["env"], "env": {"A\x00": "b"}}}]},
     "root.children[0].params.env['A\\x00']: must not contain a NUL byte"),
    ({"kind": "shell", "node": "n1", "params": {"command": ["env"], "env": {"A": "b\x00"}}},
     "root.params.env.A: must not contain a NUL byte"),
    ({"kind": "shell", "node": "n1", "params": {"command": ["pwd"], "cwd": "/tmp\x00"}},
     "root.params.cwd: must be a directory's path"),
])
def test_bad_specs_exit_2_and_write_nothing(node_n1: Any, redis_url: str, tmp_path: Path,
                                            spec: Any, needle: str) -> None:
    before = keys(redis_url)
    result = run("submit", write_spec(tmp_path, spec), redis=redis_url)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert needle in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert keys(redis_url) == before


def test_allow_unknown_node(node_n1: Any, redis_url: str, tmp_path: Path) -> None:
    path = write_spec(tmp_path, {"kind": "noop", "node": "later"})
    assert run("submit", path, redis=redis_url).returncode == 2
    result = run("submit", path, "--allow-unknown-node", "--json", redis=redis_url)
    assert result.returncode == 0, result.stderr
    tree_id = json.loads(result.stdout)["id"]
    assert Client(redis_url).status(tree_id)["state"] == "WAITING"


@pytest.mark.parametrize("args", [
    ("status", "no-such-id"),
    ("abort", "39d4f79d-2196-4d80-9cf8-fe18c4c27618"),
    ("list", "--limit", "0"),
    ("list", "--colour", "red"),
    ("submit",),
    ("node",),
    ("frobnicate",),
    ("submit", "/no/such/file.json"),
])
def test_malformed_cli_use_exits_2(redis_url: str, args: tuple[str, ...]) -> None:
    before = keys(redis_url)
    result = run(*args, redis=redis_url)
    assert result.returncode == 2, (args, result.stdout, result.stderr)
    assert result.stderr.strip(), "a message must say what is wrong"
    assert "Traceback" not in result.stderr
    assert keys(redis_url) == before


def test_redis_unavailable_exits_3(tmp_path: Path) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    path = write_spec(tmp_path, {"kind": "noop", "node": "n1"})
    for args in (("submit", path), ("status", "x"), ("list",), ("nodes",),
                 ("node", "--name", "n1", "--listen", "none")):
        result = run(*args, redis=dead)
        assert result.returncode == 3, (args, result.stderr)
        assert "Redis unavailable" in result.stderr and dead in result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("case", "needle"), [
    ("log dir under a file", "log dir {tmp}/file/logs: Not a directory"),
    # (sysfs refuses new directories even to root; the reason given varies by system.)
    ("log dir the system refuses", "log dir /sys/jobgrove-logs: "),
    pytest.param("log dir not writable", "log dir {tmp}/locked: not writable by this user",
                 marks=pytest.mark.skipif(os.geteuid() == 0,
                                          reason="root writes anywhere")),
    ("listen port in use", "cannot listen on 127.0.0.1:{port}: the port is already in use"),
    ("listen host bad", "cannot listen on 999.1.1.1:8750: '999.1.1.1' is not an address"),
    ("import missing", "--import no_such_module_zz: ModuleNotFoundError"),
    ("import raising", "--import badkinds: RuntimeError: cannot load the kinds"),
    ("import exiting", "--import exiting: the module exited (SystemExit: 5)"),
])
def test_node_reports_unusable_options_in_one_line(redis_url: str, tmp_path: Path,
                                                   case: str, needle: str) -> None:
    (tmp_path / "file").write_text("")
    (tmp_path / "locked").mkdir(mode=0o500)
    (tmp_path / "badkinds.py").write_text("raise RuntimeError('cannot load the kinds')\n")
    (tmp_path / "exiting.py").write_text("import sys\nsys.exit(5)\n")
    args = ["node", "--name", "n9", "--log-dir", str(tmp_path / "logs"),
            "--listen", "127.0.0.1:0"]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        args += {"log dir under a file": ["--log-dir", f"{tmp_path}/file/logs"],
                 "log dir the system refuses": ["--log-dir", "/sys/jobgrove-logs"],
                 "log dir not writable": ["--log-dir", f"{tmp_path}/locked"],
                 "listen port in use": ["--listen", f"127.0.0.1:{port}"],
                 "listen host bad": ["--listen", "999.1.1.1:8750"],
                 "import missing": ["--import", "no_such_module_zz"],
                 "import raising": ["--import", "badkinds"],
                 "import exiting": ["--import", "exiting"]}[case]
        result = run(*args, redis=redis_url, cwd=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith("jobgrove node: error: "), result.stderr
    assert needle.format(tmp=tmp_path, port=port) in result.stderr, result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert keys(redis_url) == []  # refused before registering


def test_redis_flag_beats_environment(node_n1: Any, redis_url: str) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    result = run("nodes", "--json", "--redis", redis_url, redis=dead)
    assert result.returncode == 0
    assert json.loads(result.stdout)[0]["name"] == "n1"


def test_demo_runs_embedded_without_redis() -> None:
    env_redis = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    result = run("demo", "--fast", redis=env_redis, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "deploy shop v3" in result.stdout
    assert "never started: " in result.stdout
    assert "exit code 3" in result.stdout  # the failing shell job's summary


def test_demo_without_fakeredis_is_a_one_line_error() -> None:
    # fakeredis is only in the `demo` extra: hide it as if it were not installed.
    code = ("import sys; sys.modules['fakeredis'] = None; from jobgrove.cli import main; "
            "sys.exit(main(['demo', '--fast']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert result.stderr == ("jobgrove demo: error: the embedded mode needs fakeredis: "
                             "pip install 'jobgrove[demo]'\n")
