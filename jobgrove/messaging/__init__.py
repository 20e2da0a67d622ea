"""Everything that talks to Redis, and nothing else does: the connection, the key
schema (``keys``), the store of trees and jobs with its Lua compare-and-set scripts
(``store``, ``scripts``, ``lua/``), the replies decoded (``records``), tag listing,
the node registry and pub/sub hints."""
