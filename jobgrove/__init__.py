"""jobgrove: a distributed job-tree manager.

Trees of jobs run on a cluster of nodes, leaves first, siblings in parallel; a failure
stops the whole tree. State lives in Redis; nodes are pykka actors.
"""

from jobgrove._version import __version__
from jobgrove.client import Client
from jobgrove.config import NodeConfig
from jobgrove.core.spec import Param
from jobgrove.core.states import State
from jobgrove.errors import (
    AmbiguousIdError,
    BadRedisURLError,
    ConfigError,
    CorruptRecordError,
    JobAbortedError,
    JobFailedError,
    JobgroveError,
    LogWriteError,
    NodeBusyError,
    NodeNameInUseError,
    RefusedError,
    SpecError,
    StoreUnavailableError,
    TreeBusyError,
    UnknownJobError,
    UnknownNodeError,
    WaitTimeoutError,
)
from jobgrove.jobs import Job, JobContext, job_kind
from jobgrove.node import Node

__all__ = [
    "AmbiguousIdError",
    "BadRedisURLError",
    "Client",
    "ConfigError",
    "CorruptRecordError",
    "Job",
    "JobAbortedError",
    "JobContext",
    "JobFailedError",
    "JobgroveError",
    "LogWriteError",
    "Node",
    "NodeBusyError",
    "NodeConfig",
    "NodeNameInUseError",
    "Param",
    "RefusedError",
    "SpecError",
    "State",
    "StoreUnavailableError",
    "TreeBusyError",
    "UnknownJobError",
    "UnknownNodeError",
    "WaitTimeoutError",
    "__version__",
    "job_kind",
]
