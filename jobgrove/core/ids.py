"""Job ids: canonical lower-case UUID strings, the only shape an id takes.

Checked before an id is ever used in a key, a path or a channel name, so no text a
client sends can become one.
"""

from __future__ import annotations

import re
from typing import TypeGuard

_JOB_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
#: Shortest id prefix accepted for a job id (what every output shows is 8 characters).
MIN_PREFIX = 8
_PREFIX = re.compile(rf"[0-9a-f-]{{{MIN_PREFIX},36}}")


def is_job_id(value: object) -> TypeGuard[str]:
    """True for a canonical (lower-case) UUID string."""
    return isinstance(value, str) and _JOB_ID.fullmatch(value) is not None


def is_id_or_prefix(value: object) -> TypeGuard[str]:
    """True for a job id, or text that may be a prefix of one (lower-case hex digits and
    dashes, at least ``MIN_PREFIX`` of them): safe to look up, never used in a key."""
    return isinstance(value, str) and _PREFIX.fullmatch(value) is not None
