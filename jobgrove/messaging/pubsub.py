"""Pub/sub: hints to re-read Redis, never the only carrier of a fact.

``Listener`` is one thread that reads a node's (or an endpoint's) channels and hands
each message on: it only decodes and calls ``on_message`` (which must not block:
actors just ``tell``). Losing messages is harmless; what matters is that every
(re)subscription is reported (``on_up``, or a channel's ``on_subscribed``) so the
owner reconciles. ``Hints`` is the blocking counterpart for one waiting thread
(``Client.wait``, ``submit --follow``).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import redis

log = logging.getLogger(__name__)

MessageHandler = Callable[[str, dict[str, Any]], None]


class PubSubSource(Protocol):
    """Where pub/sub connections come from: the ``Store`` (or a redis-py client)."""

    def pubsub(self, **kwargs: Any) -> Any: ...


class Listener:
    def __init__(self, source: PubSubSource, channels: list[str], on_message: MessageHandler,
                 on_up: Callable[[], None], on_down: Callable[[str], None],
                 name: str = "jobgrove-pubsub") -> None:
        self.source = source
        self.channels = set(channels)
        self.on_message = on_message
        self.on_up = on_up
        self.on_down = on_down
        self._changes: queue.SimpleQueue[tuple[bool, str, Callable[[], None] | None]] = \
            queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def subscribe(self, channel: str, on_subscribed: Callable[[], None] | None = None) -> None:
        """Subscribe ``channel`` (from any thread). ``on_subscribed`` is called in the
        listener's thread right after the subscription is sent (at once if the channel
        already is subscribed), so a read of Redis made from it misses nothing published
        on the channel afterwards. Across a reconnect, ``on_up`` (called once every
        channel is subscribed again) is what covers it."""
        self._changes.put((True, channel, on_subscribed))

    def unsubscribe(self, channel: str) -> None:
        self._changes.put((False, channel, None))

    def _apply_changes(self, pubsub: Any) -> None:
        while True:
            try:
                add, channel, on_subscribed = self._changes.get_nowait()
            except queue.Empty:
                return
            if add and channel not in self.channels:
                self.channels.add(channel)
                pubsub.subscribe(channel)
            elif not add and channel in self.channels:
                self.channels.discard(channel)
                pubsub.unsubscribe(channel)
            if on_subscribed is not None:
                try:
                    on_subscribed()
                except Exception:  # the owner's bug must not cost the subscriptions
                    log.exception("on_subscribed of %s failed", channel)

    def _loop(self) -> None:
        backoff = 0.05
        while not self._stop.is_set():
            pubsub = self.source.pubsub(ignore_subscribe_messages=True)
            try:
                self._apply_changes(pubsub)
                pubsub.subscribe(*sorted(self.channels))
                # Subscribed: whatever was published while we were away is re-read now.
                self.on_up()
                backoff = 0.05
                while not self._stop.is_set():
                    self._apply_changes(pubsub)
                    message = pubsub.get_message(timeout=0.2)
                    if message is not None and message.get("type") == "message":
                        self._dispatch(message)
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                self.on_down(str(exc) or type(exc).__name__)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 2.0)
            except Exception:  # a bug must not silently kill the only listener
                log.exception("pub/sub listener error; reconnecting")
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                try:
                    pubsub.close()
                except Exception:
                    log.debug("closing pub/sub failed", exc_info=True)

    def _dispatch(self, message: dict[str, Any]) -> None:
        channel = message.get("channel")
        data = message.get("data")
        if isinstance(channel, bytes):
            channel = channel.decode("utf-8", "replace")
        try:
            payload = json.loads(data)  # type: ignore[arg-type]  # None is caught below
        except (TypeError, ValueError, RecursionError):
            log.warning("ignored malformed pub/sub message on %s: %.200r", channel, data)
            return
        if not isinstance(payload, dict):
            log.warning("ignored non-object pub/sub message on %s: %.200r", channel, data)
            return
        try:
            self.on_message(str(channel), payload)
        except Exception:
            log.exception("pub/sub handler failed on %s", channel)


class Hints:
    """One waiting thread's subscription to some channels: ``wait`` returns True when a
    message came (time to re-read Redis). A broken connection also returns True (after
    a short pause), so the caller re-reads and sees the outage as the store reports it;
    the subscription is made again on the next ``wait``."""

    def __init__(self, source: PubSubSource, channels: list[str]) -> None:
        self._source = source
        self._channels = channels
        self._pubsub: Any = None

    def wait(self, timeout: float) -> bool:
        try:
            if self._pubsub is None:
                self._pubsub = self._source.pubsub(ignore_subscribe_messages=True)
                self._pubsub.subscribe(*self._channels)
                return True  # anything published before the subscription is missed
            return self._pubsub.get_message(timeout=max(timeout, 0.001)) is not None
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            self.close()
            time.sleep(min(timeout, 0.5))
            return True

    def close(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            try:
                pubsub.close()
            except Exception:
                log.debug("closing pub/sub failed", exc_info=True)

    def __enter__(self) -> Hints:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
