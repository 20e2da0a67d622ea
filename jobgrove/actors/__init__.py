"""The runtime: pykka actors around the pure core.

NodeActor (one per node) claims and records; TreeSupervisor (one per tree with jobs
running here) owns JobActors (one per running job). Actors only ``tell``.
"""

from jobgrove.actors.job_actor import JobActor
from jobgrove.actors.node_actor import NodeActor
from jobgrove.actors.supervisor import TreeSupervisor

__all__ = ["JobActor", "NodeActor", "TreeSupervisor"]
