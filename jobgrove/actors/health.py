"""The node actor's view of Redis: up or down, and every store call made through it.

A call that finds Redis unavailable marks it down (the node then rides out the outage:
nothing new starts, outcomes wait); a call about one tree that fails for any other
reason is that tree's problem alone, logged once, and the node goes on with the
others. Plain code used from the node actor's thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from jobgrove.actors.ledger import TreeErrors
from jobgrove.errors import FencedError, StoreUnavailableError

log = logging.getLogger(__name__)

T = TypeVar("T")


class RedisHealth:
    """``ok`` while Redis answers. ``on_change(ok, detail)`` hears of every change;
    ``on_fenced()`` of a store refusing this process's claims."""

    def __init__(self, on_change: Callable[[bool, str], None],
                 on_fenced: Callable[[], None]) -> None:
        self.ok = True
        self._on_change = on_change
        self._on_fenced = on_fenced
        self.tree_errors = TreeErrors(_log_tree_error)

    def changed(self, ok: bool, detail: str) -> None:
        if ok == self.ok:
            return
        self.ok = ok
        if ok:
            log.info("Redis reachable again (%s)", detail)
        else:
            log.error("Redis unavailable: %s; running jobs go on, nothing new starts", detail)
        self._on_change(ok, detail)

    def call(self, what: str, fn: Callable[[], T]) -> T | None:
        """``fn()``, or None if Redis is unavailable (then marked down)."""
        try:
            return fn()
        except StoreUnavailableError as exc:
            log.debug("%s failed: %s", what, exc)
            self.changed(False, str(exc))
            return None

    def tree_call(self, root: str, what: str, fn: Callable[[], T]) -> T | None:
        """``call`` for work on one tree: any other error is that tree's alone, logged
        once (None is returned)."""
        try:
            return self.call(what, fn)
        except FencedError:
            self._on_fenced()
            return None
        except Exception as exc:
            self.tree_errors.failed(root, what, f"{type(exc).__name__}: {exc}")
            return None


def _log_tree_error(root: str, what: str, error: str) -> None:
    log.error("tree %s: %s failed: %s (other trees go on; logged once)", root, what, error)
