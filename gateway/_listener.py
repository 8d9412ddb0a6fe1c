"""The WebSocket port's TCP side: accept, answer plain HTTP, hand the rest to trio-websocket.

Rules of this module:

* One nursery per server (``trio.serve_listeners``), one task per TCP
  connection. That task owns the connection's :class:`CoalescingStream` from
  its first byte to its close (``finally``), and runs trio-websocket's reader
  in a nursery of its own, cancelled when the handler returns.
* The request head is read here first, within ``handshake_timeout``. A plain
  HTTP request gets the JSON answer of ``gateway/_handshake.py`` and is closed;
  a client that leaves before finishing its head is closed at once. Everything
  else is pushed back into the stream and handed to trio-websocket's public
  ``wrap_server_stream``, which parses the handshake and yields the request.
* This replaces trio-websocket's ``serve_websocket`` so that the stream it
  speaks on is ours from the start: no private attribute is swapped, and the
  handler is given both the request and the stream.
* Nothing a client does escapes a connection's task: an exception there would
  stop the listener for everyone. It is logged instead.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio
from trio_websocket import WebSocketRequest, wrap_server_stream

from gateway import _handshake
from gateway._transport import CoalescingStream

log = logging.getLogger("trade_engine.gateway")

_DRAIN_LIMIT = 1 << 20
"""Bytes read and dropped after a plain-HTTP answer before the connection is closed anyway."""

Headers = list[tuple[bytes, bytes]]
Handler = Callable[[WebSocketRequest, CoalescingStream, Headers], Awaitable[None]]


class Listener:
    """Serves WebSocket handshakes on TCP, one task per connection.

    Args:
        handler: called with each handshake request, its stream and all of its
            headers (``request.headers`` misses some); it accepts or refuses the
            request, and returns when the connection is done.
        max_pending: see :class:`CoalescingStream`.
        max_message_size: trio-websocket's own message limit, in characters.
        handshake_timeout: seconds from the TCP connect to a complete request head.
        rest_port: where REST listens, named to plain HTTP requests; None if unknown.
    """

    def __init__(
        self, handler: Handler, *, max_pending: int, max_message_size: int,
        handshake_timeout: float, rest_port: int | None,
    ) -> None:
        self._handler = handler
        self._max_pending = max_pending
        self._max_message_size = max_message_size
        self._handshake_timeout = handshake_timeout
        self._rest_port = rest_port
        self._port = 0

    async def serve(
        self, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen until cancelled; ``task_status.started`` gets the bound port."""
        listeners = await trio.open_tcp_listeners(port, host=host)
        self._port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._serve_one, listeners)
            task_status.started(self._port)

    async def _serve_one(self, stream: trio.SocketStream) -> None:
        transport = CoalescingStream(stream, max_pending=self._max_pending)
        try:
            async with trio.open_nursery() as nursery:  # trio-websocket's reader task
                handshake = await self._handshake(transport, nursery)
                if handshake is not None:
                    await self._handler(handshake[0], transport, handshake[1])
                nursery.cancel_scope.cancel()
        except* (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away during the handshake
        except* Exception:  # one client must never stop the listener for everyone
            log.exception("WebSocket connection failed")
        finally:
            await transport.abort()

    async def _handshake(
        self, transport: CoalescingStream, nursery: trio.Nursery
    ) -> tuple[WebSocketRequest, Headers] | None:
        """The client's handshake request and headers; None when there is none."""
        with trio.move_on_after(self._handshake_timeout):
            head = bytearray()
            while (end := _handshake.head_end(head)) < 0 and len(head) < _handshake.MAX_HEAD:
                data = await transport.receive_some(_handshake.MAX_HEAD)
                if not data:
                    return None  # gone before the end of its request
                head += data
            if end > 0:
                answer = _handshake.refusal(
                    bytes(head[:end]), ws_port=self._port, rest_port=self._rest_port,
                    local_host=transport.socket.getsockname()[0],
                )
                if answer is not None:
                    await _answer_and_close(transport, answer)
                    return None
            transport.push_back(bytes(head))
            request = await wrap_server_stream(
                nursery, transport, max_message_size=self._max_message_size)
            return request, _handshake.request_headers(bytes(head[:end]) if end > 0 else b"")
        return None


async def _answer_and_close(transport: CoalescingStream, answer: bytes) -> None:
    """Send ``answer``, then read what the client still sends until it closes.

    Closing a socket with unread bytes would reset it (RST), and the client
    could lose the answer before reading it: a request body, say.
    """
    await transport.send_all(answer)
    await transport.send_eof()
    received = 0
    while received < _DRAIN_LIMIT:
        data = await transport.receive_some(_handshake.MAX_HEAD)
        if not data:
            return
        received += len(data)
