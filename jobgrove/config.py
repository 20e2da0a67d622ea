"""A node's settings, stated once: ``NodeConfig`` is what ``Node`` runs with, what the
``jobgrove node`` options fill in, and what the launcher's config file keys name.

Each field carries its help text, its command-line flag, its launcher key and the
parser that checks a text value (``parse``), so the three ways of setting a node
share one set of defaults and one set of error messages.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import re
import shlex
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jobgrove.core.durations import parse_duration
from jobgrove.core.spec import MAX_NAME, check_node_name
from jobgrove.errors import ConfigError

#: The command-line default of ``--listen``: loopback, a fixed port, so that the
#: viewer's URL is known in advance (an embedded ``Node`` has no endpoint unless given
#: ``listen``). A second node on the same machine needs another port.
DEFAULT_LISTEN = "127.0.0.1:8750"
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


# -- parsers: text -> value, or ValueError saying what is wrong -----------------------------
def node_name(text: str) -> str:
    if not text or len(text) > MAX_NAME or not text.isprintable() or check_node_name(text):
        raise ValueError(f"{text!r} is not a valid node name: 1 to {MAX_NAME} printable "
                         "characters, no spaces, '/', '{' or '}'")
    return text


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1 or str(value) != text.strip().lstrip("+"):
        raise ValueError(f"must be a positive integer, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0 or str(value) != text.strip().lstrip("+"):
        raise ValueError(f"must be an integer >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"must be a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise ValueError(f"must be > 0, got {text!r}")
    return value


def host_port(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT (e.g. 0.0.0.0:8750)")
    return text


def listen_address(text: str) -> str | None:
    """HOST:PORT, or ``none`` (no endpoint)."""
    if text.strip().lower() in ("", "none"):
        return None
    return host_port(text)


def directory(text: str) -> str:
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"{text!r} exists and is not a directory")
    return str(path)


def readable_file(text: str) -> str:
    if not os.access(text, os.R_OK) or not Path(text).is_file():
        raise ValueError(f"{text!r} is not a readable file")
    return text


def module_names(text: str) -> tuple[str, ...]:
    """Python module names, separated by spaces or commas."""
    names = tuple(text.replace(",", " ").split())
    for name in names:
        if not _MODULE.match(name):
            raise ValueError(f"{name!r} is not a Python module name")
    return names


def words(text: str) -> tuple[str, ...]:
    return tuple(text.replace(",", " ").split())


def command_line(text: str) -> str:
    """A command, split like a shell would (no expansion)."""
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        raise ValueError(f"is not a command line: {exc}") from None
    if not argv:
        raise ValueError("is empty")
    return text


def _free_port_after(host: str, port: int, tries: int = 20) -> int | None:
    """The first port after ``port`` that ``host`` can listen on now (None if none of
    the next ``tries`` can), to suggest a fix that works."""
    for candidate in range(port + 1, min(port + 1 + tries, 65536)):
        try:
            with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
                probe.bind((host.strip("[]"), candidate))
                return candidate
        except OSError:
            continue
    return None


def listen_error(host: str, port: int, exc: OSError) -> str:
    """What to tell a user whose ``--listen`` address cannot be bound, and the fix."""
    where = f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        free = _free_port_after(host, port)
        pick = f"Pick a free port with --listen {host}:{free}, or" if free else "Use"
        return (f"cannot listen on {where}: the port is already in use (another jobgrove "
                f"node on this machine?). {pick} --listen {host}:0 for any free port, "
                "or --listen none for no endpoint")
    if exc.errno == errno.EACCES:
        return (f"cannot listen on {where}: permission denied (ports below 1024 need "
                f"privileges); pick another port, e.g. --listen {host}:8750")
    if exc.errno == errno.EADDRNOTAVAIL:
        return (f"cannot listen on {where}: no interface of this machine has that address "
                "(use one of its addresses, 127.0.0.1, or 0.0.0.0 for all)")
    return (f"cannot listen on {where}: {exc.strerror or exc} (check the host: an address "
            "of this machine, 127.0.0.1, or 0.0.0.0 for all)")


def _setting(default: Any, help: str, *, flag: str | None = None, key: str | None = None,
             parse: Callable[[str], Any] | None = None, metavar: str | None = None,
             repeat: bool = False) -> Any:
    """A field: ``flag`` for ``jobgrove node``, ``key`` for the launcher's config file,
    ``parse`` to check a text value; ``repeat``: a repeatable flag (a tuple)."""
    meta = {"help": help, "flag": flag, "key": key, "parse": parse, "metavar": metavar,
            "repeat": repeat}
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple default")
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class NodeConfig:
    """Everything a node runs with, but its name and its Redis."""

    concurrency: int = _setting(
        8, "jobs run at once on this node", flag="--concurrency", key="CONCURRENCY",
        parse=positive_int, metavar="N")
    log_dir: str | None = _setting(
        None, "directory of this node's job logs (default: $JOBGROVE_LOG_DIR/NAME, else "
        "~/.local/state/jobgrove/NAME/logs)", flag="--log-dir", key="LOG_DIR",
        parse=directory, metavar="DIR")
    listen: str | None = _setting(
        None, "HOST:PORT of the node's HTTP/websocket endpoint, or 'none' (an embedded "
        "Node has none unless given)", flag="--listen", key="LISTEN", parse=listen_address,
        metavar="HOST:PORT")
    advertise: str | None = _setting(
        None, "HOST:PORT other nodes and viewers use to reach the endpoint (default: the "
        "bound --listen address)", flag="--advertise", key="ADVERTISE", parse=host_port,
        metavar="HOST:PORT")
    secret_file: str | None = _setting(
        None, "file holding the cluster secret: enables tokens, and binding other than "
        "loopback", flag="--secret-file", key="SECRET_FILE", parse=readable_file,
        metavar="FILE")
    allowed_origins: tuple[str, ...] = _setting(
        (), "browser Origin allowed besides the page's own (repeatable; '*' allows any)",
        flag="--allow-origin", parse=words, metavar="ORIGIN", repeat=True)
    imports: tuple[str, ...] = _setting(
        (), "Python module to import at start, to register job kinds (repeatable)",
        flag="--import", key="IMPORTS", parse=module_names, metavar="MODULE", repeat=True)
    notify_command: str | None = _setting(
        None, "command run once when Redis becomes unavailable and once on recovery "
        "(details in its environment and as JSON on stdin)", flag="--notify-command",
        key="NOTIFY_COMMAND", parse=command_line, metavar="CMD")
    abort_grace: float = _setting(
        10.0, "seconds a job may take to stop once asked to abort, before it is fenced "
        "off (recorded ABORTED, its late result discarded)", flag="--abort-grace",
        parse=positive_float, metavar="SECONDS")
    lease: float = _setting(
        10.0, "liveness lease: a node silent this long is lost, and its running jobs fail",
        flag="--lease", parse=positive_float, metavar="SECONDS")
    reconcile_interval: float = _setting(
        5.0, "re-read Redis this often, for anything pub/sub missed",
        flag="--reconcile-interval", parse=positive_float, metavar="SECONDS")
    retention: float = _setting(
        7 * 86400.0, "delete done trees whose root finished longer ago than this, e.g. 90s, "
        "15m, 12h, 7d, or 0 to keep them forever (default: 7d); nodes take turns, one at a "
        "time, in small batches", flag="--retention", key="RETENTION", parse=parse_duration,
        metavar="DURATION")
    log_keep_bytes: int = _setting(
        1 << 20, "bytes of the end of each job's log the node stores in Redis when the job "
        "ends, served once the node is gone; 0 stores none (default: 1048576, 1 MiB)",
        flag="--log-keep-bytes", key="LOG_KEEP_BYTES", parse=non_negative_int, metavar="N")
    retention_interval: float | None = _setting(
        None, "how often nodes try to prune (default: retention / 10, from 1 s to 60 s)")
    min_replicas_ack: int = _setting(
        0, "each claim and outcome counts as done only once this many Redis replicas "
        "acknowledged it (WAIT); 0: as soon as the primary has it", flag="--min-replicas-ack",
        key="MIN_REPLICAS_ACK", parse=non_negative_int, metavar="N")
    ack_timeout: float = _setting(
        1.0, "seconds a claim or outcome waits for --min-replicas-ack replicas; not "
        "acknowledged by then, it is treated like a Redis outage", flag="--ack-timeout",
        key="ACK_TIMEOUT", parse=positive_float, metavar="SECONDS")
    heartbeat: float | None = _setting(None, "lease renewal period (default: lease / 4)")
    tick: float = _setting(0.05, "the node actor's timer period (seconds)")
    namespace: str = _setting("jg", "prefix of every Redis key and channel")

    def __post_init__(self) -> None:
        if not isinstance(self.concurrency, int) or isinstance(self.concurrency, bool) \
                or self.concurrency < 1:
            raise ConfigError(f"concurrency must be a positive integer, got "
                              f"{self.concurrency!r}")
        if isinstance(self.retention, str):  # "7d", as on the command line
            try:
                object.__setattr__(self, "retention", parse_duration(self.retention))
            except ValueError as exc:
                raise ConfigError(f"retention: {exc}") from None
        if not isinstance(self.log_keep_bytes, int) or isinstance(self.log_keep_bytes, bool) \
                or self.log_keep_bytes < 0:
            raise ConfigError(f"log_keep_bytes must be an integer >= 0, got "
                              f"{self.log_keep_bytes!r}")
        if not isinstance(self.retention, (int, float)) or not 0 <= self.retention < 1e10:
            raise ConfigError(f"retention must be a number of seconds >= 0, got "
                              f"{self.retention!r}")
        if not isinstance(self.min_replicas_ack, int) or isinstance(self.min_replicas_ack, bool) \
                or self.min_replicas_ack < 0:
            raise ConfigError(f"min_replicas_ack must be an integer >= 0, got "
                              f"{self.min_replicas_ack!r}")
        for name in ("abort_grace", "lease", "reconcile_interval", "tick", "ack_timeout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"{name} must be a positive number, got {value!r}")

    def resolved_log_dir(self, name: str) -> str:
        if self.log_dir:
            return self.log_dir
        base = os.environ.get("JOBGROVE_LOG_DIR")
        if base:
            return str(Path(base) / name)
        return str(Path.home() / ".local" / "state" / "jobgrove" / name / "logs")

    @property
    def heartbeat_interval(self) -> float:
        return self.heartbeat or max(self.lease / 4, 0.05)


def settings() -> list[dataclasses.Field[Any]]:
    """The fields of ``NodeConfig``, in order."""
    return list(dataclasses.fields(NodeConfig))


def parse_setting(field: dataclasses.Field[Any], text: str) -> Any:
    """A text value (a flag's argument, a launcher value) for ``field``."""
    parse = field.metadata.get("parse")
    return parse(text) if parse is not None else text
