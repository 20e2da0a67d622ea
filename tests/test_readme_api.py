"""The README's embedding example runs as written (against the private redis-server)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def embedding_example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Embedding"):]
    match = re.search(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert match, "the README lost its embedding example"
    return match.group(1)


def test_embedding_example_runs(redis_url: str, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    code = embedding_example()
    assert "redis://127.0.0.1:6379/0" in code
    monkeypatch.setenv("JOBGROVE_LOG_DIR", str(tmp_path))  # not the user's home
    namespace: dict[str, Any] = {}
    exec(compile(code.replace("redis://127.0.0.1:6379/0", redis_url), "README.md", "exec"),
         namespace)
    status = namespace["status"]
    assert status["state"] == "SUCCESS"
    assert namespace["client"].store.results(status["id"], [status["id"]]) == {
        status["id"]: {"count": 1}}
    assert namespace["client"].store.context(status["id"]) == {"resized": 1}
    logs = list(tmp_path.glob("n1/*/*.log"))
    assert len(logs) == 1 and "resizing a.png" in logs[0].read_text()
