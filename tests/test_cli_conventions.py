"""The command line follows conventions: global options before or after the command,
help text and a default for every option, one-line errors for bad Redis URLs (exit 2
malformed, 3 unreachable), and piped output one record per line, never wrapped or
coloured. Real CLI subprocesses; a real node process where a node is needed."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import pytest

from jobgrove import Client
from jobgrove.cli.main import build_parser
from tests.cli_helpers import run, write_spec
from tests.cluster import wait_done
from tests.helpers import free_port

ANSI = re.compile(r"\x1b\[")


@pytest.fixture
def dead_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"


@pytest.mark.parametrize("order", ["before", "after", "mixed"])
def test_global_options_before_or_after_the_command(cluster: Any, redis_url: str,
                                                    dead_url: str, order: str) -> None:
    cluster.start("g1", redis_url)
    args = {
        "before": ["--redis", redis_url, "--json", "--log-level", "ERROR", "nodes"],
        "after": ["nodes", "--redis", redis_url, "--json", "--log-level", "ERROR"],
        # Given twice, the one after the command wins.
        "mixed": ["--redis", dead_url, "--json", "nodes", "--redis", redis_url],
    }[order]
    # The environment names a dead Redis: the option must beat it.
    result = run(*args, redis=dead_url)
    assert result.returncode == 0, result.stderr
    assert [n["name"] for n in json.loads(result.stdout)] == ["g1"]


def test_global_options_reach_every_command(cluster: Any, redis_url: str, dead_url: str,
                                            tmp_path: Path) -> None:
    cluster.start("g2", redis_url)
    spec = write_spec(tmp_path, {"kind": "noop", "node": "g2"})
    submitted = run("--redis", redis_url, "--json", "submit", spec, redis=dead_url)
    assert submitted.returncode == 0, submitted.stderr
    tree = json.loads(submitted.stdout)["id"]
    wait_done(Client(redis_url), tree)
    for args in (["--redis", redis_url, "--json", "status", tree],
                 ["--redis", redis_url, "status", tree, "--json"],
                 ["--json", "list", "--redis", redis_url],
                 ["--redis", redis_url, "--json", "abort", tree[:8]]):
        result = run(*args, redis=dead_url)
        assert result.returncode == 0, (args, result.stderr)
        json.loads(result.stdout)
    # --json where it does not apply is a usage error, not silently ignored.
    result = run("--json", "logs", tree, "--redis", redis_url)
    assert result.returncode == 2 and "--json does not apply to logs" in result.stderr


def _options(parser: argparse.ArgumentParser, where: str) -> list[tuple[str, Any]]:
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += _options(sub, f"{where} {name}")
        elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            out.append((f"{where} {'/'.join(action.option_strings) or action.dest}", action))
    return out


def test_every_option_has_help_and_shows_its_default() -> None:
    missing = []
    options = _options(build_parser(), "jobgrove")
    assert len(options) > 50
    for name, action in options:
        if action.help == argparse.SUPPRESS:
            assert name.endswith(("--namespace", "--fast")), name
            continue
        if not action.help:
            missing.append(f"{name}: no help text")
        elif action.option_strings and "default:" not in action.help \
                and "(required)" not in action.help:
            missing.append(f"{name}: help does not show the default: {action.help!r}")
    assert not missing, "\n".join(missing)
    # And as users see it:
    shown = run("list", "--help")
    assert shown.returncode == 0
    assert "(default: 50)" in shown.stdout and "--runs-on" in shown.stdout
    node = run("node", "--help")
    assert re.search(r"127\.0\.0\.1:\d+\)", node.stdout)


@pytest.mark.parametrize(("url", "needle"), [
    ("foo://x", "unknown scheme 'foo://'"),
    ("localhost:6379", "no scheme (expected redis://"),
    ("redis://localhost:99999/0", "bad port '99999'"),
    ("redis://localhost/abc", "bad DB number 'abc'"),
    ("unix://", "missing socket path"),
])
@pytest.mark.parametrize("command", [("nodes",), ("status", "abcdef12"),
                                     ("node", "--name", "u1", "--listen", "none")])
def test_malformed_redis_url_is_a_one_line_error(url: str, needle: str,
                                                 command: tuple[str, ...]) -> None:
    result = run("--redis", url, *command)
    assert result.returncode == 2, result.stderr
    assert needle in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"jobgrove {command[0]}: error: bad Redis URL")


def test_database_the_server_lacks_exits_2(redis_url: str) -> None:
    url = redis_url.rsplit("/", 1)[0] + "/99"  # a default redis-server has 16
    result = run("nodes", "--redis", url)
    assert result.returncode == 2, result.stderr
    assert "DB index is out of range" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_unreachable_redis_exits_3_without_showing_the_password() -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    result = run("nodes", "--redis", url)
    assert result.returncode == 3, result.stderr
    assert "Redis unavailable" in result.stderr and "hunter2" not in result.stderr
    assert result.stderr.count("\n") == 1


def test_piped_output_is_one_record_per_line(cluster: Any, redis_url: str) -> None:
    long_name = "node-with-a-rather-long-name-" + "x" * 60
    cluster.start(long_name, redis_url, listen="127.0.0.1:0")
    client = Client(redis_url)
    title = ("T" * 20 + " ") * 7 + "end"  # 150 characters, spaces included
    assert len(title) == 150
    roots = [client.submit({"title": title, "kind": "noop", "node": long_name,
                            "tags": {"workspace": "w" * 100, "application": "pipes"}})
             for _ in range(3)]
    for root in roots:
        wait_done(client, root)

    listed = run("list", "--application", "pipes", redis=redis_url)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert len(lines) == 3, listed.stdout
    for line, root in zip(lines, reversed(roots)):
        assert line.startswith(root) and title in line and "w" * 100 in line
        assert "SUCCESS" in line and "1/1 ok" in line
    assert not ANSI.search(listed.stdout)

    nodes = run("nodes", redis=redis_url)
    assert nodes.returncode == 0, nodes.stderr
    (line,) = nodes.stdout.splitlines()
    assert line.startswith(long_name) and "http://127.0.0.1:" in line and "up" in line
    assert not ANSI.search(nodes.stdout)

    status = run("status", roots[0], redis=redis_url)
    assert status.returncode == 0
    assert any(title in line for line in status.stdout.splitlines())
    assert not ANSI.search(status.stdout)
