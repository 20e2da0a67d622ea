"""The base of jobgrove's actors."""

from __future__ import annotations

import logging
import queue
from typing import Any

import pykka

log = logging.getLogger(__name__)


class Actor(pykka.ThreadingActor):
    """A pykka threading actor with a faster inbox, on a daemon thread.

    Daemon thread: a host process that exits without ``Node.stop()`` must not hang
    (``Node`` registers an ``atexit`` hook that stops it properly).
    """

    use_daemon_thread = True

    @staticmethod
    def _create_actor_inbox() -> Any:
        # pykka's inbox hook (pykka 4) takes any queue with put/get/empty. The C
        # SimpleQueue passes messages about five times faster than queue.Queue, which
        # matters at thousands of jobs per second.
        return queue.SimpleQueue()

    def on_receive(self, message: Any) -> Any:
        # An exception escaping a told message would stop the actor for good (pykka),
        # stranding whatever it owns (a node's lease and slots, a tree's outcomes).
        try:
            self.receive(message)
        except Exception:
            log.exception("%s: handling %s failed", self, type(message).__name__)
        return None

    def receive(self, message: Any) -> None:
        """Handle one told message (subclasses); exceptions are logged, not fatal."""
