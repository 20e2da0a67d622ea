"""Job ids: canonical lower-case UUID strings, the only shape an id takes.

Checked before an id is ever used in a key, a path or a channel name, so no text a
client sends can become one.
"""

from __future__ import annotations

import re
from typing import TypeGuard

_JOB_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def is_job_id(value: object) -> TypeGuard[str]:
    """True for a canonical (lower-case) UUID string."""
    return isinstance(value, str) and _JOB_ID.fullmatch(value) is not None
