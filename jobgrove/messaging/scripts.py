"""The Lua scripts that change job state, loaded once per client.

Each script is the shared prelude (``lua/common.lua``) followed by its body, so every
state change and all of its consequences run as one atomic step inside Redis.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

SCRIPT_NAMES = ("claim", "finish", "abort", "reap")


def _source(name: str) -> str:
    folder = resources.files("jobgrove.messaging") / "lua"
    prelude = (folder / "common.lua").read_text(encoding="utf-8")
    return prelude + "\n" + (folder / f"{name}.lua").read_text(encoding="utf-8")


def register_scripts(client: Any) -> dict[str, Any]:
    """Register every script on ``client``; returns name -> callable Script object."""
    return {name: client.register_script(_source(name)) for name in SCRIPT_NAMES}
