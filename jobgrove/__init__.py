"""jobgrove: a distributed job-tree manager.

Trees of jobs run on a cluster of nodes, leaves first, siblings in parallel; a failure
stops the whole tree. State lives in Redis; nodes are pykka actors.
"""

__version__ = "0.1.0"

from jobgrove.client import Client  # noqa: E402
from jobgrove.core.spec import Param  # noqa: E402
from jobgrove.core.states import State  # noqa: E402
from jobgrove.errors import (  # noqa: E402
    CorruptRecordError,
    JobAbortedError,
    JobFailedError,
    JobgroveError,
    NodeNameInUseError,
    SpecError,
    StoreUnavailableError,
    UnknownJobError,
    UnknownNodeError,
    WaitTimeoutError,
)
from jobgrove.jobs import Job, JobContext, job_kind  # noqa: E402
from jobgrove.node import Node  # noqa: E402

__all__ = [
    "Client",
    "CorruptRecordError",
    "Job",
    "JobAbortedError",
    "JobContext",
    "JobFailedError",
    "JobgroveError",
    "Node",
    "NodeNameInUseError",
    "Param",
    "SpecError",
    "State",
    "StoreUnavailableError",
    "UnknownJobError",
    "UnknownNodeError",
    "WaitTimeoutError",
    "__version__",
    "job_kind",
]
