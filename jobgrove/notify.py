"""Administrator notifications (Redis outage and recovery), pluggable.

A notifier is any callable ``(event, details)``. The default one logs at ERROR (outage)
or WARNING (recovery) and, if given a command, runs it with the details in the
environment (JOBGROVE_EVENT, JOBGROVE_NODE, JOBGROVE_DETAIL) and as JSON on stdin.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import threading
from typing import Any

log = logging.getLogger("jobgrove.notify")

#: Longest a notify command may run before it is killed (seconds).
COMMAND_TIMEOUT = 30.0


class CommandNotifier:
    def __init__(self, command: str | None = None) -> None:
        self.command = shlex.split(command) if command else None
        self._threads: list[threading.Thread] = []

    def __call__(self, event: str, details: dict[str, Any]) -> None:
        text = json.dumps({"event": event, **details}, default=str)
        if event.endswith("_down"):
            log.error("jobgrove alert: %s", text)
        else:
            log.warning("jobgrove recovery: %s", text)
        if self.command:
            # In a thread: the caller is an actor and must not wait on a slow script.
            thread = threading.Thread(target=self._run, args=(event, details, text),
                                      name="jobgrove-notify", daemon=True)
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
            thread.start()

    def _run(self, event: str, details: dict[str, Any], text: str) -> None:
        assert self.command is not None
        env = {**os.environ, "JOBGROVE_EVENT": event,
               "JOBGROVE_NODE": str(details.get("node", "")),
               "JOBGROVE_DETAIL": str(details.get("detail", ""))}
        try:
            subprocess.run(self.command, input=text.encode(), env=env, check=True,
                           timeout=COMMAND_TIMEOUT, stdout=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError) as exc:
            log.error("notify command %s failed: %s", self.command, exc)

    def join(self, timeout: float = COMMAND_TIMEOUT) -> None:
        for thread in self._threads:
            thread.join(timeout)
