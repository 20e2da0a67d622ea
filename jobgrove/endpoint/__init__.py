"""The node endpoint: one HTTP/websocket port per node (``--listen``).

It serves the browser viewer (``web/``), ``/health``, the tree listing API and the
websocket protocol (``wire``): any job's log from any node (local files, or relayed
from the owning node by ``relay``), and live tree status. ``Endpoint`` (``app``) owns
every thread, socket and actor of it.
"""

from jobgrove.endpoint.app import Endpoint

__all__ = ["Endpoint"]
