"""The pure core: job states, tree specs and tree rules.

Nothing in this package imports pykka, redis, sockets or threading; it is plain data
and functions, unit-tested on its own. The Redis store implements the same rules in
Lua (atomically), and the test-suite checks the two agree.
"""

from jobgrove.core.model import TreeModel
from jobgrove.core.spec import (
    MAX_DEPTH,
    MAX_JOBS,
    TAG_KEYS,
    JobSpec,
    KindInfo,
    Param,
    parse_spec,
)
from jobgrove.core.states import (
    FINISHED,
    State,
    can_transition,
)
from jobgrove.core.status import nest_status

__all__ = [
    "FINISHED",
    "MAX_DEPTH",
    "MAX_JOBS",
    "TAG_KEYS",
    "JobSpec",
    "KindInfo",
    "Param",
    "State",
    "TreeModel",
    "can_transition",
    "nest_status",
    "parse_spec",
]
