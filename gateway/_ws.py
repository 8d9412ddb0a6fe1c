"""The real-time WebSocket port: admission, then one :class:`Connection` per client.

Rules of this module:

* The TCP side (accept, plain HTTP answers, the handshake) is
  ``gateway/_listener.py``; each handshake it yields is admitted or refused by
  ``gateway/_admission.py`` (origin, limits, token, endpoint), in that
  module's order, and a refusal is answered with its HTTP status and a JSON
  error. An admitted client gets a :class:`gateway._connection.Connection`.
* permessage-deflate (``gateway/_deflate.py``) is agreed before ``accept``:
  the answer goes out as a response header (trio-websocket's public
  ``extra_headers``), the transport inflates what the client compresses, and
  the hub picks each subscriber's frame by ``deflate_window_bits``. wsproto is
  never told: trio-websocket's ``accept`` passes it no extension.
* This object keeps the set of live connections, and shuts down in two steps:
  :meth:`WebSocketGateway.shutdown` refuses new handshakes and asks every
  connection to close with 1001 after a ``shutdown`` message;
  :meth:`WebSocketGateway.wait_drained` returns once the last one is gone.
* Nothing a client sends can escape the handler: an exception there would
  stop the listener for everyone.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

import trio
from trio_websocket import ConnectionClosed, WebSocketRequest

from gateway._admission import Admission, Refusal
from gateway._auth import TokenVerifier
from gateway._closing import GOING_AWAY
from gateway._config import LimitSettings, WebSocketSettings
from gateway._connection import HARD_SIZE_FACTOR, Connection, message_frame
from gateway._deflate import HEADER as EXTENSIONS_HEADER
from gateway._deflate import Inflater, negotiate
from gateway._hub import Hub
from gateway._limits import OrderRate
from gateway._listener import Listener
from gateway._runtime import Runtime
from gateway._stats import Stats
from gateway._transport import CoalescingStream

log = logging.getLogger("trade_engine.gateway")


class WebSocketGateway:
    """Admits upgrade requests as connections and keeps the set of live ones.

    The endpoints and the checks are those of :class:`gateway._admission.Admission`.
    """

    def __init__(
        self,
        hub: Hub,
        *,
        runtime: Runtime,
        order_rate: OrderRate,
        settings: WebSocketSettings,
        limits: LimitSettings,
        verifier: TokenVerifier,
        stats: Stats,
        symbols: Collection[str],
    ) -> None:
        self._hub = hub
        self._runtime = runtime
        self._order_rate = order_rate
        self._settings = settings
        self._limits = limits
        self._symbols = frozenset(symbols)
        self._admission = Admission(limits, symbols=self._symbols, verify=verifier.verify)
        self._stats = stats
        self._connections: set[Connection] = set()
        self._drained = trio.Event()  # set once shut down and every connection has closed

    async def serve(
        self, host: str, port: int, *, rest_port: int | None = None,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen until cancelled; ``task_status.started`` gets the bound port.

        ``rest_port`` is named to plain HTTP requests that reach this port.
        """
        listener = Listener(
            self._handle, max_pending=self._settings.send_queue_size,
            max_message_size=self._settings.max_message_size * HARD_SIZE_FACTOR,
            handshake_timeout=self._settings.handshake_timeout, rest_port=rest_port,
        )
        await listener.serve(host, port, task_status=task_status)

    def shutdown(self) -> None:
        """Refuse new connections; close open ones with 1001 after a ``shutdown`` message."""
        self._admission.accepting = False
        farewell = message_frame({"type": "shutdown", "reason": "server shutting down"})
        for connection in list(self._connections):
            connection.close_soon(GOING_AWAY, "server shutting down", farewell)
        self._check_drained()

    async def wait_drained(self) -> None:
        """Return once :meth:`shutdown` was called and the last connection has closed."""
        await self._drained.wait()

    def _check_drained(self) -> None:
        if not self._admission.accepting and not self._connections:
            self._drained.set()

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    async def _handle(self, request: WebSocketRequest, transport: CoalescingStream,
                      headers: list[tuple[bytes, bytes]]) -> None:
        try:
            await self._handle_request(request, transport, headers)
        except ConnectionClosed:
            pass
        except Exception:  # one client must never stop the listener for everyone
            log.exception("WebSocket handler failed")

    async def _handle_request(self, request: WebSocketRequest, transport: CoalescingStream,
                              headers: list[tuple[bytes, bytes]]) -> None:
        admitted = self._admission.admit(
            ip=transport.peer_ip, target=request.path, headers=request.headers,
            now=trio.current_time())
        if isinstance(admitted, Refusal):
            self._stats.handshakes_rejected += 1
            self._stats.connections_refused[admitted.code] += 1
            await request.reject(admitted.status, extra_headers=admitted.headers(),
                                 body=admitted.body())
            return
        try:
            deflate = negotiate(headers) if self._settings.compression else None
            extensions = [] if deflate is None else [(EXTENSIONS_HEADER, deflate.response)]
            if deflate is not None:  # before the 101: the client may compress right after it
                transport.inflate_with(
                    Inflater(self._settings.max_message_size * HARD_SIZE_FACTOR))
            ws = await request.accept(extra_headers=extensions)
            connection = Connection(
                ws, admitted.identity, transport=transport,
                deflate_window_bits=0 if deflate is None else deflate.window_bits,
                hub=self._hub, runtime=self._runtime, order_rate=self._order_rate,
                settings=self._settings, limits=self._limits, stats=self._stats,
                symbols=self._symbols,
            )
            self._connections.add(connection)
            self._stats.connections += 1
            self._stats.connections_total += 1
            try:
                await connection.run(admitted.subscribe)
            finally:
                self._connections.discard(connection)
                self._stats.connections -= 1
                self._check_drained()
        finally:
            self._admission.release(admitted)
