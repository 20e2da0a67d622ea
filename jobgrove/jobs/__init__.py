"""Job code: the ``Job`` base class, ``@job_kind`` and the run context (``api``), the
job log files (``log``) and the built-in kinds (``builtin``, registered on import)."""

from jobgrove.jobs import builtin as _builtin  # noqa: F401  (registers the built-in kinds)
from jobgrove.jobs.api import Job, JobContext, TreeContext, job_kind, kind_class, kind_infos

__all__ = ["Job", "JobContext", "TreeContext", "job_kind", "kind_class", "kind_infos"]
