"""The trio I/O shell around the engine: REST order entry and WebSocket streams.

:func:`serve` runs everything in the caller's nursery; ``trade-engine serve``
is a thin command line over it. The modules behind this surface are private:

* ``_config``: the typed configuration and its loaders.
* ``_runtime``: the engine task (the one owner of the engine).
* ``_journal``: the write-ahead journal on disk, snapshots, recovery.
* ``_datadir``: one server per journal (a ``flock`` on its ``LOCK`` file).
* ``_hub``: the per-stream fan-out tasks (record history; build, frame, hand out).
* ``_streams``, ``_history``, ``_stream_files``: every command's events numbered per
  channel (in the engine task), the bounded history a client resumes from, and the
  epoch and stream state stored beside the journal's snapshots.
* ``_ws``: the WebSocket port: admits handshakes, keeps the live connections, shuts down.
* ``_connection``: one WebSocket connection's tasks (reader, writer, heartbeat) and goodbye.
* ``_listener``, ``_handshake``: the WebSocket port's TCP side, and its answer to plain HTTP.
* ``_rest``: the REST API.
* ``_protocol``, ``_messages``: pure protocol and encoding, no I/O.
* Pure cores, no trio and no clock reads (time is an argument), each behind a trio
  shell: ``_admission`` (origin, limits, token, endpoint), ``_heartbeat`` (pings,
  timeouts, token expiry), ``_closing`` (close codes and a connection's close
  state), ``_routing`` (the subscription registry), ``_streams`` and ``_history`` and
  ``_limits`` (rate limits and counts).
* ``_transport``, ``_frames``, ``_deflate``: the socket owner under each connection,
  frames, and permessage-deflate.
* ``_broker``: scale-out over Redis Streams (roles ``engine`` and ``gateway``, see
  docs/scaling.md); imported only by those roles, except its pure settings.
* ``_gc``: the cyclic garbage collector policy.
* ``_auth``, ``_stats``, ``_server``, ``_cli`` (and ``_watch``, its ``watch`` command,
  which runs on the client library's WebSocket).

``gateway.client`` (a public package of its own, not imported here) is the trio
client library: streams that resume, a checksummed local book, order entry.
"""

from gateway._auth import TokenVerifier as TokenVerifier
from gateway._auth import issue_token as issue_token
from gateway._broker._codec import ReplicaLost as ReplicaLost
from gateway._broker._settings import BrokerSettings as BrokerSettings
from gateway._broker._settings import Role as Role
from gateway._config import AuthSettings as AuthSettings
from gateway._config import Config as Config
from gateway._config import ConfigError as ConfigError
from gateway._config import EngineSettings as EngineSettings
from gateway._config import GcSettings as GcSettings
from gateway._config import HistorySettings as HistorySettings
from gateway._config import JournalSettings as JournalSettings
from gateway._config import LimitSettings as LimitSettings
from gateway._config import WebSocketSettings as WebSocketSettings
from gateway._config import load_config as load_config
from gateway._datadir import DataDirectoryLocked as DataDirectoryLocked
from gateway._journal import Fsync as Fsync
from gateway._journal import JournalError as JournalError
from gateway._journal import UnsupportedJournalFormat as UnsupportedJournalFormat
from gateway._runtime import Busy as Busy
from gateway._runtime import Unavailable as Unavailable
from gateway._server import Endpoints as Endpoints
from gateway._server import Gateway as Gateway
from gateway._server import serve as serve

__all__ = [
    "AuthSettings",
    "BrokerSettings",
    "Busy",
    "Config",
    "ConfigError",
    "DataDirectoryLocked",
    "Endpoints",
    "EngineSettings",
    "Fsync",
    "Gateway",
    "GcSettings",
    "HistorySettings",
    "JournalError",
    "JournalSettings",
    "LimitSettings",
    "ReplicaLost",
    "Role",
    "TokenVerifier",
    "Unavailable",
    "UnsupportedJournalFormat",
    "WebSocketSettings",
    "issue_token",
    "load_config",
    "serve",
]
