"""The runtime: pykka actors around the pure core.

``NodeActor`` (one per node) owns the slots, claims and outcomes; a ``TreeSupervisor``
per tree with jobs here starts them on ``JobActor``s (a pool, one per slot). Every
actor derives from ``base.Actor`` and receives the typed messages of ``messages``;
actors only ``tell``.
"""

from jobgrove.actors.job_actor import JobActor
from jobgrove.actors.node_actor import NodeActor
from jobgrove.actors.supervisor import TreeSupervisor

__all__ = ["JobActor", "NodeActor", "TreeSupervisor"]
