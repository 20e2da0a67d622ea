"""A timer thread that tells an actor ``Tick()`` at a fixed interval (pykka has no timers)."""

from __future__ import annotations

import threading
from typing import Any

import pykka

from jobgrove.actors.messages import Tick


class Ticker:
    def __init__(self, target: pykka.ActorRef[Any], interval: float,
                 name: str = "jobgrove-ticker") -> None:
        self.target = target
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.target.tell(Tick())
            except pykka.ActorDeadError:
                return
