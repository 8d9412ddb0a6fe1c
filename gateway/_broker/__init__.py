"""How the engine and the gateways meet when they run as separate processes.

``trade-engine serve`` (role ``all``) runs everything in one process and
never imports this package's Redis half: the engine task feeds the hub
directly, as it always did. With ``--role engine`` / ``--role gateway`` the
processes meet on Redis Streams (``docs/scaling.md`` has the design):

* ``_codec``: pure; the entry formats, keys, and the bookkeeping that decides
  (which record a replica applies next, which request a reply belongs to,
  reconnect delays).
* ``_redis``: the client (coredis, pinned) with the pool fix our note found.
* ``_engine_role``: the engine process's tasks: command intake, publishing,
  bootstrap snapshots, liveness, trimming; ``_journal_tail`` reads what the
  journal holds past a point (to republish, and where intake resumes).
* ``_settings``: ``role`` and ``[broker]`` of the configuration (pure).
* ``_serve``: the two roles wired on ``gateway._server``'s listeners.
* ``_gateway_role``: a gateway's replica runtime: it follows the events
  stream and sends its order entry to the engine.
"""
