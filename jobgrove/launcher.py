"""The per-node launcher (``jobgrove-node``): start one node from a small config file.

Usage: jobgrove-node [--print] [CONFIG]
       jobgrove-node --systemd-unit
CONFIG defaults to $JOBGROVE_NODE_CONFIG; without either, the environment alone is used.

The config file holds KEY=VALUE lines (blank lines and # comments ignored, an optional
leading "export ", values optionally in matching single or double quotes, taken
literally: nothing is expanded or evaluated). Each KEY may be overridden by the
environment variable JOBGROVE_<KEY>. The keys:

{keys}

The launcher checks everything it can, prints clear errors (exit code 2), and then
replaces itself with `jobgrove node ...` (exec), so signals reach the node directly:
SIGTERM/SIGINT stop it gracefully, a second one at once. --print shows the command
instead of running it. --systemd-unit prints a systemd template unit that runs this
launcher (jobgrove-node@NAME reads /etc/jobgrove/NAME.conf).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import sys
import textwrap
from importlib import resources
from pathlib import Path

from jobgrove.config import DEFAULT_LISTEN, node_name, parse_setting, settings
from jobgrove.errors import BadRedisURLError, ConfigError
from jobgrove.messaging.urls import parse_redis_url

BAD_INPUT = 2
#: Keys of the launcher itself; the others are NodeConfig's (``key`` metadata).
_OWN_KEYS = {
    "NAME": "node name (required)",
    "REDIS_URL": "redis://HOST:PORT/DB, rediss://..., unix:///path, "
                 "redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE[/DB] or "
                 "redis+cluster://HOST:PORT[,HOST:PORT...] (default: "
                 "$JOBGROVE_REDIS_URL, else redis://127.0.0.1:6379/0)",
    "EXTRA_ARGS": "further `jobgrove node` options, split like a shell would (no "
                  "expansion), e.g. EXTRA_ARGS=--lease 15 --abort-grace 30",
    "JOBGROVE": "the jobgrove command to run (default: this Python's `-m jobgrove` if it "
                "has jobgrove installed, else `jobgrove` on PATH)",
}
_FIELDS = {f.metadata["key"]: f for f in settings() if f.metadata.get("key")}
KEYS = (*_OWN_KEYS, *_FIELDS)
_KEY_LINE = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)$")


def _describe(key: str) -> str:
    if key in _OWN_KEYS:
        return _OWN_KEYS[key]
    field = _FIELDS[key]
    text = str(field.metadata["help"]).replace(" (repeatable)", "").split(" (an embedded")[0]
    if field.metadata.get("repeat"):
        return f"{text} (several: space-separated)"
    if "default:" not in text:
        default = DEFAULT_LISTEN if key == "LISTEN" else field.default
        text += f" (default: {'none' if default is None else default})"
    return text


def usage() -> str:
    width = max(len(k) for k in KEYS) + 4
    lines = [textwrap.fill(_describe(key), width=88, initial_indent=f"  {key:<{width - 2}}",
                           subsequent_indent=" " * width) for key in KEYS]
    return (__doc__ or "").format(keys="\n".join(lines))


def parse_config(path: str) -> dict[str, str]:
    """KEY=VALUE lines of ``path``; raises ConfigError naming the file and line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path!r}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path!r} is not UTF-8 text") from exc
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}:{number}"
        match = _KEY_LINE.match(line)
        if match is None:
            raise ConfigError(f"{where}: expected KEY=VALUE, got {raw.strip()[:80]!r}")
        key, value = match.group(1), match.group(2).strip()
        if key not in KEYS:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(KEYS)})")
        if key in values:
            raise ConfigError(f"{where}: {key} is set twice")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        elif value[:1] in ("'", '"'):
            raise ConfigError(f"{where}: {key}: unbalanced quote")
        values[key] = value
    return values


def build_command(values: dict[str, str]) -> list[str]:
    """The `jobgrove node` command line for ``values``; raises ConfigError."""
    name = values.get("NAME", "")
    if not name:
        raise ConfigError("NAME is required (in the config file, or JOBGROVE_NAME)")
    try:
        node_name(name)
    except ValueError as exc:
        raise ConfigError(f"NAME {exc}") from None
    argv = ["node", "--name", name]
    url = values.get("REDIS_URL")
    if url:
        try:
            parse_redis_url(url)
        except BadRedisURLError as exc:  # names the problem, never the password
            raise ConfigError(f"REDIS_URL: {exc}") from None
        argv += ["--redis", url]
    for key, field in _FIELDS.items():
        text = values.get(key)
        if not text:
            continue
        try:
            parsed = parse_setting(field, text)
        except ValueError as exc:
            raise ConfigError(f"{key} {exc}") from None
        flag = field.metadata["flag"]
        if field.metadata.get("repeat"):
            for item in parsed:
                argv += [flag, item]
        else:
            argv += [flag, text]
    extra = values.get("EXTRA_ARGS")
    if extra:
        try:
            argv += shlex.split(extra)
        except ValueError as exc:
            raise ConfigError(f"EXTRA_ARGS: {exc}") from exc
    return _jobgrove(values.get("JOBGROVE")) + argv


def _jobgrove(explicit: str | None) -> list[str]:
    if explicit:
        command = shlex.split(explicit)
        if not command or shutil.which(command[0]) is None:
            raise ConfigError(f"JOBGROVE {explicit!r}: command not found")
        return command
    if importlib.util.find_spec("jobgrove") is not None:
        return [sys.executable, "-m", "jobgrove"]
    found = shutil.which("jobgrove")
    if found is None:
        raise ConfigError("cannot find jobgrove: install it for this Python, put `jobgrove` "
                          "on PATH, or set JOBGROVE=/path/to/jobgrove")
    return [found]


def values_from(config: str | None, environ: dict[str, str]) -> dict[str, str]:
    values = parse_config(config) if config else {}
    for key in KEYS:
        value = environ.get(f"JOBGROVE_{key}")
        if value is not None:
            values[key] = value.strip()
    return values


def systemd_unit() -> str:
    """The template unit shipped with the package, its ExecStart naming this Python
    (the one jobgrove is installed in), so nothing is assumed about where it lives."""
    template = resources.files("jobgrove").joinpath("data/jobgrove-node@.service")
    launcher = shlex.join([sys.executable, "-m", "jobgrove.launcher"])
    return template.read_text(encoding="utf-8").replace("@LAUNCHER@", launcher)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--systemd-unit"]:
        sys.stdout.write(systemd_unit())
        return 0
    show = "--print" in args
    if show:
        args.remove("--print")
    if any(a in ("-h", "--help") for a in args):
        print(usage())
        return 0
    if len(args) > 1 or any(a.startswith("-") for a in args):
        print("usage: jobgrove-node [--print] [CONFIG] | --systemd-unit", file=sys.stderr)
        return BAD_INPUT
    config = args[0] if args else os.environ.get("JOBGROVE_NODE_CONFIG") or None
    try:
        command = build_command(values_from(config, dict(os.environ)))
    except ConfigError as exc:
        print(f"jobgrove-node: error: {exc}", file=sys.stderr)
        return BAD_INPUT
    if show:
        print(shlex.join(command))
        return 0
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp(command[0], command)
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
