"""Durations as people write them: ``90s``, ``15m``, ``12h``, ``7d`` (and ``0``).

One parser for every place that takes one (``prune --older-than``, ``node
--retention``, the launcher's ``RETENTION``), so they accept and refuse the same texts
with the same messages.
"""

from __future__ import annotations

import re

#: Seconds per unit.
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
#: Longer than any retention anyone means (100 years): refused as a typo.
MAX_SECONDS = 100 * 365 * 86400


def parse_duration(text: str) -> float:
    """Seconds in ``text``: a number with a unit (``s``, ``m``, ``h``, ``d``, ``w``),
    e.g. ``90s``, ``15m``, ``1.5h``, ``7d``; or ``0``. Raises ValueError naming the text
    otherwise (``7x``, ``-1d``, an empty text, a number without a unit)."""
    if not isinstance(text, str):
        raise ValueError(f"invalid duration {text!r}: expected a text such as 90s, 15m, "
                         "12h or 7d")
    value = text.strip().lower()
    if value == "0":
        return 0.0
    match = _DURATION.fullmatch(value)
    if match is None:
        if not value:
            why = "it is empty"
        elif value.startswith("-"):
            why = "it is negative"
        elif re.fullmatch(r"\d+(\.\d+)?", value):
            why = "it has no unit"
        else:
            why = "it is not a number followed by s, m, h, d or w"
        raise ValueError(f"invalid duration {text!r}: {why} (examples: 90s, 15m, 12h, 7d)")
    seconds = float(match.group(1)) * UNITS[match.group(2)]
    if seconds > MAX_SECONDS:
        raise ValueError(f"invalid duration {text!r}: longer than 100 years")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact text ``parse_duration`` reads back (``604800`` -> ``7d``)."""
    if seconds <= 0:
        return "0"
    for unit in ("d", "h", "m"):
        size = UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
