"""The README's two commands, from a fresh clone in a new virtualenv (slow: it installs
the package and its dependencies from the package index).

The demo command runs here in full. The test command is what CI runs on a fresh clone
(``.ci/run`` execs it): running it again from inside the suite would repeat the whole
setup, lint, type check and wheel smoke test for nothing, so this checks that CI runs
exactly it."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return re.findall(r"^(bash scripts/\w+)", text, flags=re.MULTILINE)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_readme_commands_work_from_a_fresh_clone(tmp_path: Path) -> None:
    commands = readme_commands()
    assert commands[:2] == ["bash scripts/demo", "bash scripts/test"], commands
    if subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"],
                      capture_output=True).returncode != 0:
        pytest.skip("not a git checkout")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTEST"))}
    env.pop("JOBGROVE_REDIS_URL", None)

    demo = subprocess.run([*commands[0].split(), "--fast"], cwd=clone, env=env,
                          capture_output=True, text=True, timeout=600)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "deploy shop v3" in demo.stdout and "nightly batch" in demo.stdout
    assert (clone / ".venv" / "bin" / "jobgrove").exists()

    ci = (clone / ".ci" / "run").read_text(encoding="utf-8")
    assert f"exec {commands[1]}" in ci, ci
