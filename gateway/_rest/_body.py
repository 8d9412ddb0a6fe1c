"""A request body that nobody reads never wedges a kept-alive connection.

Why this module exists (issue 12): hypercorn reuses a kept-alive HTTP/1.1
connection only when both the request and the response are complete. When
the application answers before the request body has arrived (a 401 before
the body is read, a 413, a 429, a 400, a 404 or 405 from routing), hypercorn
means to close the connection instead, but it does so inside the task that
sent the last response message, and quart-trio cancels that task as soon as
the response is out (its body reader gets ``http.disconnect`` and cancels its
nursery). The close is cancelled half-way: the connection is neither closed
nor reused, and the client's next request on it is never answered.

Rules of this module. When the answer starts while the request body is still
on its way, one of two things happens, chosen by the body's declared size:

* **Drain** (a ``Content-Length`` within ``max_request_body``, the usual case:
  httpx sends headers and body in two writes). The answer goes out at once and
  complete (its own ``Content-Length`` tells the client it is whole); then the
  rest of the request body is read and dropped, at most ``max_request_body``
  bytes for at most :data:`DRAIN_TIMEOUT` seconds, and only then is the
  response ended, so hypercorn finds both sides done and keeps the connection.
  Draining costs at most one body the size we accept anyway, and spares the
  client a new TCP (and TLS) handshake after every refused request, which a
  rate-limited client would otherwise pay exactly when it is told to slow down.
* **Close** (a body over ``max_request_body``, or of unknown length: chunked).
  Reading it is not worth it, so the answer says ``Connection: close``, what
  still arrives is dropped for at most :data:`LINGER` seconds (closing a socket
  with unread input sends a TCP reset, and a client still sending would lose
  the answer it has not read yet), then the connection is closed.

When the application may cancel the task that sends its answer (quart-trio
does), the last response message is sent in a shielded cancel scope, so
hypercorn's reuse-or-close runs to its end (``shield=True``): without it, the
connection's idle timer is not restarted either, and an idle kept-alive
connection is never closed. The plain ASGI API cancels nothing and needs no
shield (a cancel scope is a few percent of its request).
After a timed-out drain, the end is always shielded, and the rest of the
body keeps being dropped meanwhile, so hypercorn's bounded queue towards the
application cannot block it.

Whoever reads the body (the framework's reader task, a handler, the drain)
reads it through :meth:`BodyGuard.receive`, which keeps count: two readers at
once never both wait on hypercorn, because the drain waits for the other reader
instead of competing with it.
"""

from __future__ import annotations

from typing import Any

import trio

from gateway._rest._asgi import Headers, Message, Receive, Send

DRAIN_TIMEOUT = 10.0
"""Seconds a client has, after an early answer, to send the rest of a body it declared."""
LINGER = 2.0
"""Seconds an unwanted body is read and dropped before the connection closes."""
_END: dict[str, Any] = {"type": "http.response.body", "body": b"", "more_body": False}
_CLOSE = (b"connection", b"close")


class BodyGuard:
    """One request's body on its way in, and its answer's last message on the way out.

    Args:
        receive: hypercorn's ASGI ``receive``.
        send: hypercorn's ASGI ``send``.
        declared: the body's ``Content-Length``; None when chunked, 0 without a body.
        max_body: ``max_request_body``: a larger body is not drained.
        headers: added to the response's headers (CORS).
        shield: send the last message shielded from cancellation.
    """

    __slots__ = (
        "_closing", "_headers", "_max_body", "_progress", "_readers", "_receive", "_send",
        "_shield", "complete", "declared", "gone", "received",
    )

    def __init__(
        self, receive: Receive, send: Send, *, declared: int | None, max_body: int,
        headers: Headers, shield: bool = True,
    ) -> None:
        self._receive = receive
        self._shield = shield
        self._send = send
        self._headers = headers
        self._max_body = max_body
        self._closing = False
        self._readers = 0
        self._progress: trio.Event | None = None
        self.declared = declared
        self.received = 0
        self.complete = declared == 0
        self.gone = False

    async def receive(self) -> Message:
        """hypercorn's ``receive``, counted."""
        self._readers += 1
        try:
            message = await self._receive()
            kind = message["type"]
            if kind == "http.request":
                self.received += len(message.get("body", b""))
                if not message.get("more_body", False):
                    self.complete = True
            elif kind == "http.disconnect":
                self.gone = True
            return message
        finally:
            self._readers -= 1
            if self._progress is not None:
                self._progress.set()

    async def read(self) -> bytes | None:
        """The whole body, or None once it grows past ``max_request_body``."""
        parts = []
        while not (self.complete or self.gone):
            message = await self.receive()
            if self.received > self._max_body:
                return None
            parts.append(message.get("body", b""))
        return b"".join(parts)

    async def send(self, message: Message) -> None:
        """hypercorn's ``send``, with the rules of this module applied."""
        kind = message["type"]
        if kind == "http.response.start":
            headers = [*message.get("headers", ()), *self._headers]
            if not self.complete and (self.declared is None or self.declared > self._max_body):
                self._closing = True
                headers.append(_CLOSE)
            await self._send({**message, "headers": headers})
        elif kind == "http.response.body" and not message.get("more_body", False):
            if not (self.complete or self.gone):
                await self._finish(message.get("body", b""))
            elif self._shield:
                with trio.CancelScope(shield=True):
                    await self._send(message)
            else:
                await self._send(message)
        else:
            await self._send(message)

    async def _finish(self, body: bytes) -> None:
        """End an answer given before the body arrived: drain, or linger and close."""
        if body:
            await self._send({"type": "http.response.body", "body": body, "more_body": True})
        with trio.move_on_after(LINGER if self._closing else DRAIN_TIMEOUT):
            await self._discard()
        if self.complete or self.gone:
            with trio.CancelScope(shield=True):
                await self._send(_END)
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._discard)
            with trio.CancelScope(shield=True):
                await self._send(_END)  # their side is not done: hypercorn closes
            nursery.cancel_scope.cancel()

    async def _discard(self) -> None:
        """Read and drop the rest of the body; the caller bounds the time."""
        while not (self.complete or self.gone):
            if self._readers:  # another task waits on hypercorn: wait for what it gets
                self._progress = progress = trio.Event()
                await progress.wait()
            else:
                await self.receive()
