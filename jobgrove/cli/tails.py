"""The tail of running jobs' logs, drawn under a live tree (``submit --follow``, demo)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.text import Text

from jobgrove.cli.logs import tail_reader
from jobgrove.core.states import State
from jobgrove.core.status import walk
from jobgrove.jobs.log import log_path

#: Reads the end of a job's log: (job id, max bytes) -> text, or None if unavailable.
TailReader = Callable[[str, int], "str | None"]
SHOWN_JOBS = 3
SHOWN_LINES = 4


def _running(status: dict[str, Any]) -> list[dict[str, Any]]:
    found = [job for job in walk(status) if job["state"] == State.RUNNING]
    return sorted(found, key=lambda j: j.get("started") or 0)


class LogTails:
    def __init__(self, client: Any, reader: TailReader | None = None) -> None:
        self.client = client
        self.reader = reader or tail_reader(client)

    def render(self, status: dict[str, Any]) -> RenderableType | None:
        panels = []
        for job in _running(status)[:SHOWN_JOBS]:
            text = self.reader(job["id"], 4096)
            if not text:
                continue
            lines = text.rstrip("\n").splitlines()[-SHOWN_LINES:]
            panels.append(Panel(Text("\n".join(lines)), title=f"{job['title']} "
                                f"{job['id'][:8]} @{job['node']}", title_align="left",
                                border_style="dim"))
        return Group(*panels) if panels else None

    def close(self) -> None:
        closer = getattr(self.reader, "close", None)
        if closer is not None:
            closer()


def file_reader(log_dirs: dict[str, str]) -> TailReader:
    """Reads tails straight from log files (embedded mode: every node is local)."""

    def read(job_id: str, max_bytes: int) -> str | None:
        for directory in log_dirs.values():
            path = log_path(directory, job_id)
            try:
                with open(path, "rb") as f:
                    f.seek(0, 2)
                    size = f.tell()
                    f.seek(max(0, size - max_bytes))
                    return f.read().decode("utf-8", "replace")
            except OSError:
                continue
        return None

    return read
