"""Job ids as people type them: any unique prefix of at least ``MIN_PREFIX``
characters.

Every job id is in one sorted set (``Keys.ids``), all scored 0, written at submit: a
``ZRANGEBYLEX`` over it lists the ids that start with a prefix. One key, so one hash
slot: the lookup works on Redis Cluster too.
"""

from __future__ import annotations

import re
from typing import Any

from jobgrove.core.ids import MIN_PREFIX, is_job_id
from jobgrove.errors import AmbiguousIdError, UnknownJobError
from jobgrove.messaging.keys import Keys
from jobgrove.messaging.redis_errors import translate_errors

#: Candidates listed when a prefix is ambiguous.
CANDIDATES = 10
_PREFIX = re.compile(r"[0-9a-f-]+")


@translate_errors
def resolve_id(client: Any, keys: Keys, text: str) -> str:
    """The job id ``text`` stands for: a full id as it is, else the one id that starts
    with it. Raises UnknownJobError, or AmbiguousIdError listing the candidates."""
    if is_job_id(text):
        return text
    prefix = text.strip().lower() if isinstance(text, str) else ""
    if len(prefix) < MIN_PREFIX or not _PREFIX.fullmatch(prefix):
        # Asked all the same, so that an unreachable Redis reads as that (exit 3).
        client.hexists(keys.roots, str(text))
        raise UnknownJobError(str(text), f"give a full job id or a unique prefix of at "
                              f"least {MIN_PREFIX} characters")
    # "\xff" sorts after every character of an id: the range is "starts with prefix".
    found = client.zrangebylex(keys.ids, f"[{prefix}", f"[{prefix}\xff", start=0,
                               num=CANDIDATES + 1)
    if not found:
        raise UnknownJobError(str(text))
    if len(found) > 1:
        raise AmbiguousIdError(prefix, sorted(found)[:CANDIDATES], more=len(found) > CANDIDATES)
    return str(found[0])
