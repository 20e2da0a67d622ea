"""Running the real command line in a subprocess (the newer CLI test modules)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.cluster import REPO


def run(*args: str, redis: str | None = None, stdin: str | None = None,
        timeout: float = 60, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    """``python -m jobgrove ARGS`` with stdout and stderr captured (so: into pipes)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("JOBGROVE_")}
    if redis is not None:
        environ["JOBGROVE_REDIS_URL"] = redis
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "jobgrove", *args], input=stdin, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, env=environ)


def write_spec(tmp_path: Path, spec: Any, name: str = "spec.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(spec))
    return str(path)
