"""The README gets a stranger to a running cluster: it is self-contained (links stay in
the repository), its walkthrough runs as written (two real node processes, the real
CLI; only Redis, ports and log directories are this test's own), a node prints its
viewer URL, the default port is fixed and a taken one is a clear error with the fix,
and the systemd unit is printed by the installed launcher."""

from __future__ import annotations

import contextlib
import re
import shlex
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobgrove import Client
from jobgrove.cli.main import build_parser
from tests.cli_helpers import run
from tests.cluster import REPO, _clean_env, record_of, wait_done
from tests.helpers import free_port, wait_for

README = (REPO / "README.md").read_text(encoding="utf-8")
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_docs_link_only_inside_the_repository() -> None:
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        anchors = {slug(h) for h in re.findall(r"^#+ (.*)$", text, flags=re.MULTILINE)}
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            where = f"{doc.name}: link {target}"
            assert not re.match(r"[a-z]+:", target), where + " leaves the repository"
            path, _, anchor = target.partition("#")
            if path:
                assert ".." not in Path(path).parts, where + " leaves the repository"
                assert (doc.parent / path).exists(), where + " names no file"
            elif anchor:
                assert anchor in anchors, where + " names no heading"
        assert "CONTRACT" not in text, doc.name


def walkthrough() -> str:
    start = README.index("## Walkthrough")
    return README[start:README.index("\n## ", start + 3)]


def commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", walkthrough(), flags=re.DOTALL)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.startswith("jobgrove ")]


def test_walkthrough_commands_parse() -> None:
    found = commands()
    assert [c.split()[1] for c in found] == [
        "node", "node", "nodes", "submit", "list", "status", "logs"]
    for line in found:
        build_parser().parse_args(shlex.split(line)[1:])


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        proc.terminate()
    for proc in started:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_walkthrough_runs(redis_url: str, tmp_path: Path,
                          procs: list[subprocess.Popen[str]]) -> None:
    env = {**_clean_env(), "JOBGROVE_REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1"}
    client = Client(redis_url)
    ports = {}
    for line in commands()[:2]:  # the two nodes, on ports of this test's own
        argv = shlex.split(line)
        name = argv[argv.index("--name") + 1]
        ports[name] = free_port()
        err = open(tmp_path / f"{name}.err", "w")  # noqa: SIM115 (the process owns it)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "jobgrove", *argv[1:], "--log-dir", str(tmp_path / name),
             "--listen", f"127.0.0.1:{ports[name]}"], cwd=tmp_path, env=env, text=True,
            stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT))
    for name, port in ports.items():
        wait_for(lambda name=name: (record_of(client, name) or {}).get("alive"), timeout=30,
                 interval=0.05, what=f"node {name}")
        # It says where its viewer is.
        wait_for(lambda name=name, port=port: f"node {name} running: viewer "
                 f"http://127.0.0.1:{port}/" in (tmp_path / f"{name}.err").read_text(),
                 timeout=10, what=f"{name}'s viewer URL")

    nodes = run("nodes", redis=redis_url)
    assert nodes.returncode == 0
    for name, port in ports.items():
        (line,) = [x for x in nodes.stdout.splitlines() if x.startswith(name)]
        assert f"http://127.0.0.1:{port}/" in line and " up " in line

    spec = re.search(r"cat > deploy.json <<'EOF'\n(.*?)\nEOF", walkthrough(), re.DOTALL)
    assert spec is not None
    # Quicker steps than the README's one-second pauses; the same tree otherwise.
    (tmp_path / "deploy.json").write_text(spec.group(1).replace("sleep 1", "sleep 0.1")
                                          .replace("sleep 2", "sleep 0.2"))
    submitted = subprocess.run([sys.executable, "-m", "jobgrove", "submit", "deploy.json"],
                               cwd=tmp_path, env=env, capture_output=True, text=True,
                               timeout=60)
    assert submitted.returncode == 0, submitted.stderr
    root = submitted.stdout.strip()
    assert f"viewer: http://127.0.0.1:{ports['n1']}/#tree={root}" in submitted.stderr
    status = wait_done(client, root)
    assert status["state"] == "SUCCESS", status
    build = next(j["id"] for j in status["children"] if j["title"] == "build")

    listed, shown, logs = (run(*shlex.split(line)[1:], redis=redis_url) for line in (
        c.replace("6f1c0a7e", root[:8]).replace("2b9e41d0", build[:8])
        for c in commands()[4:]))
    assert listed.stdout.startswith(root) and "SUCCESS" in listed.stdout
    assert "3/3 ok" in listed.stdout
    assert build[:8] in shown.stdout and "unit tests" in shown.stdout
    assert logs.returncode == 0, logs.stderr
    assert "build: package" in logs.stdout
    tests = next(j["id"] for j in status["children"] if j["title"] == "unit tests")
    tests_log = run("logs", tests[:8], redis=redis_url).stdout
    assert "[stderr] warning: slow test" in tests_log


def test_default_port_is_fixed_and_a_taken_port_says_how_to_fix_it(redis_url: str,
                                                                    tmp_path: Path) -> None:
    shown = " ".join(run("node", "--help").stdout.split())
    assert "(default: 127.0.0.1:8750)" in shown
    with socket.socket() as taken, socket.socket() as next_one:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with contextlib.suppress(OSError):  # if someone else has it, all the better
            next_one.bind(("127.0.0.1", port + 1))
        result = run("node", "--name", "p1", "--listen", f"127.0.0.1:{port}", "--log-dir",
                     str(tmp_path), redis=redis_url)
    assert result.returncode == 2, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}: the port is already in use" in result.stderr
    # The port it suggests is one that was free (not the next one, taken too).
    suggested = re.search(r"--listen 127\.0\.0\.1:(\d+),", result.stderr)
    assert suggested and int(suggested[1]) > port + 1, result.stderr
    assert "--listen 127.0.0.1:0" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert record_of(Client(redis_url), "p1") is None  # it never registered


def test_the_default_port_taken_is_the_same_clear_error(redis_url: str,
                                                        tmp_path: Path) -> None:
    # Hold 8750 if it is free; if something else holds it, the node cannot have it
    # either: both ways the node must fail on it, clearly.
    holder = socket.socket()
    try:
        try:
            holder.bind(("127.0.0.1", 8750))
            holder.listen()
        except OSError:
            pass
        result = run("node", "--name", "p2", "--log-dir", str(tmp_path), redis=redis_url)
    finally:
        holder.close()
    assert result.returncode == 2, result.stderr
    assert "cannot listen on 127.0.0.1:8750: the port is already in use" in result.stderr
    assert "--listen 127.0.0.1:8751" in result.stderr


def test_systemd_unit_is_printed_by_the_launcher() -> None:
    result = subprocess.run([sys.executable, "-m", "jobgrove.launcher", "--systemd-unit"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    unit = result.stdout
    assert "[Unit]" in unit and "[Service]" in unit and "[Install]" in unit
    assert (f"ExecStart={shlex.join([sys.executable, '-m', 'jobgrove.launcher'])} "
            "/etc/jobgrove/%i.conf") in unit.splitlines()
    assert "KillMode=mixed" in unit
    assert "/opt" not in unit and "@LAUNCHER@" not in unit
    assert not (REPO / "scripts" / "jobgrove-node@.service").exists()  # one copy, shipped
