"""One client WebSocket: wsproto (the protocol, sans-I/O) over a trio stream this module owns.

Rules of this module:

* The TCP (or TLS) stream is opened and always closed here; trio-websocket's
  0.12 client leaves its socket open when the server closes first or refuses
  the handshake, so it is not used.
* Every failure comes out as one library exception, never an exception group:
  :class:`ConnectFailed` / :class:`HandshakeRejected` while opening,
  :class:`ConnectionLost` (with the server's close code and reason) after.
* One reader at a time (:meth:`WebSocket.receive`); sends may come from any
  task and are serialised by a lock. A server ping is answered from the
  reader. :meth:`WebSocket.keep_alive` is the heartbeat: any byte received
  counts as life (``_policy.Liveness`` decides when to ping and when to give up).
* Bounded: a message is assembled up to ``max_message_size`` bytes; past it
  the client closes with 1009, and nothing else is buffered here (wsproto
  holds at most the bytes of one ``receive_some``).
* permessage-deflate is offered unless ``compression=False``: the server
  then compresses its larger messages (a depth snapshot by more than half).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from urllib.parse import urlsplit

import msgspec
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Event,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from gateway.client._errors import ConnectFailed, ConnectionLost, HandshakeRejected
from gateway.client._policy import Beat, Liveness

CLOSE_TIMEOUT = 2.0  # seconds for the close handshake
MAX_MESSAGE_SIZE = 16 * 1024 * 1024
_MAX_REJECTION_BODY = 65536
_RECEIVE_SIZE = 65536


def _root_cause(exc: BaseException) -> BaseException:
    """The first OSError with an errno under ``exc`` (trio groups one per address tried)."""
    pending = [exc]
    while pending:
        seen = pending.pop(0)
        if isinstance(seen, OSError) and seen.errno is not None:
            return seen
        if isinstance(seen, BaseExceptionGroup):
            pending.extend(seen.exceptions)
        inner = seen.__cause__ or seen.__context__
        if inner is not None:
            pending.append(inner)
    return exc


def connect_error(shown_url: str, exc: BaseException | None, timeout: float) -> ConnectFailed:
    """A :class:`ConnectFailed` whose message says what to check; ``cause`` is the OSError
    (None: the timeout)."""
    cause = None if exc is None else _root_cause(exc)
    if cause is None:
        text = (f"no answer within {timeout:g} s; check the host and port (the serve banner "
                "prints the WebSocket URL)")
    elif isinstance(cause, socket.gaierror):
        text = (f"unknown host {urlsplit(shown_url).hostname!r}; check the URL (the serve "
                "banner prints the WebSocket URL)")
    elif isinstance(cause, ConnectionRefusedError):
        text = ("connection refused; is the server running? Start it with: trade-engine serve "
                "(or use the WebSocket URL its banner prints)")
    else:
        text = cause.strerror if isinstance(cause, OSError) and cause.strerror else str(cause)
        text = text or type(cause).__name__
    return ConnectFailed(f"cannot connect to {shown_url}: {text}", cause=cause)


class WebSocket:
    """An open client WebSocket. Create it with :func:`open_websocket`."""

    def __init__(self, stream: trio.abc.Stream, conn: WSConnection, shown_url: str,
                 max_message_size: int) -> None:
        self.shown_url = shown_url
        self._stream = stream
        self._conn = conn
        self._max = max_message_size
        self._send_lock = trio.Lock()
        self._parts: list[str] = []
        self._size = 0
        self._events: list[Event] = []
        self.close_code: int | None = None
        self.close_reason = ""
        self._liveness: Liveness | None = None
        self._dead: str | None = None

    async def keep_alive(self, interval: float, timeout: float) -> None:
        """Ping after ``interval`` s of silence; after ``timeout`` s more, abort the link.

        Runs until cancelled, or until it declares the connection dead: then the
        task inside :meth:`receive` raises :class:`ConnectionLost` saying so.
        """
        liveness = self._liveness = Liveness(interval, timeout, trio.current_time())
        while True:
            beat, when = liveness.check(trio.current_time())
            if beat is Beat.PING:
                with contextlib.suppress(ConnectionLost):  # the reader sees it too
                    await self.ping()
            elif beat is Beat.DEAD:
                self._dead = (f"the connection was lost: no answer from the server for "
                              f"{interval + timeout:g} s (heartbeat)")
                await self._stream.aclose()
                return
            await trio.sleep_until(when)

    async def receive(self) -> str:
        """The next text message.

        Raises:
            ConnectionLost: the server closed (``code``, ``reason``), or the link broke.
        """
        while True:
            while self._events:
                event = self._events.pop(0)
                text = await self._handle(event)
                if text is not None:
                    return text
            await self._read()

    async def _read(self) -> None:
        try:
            data = await self._stream.receive_some(_RECEIVE_SIZE)
        except (trio.BrokenResourceError, OSError) as exc:
            await self._lost(f"the connection broke: {_root_cause(exc)}")
        except trio.ClosedResourceError:
            await self._lost("the connection was closed")
        if self._liveness is not None:
            self._liveness.heard(trio.current_time())
        try:
            self._conn.receive_data(bytes(data) or None)
            self._events.extend(self._conn.events())
        except RemoteProtocolError as exc:
            await self._fail(1002, f"protocol error from the server: {exc}")

    async def _handle(self, event: Event) -> str | None:
        if isinstance(event, TextMessage):
            self._size += len(event.data)
            if self._size > self._max:
                await self._fail(1009, f"a message over {self._max} bytes from the server")
            self._parts.append(event.data)
            if not event.message_finished:
                return None
            text = "".join(self._parts)
            self._parts.clear()
            self._size = 0
            return text
        if isinstance(event, Ping):
            await self._send(event.response())
        elif isinstance(event, CloseConnection):
            self.close_code, self.close_reason = event.code, event.reason or ""
            if self._conn.state is ConnectionState.REMOTE_CLOSING:
                with contextlib.suppress(ConnectionLost):
                    await self._send(event.response())
            await self._stream.aclose()
            if event.code == 1006:  # wsproto's name for "no close frame"
                raise ConnectionLost("the connection was lost (no close frame from the server)")
            raise ConnectionLost(f"closed by the server: {event.code} {self.close_reason}".strip(),
                                 code=event.code, reason=self.close_reason)
        return None  # a pong counted as life in _read; binary messages: none are sent

    async def send(self, text: str | bytes) -> None:
        """Send one text message.

        Raises:
            ConnectionLost: the connection is closed or broke.
        """
        await self._send(TextMessage(data=text.decode() if isinstance(text, bytes) else text))

    async def ping(self, payload: bytes = b"hb") -> None:
        await self._send(Ping(payload=payload))

    async def _send(self, event: Event, *, shield: bool = True) -> None:
        """Frame ``event`` and send it, both under the lock: frames leave in the order
        wsproto made them (its compressor may carry context from one to the next).

        Shielded: a frame made is a frame sent (or the connection is broken), so a
        caller's cancellation never leaves half a frame or a lost request behind. A
        peer that stops reading is the heartbeat's to end (it closes the stream,
        which ends the send). Close frames are not shielded: their senders put a
        deadline on them and close the stream anyway.
        """
        with trio.CancelScope(shield=shield):
            async with self._send_lock:
                try:
                    data = self._conn.send(event)
                except LocalProtocolError:
                    raise ConnectionLost("the connection is closed") from None
                try:
                    await self._stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    raise ConnectionLost(f"the connection broke while sending: "
                                         f"{_root_cause(exc)}") from None

    async def _lost(self, message: str) -> None:
        await self._stream.aclose()
        raise ConnectionLost(self._dead or message)

    async def _fail(self, code: int, message: str) -> None:
        """Close with ``code`` (our side found the fault) and raise."""
        self.close_code, self.close_reason = code, message
        with trio.move_on_after(CLOSE_TIMEOUT):
            with contextlib.suppress(ConnectionLost):
                await self._send(CloseConnection(code, message[:120]), shield=False)
        await self._stream.aclose()
        raise ConnectionLost(message, code=code, reason=message)

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Say goodbye (briefly) and close the stream. Never raises.

        Call it when no task is inside :meth:`receive`: it reads the server's
        close frame itself.
        """
        with trio.move_on_after(CLOSE_TIMEOUT):
            try:
                if self._conn.state is ConnectionState.OPEN:
                    await self._send(CloseConnection(code, reason), shield=False)
                while self._conn.state is not ConnectionState.CLOSED:
                    await self.receive()
            except (ConnectionLost, LocalProtocolError, RemoteProtocolError):
                pass
        await self._stream.aclose()

    async def abort(self) -> None:
        """Close the stream without a close handshake (a dead connection)."""
        await self._stream.aclose()


def split_url(url: str) -> tuple[str, str, int, str, bool]:
    """``(host_header, hostname, port, resource, secure)`` of a ws:// or wss:// URL.

    Raises:
        ValueError: not a WebSocket URL; the message says what is expected.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"{url.split('?', 1)[0]} is not a WebSocket URL: use ws://HOST:PORT "
                         "(or wss://), the WebSocket address the serve banner prints")
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    host_header = parts.netloc.rsplit("@", 1)[-1]
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return host_header, parts.hostname, port, resource, secure


async def open_websocket(
    url: str, *, shown_url: str | None = None, connect_timeout: float = 10.0,
    compression: bool = True, ssl_context: ssl.SSLContext | None = None,
    max_message_size: int = MAX_MESSAGE_SIZE,
) -> WebSocket:
    """Open ``url`` (TCP or TLS, then the WebSocket handshake) within ``connect_timeout``.

    Args:
        shown_url: the URL to put in error messages (with the token masked).

    Raises:
        ConnectFailed: no connection (the message names the likely fix).
        HandshakeRejected: the server answered with an HTTP error instead.
    """
    shown = shown_url or url
    host_header, hostname, port, resource, secure = split_url(url)
    stream: trio.abc.Stream | None = None
    try:
        with trio.fail_after(connect_timeout):
            try:
                if secure:
                    stream = await trio.open_ssl_over_tcp_stream(
                        hostname, port, ssl_context=ssl_context, https_compatible=True)
                else:
                    stream = await trio.open_tcp_stream(hostname, port)
            except OSError as exc:
                raise connect_error(shown, exc, connect_timeout) from None
            conn = WSConnection(ConnectionType.CLIENT)
            extensions = [PerMessageDeflate()] if compression else []
            await stream.send_all(conn.send(Request(host=host_header, target=resource,
                                                    extensions=extensions)))
            early = await _handshake(stream, conn, shown)
    except trio.TooSlowError:
        if stream is not None:
            await stream.aclose()
        raise connect_error(shown, None, connect_timeout) from None
    except BaseException:
        if stream is not None:
            await trio.aclose_forcefully(stream)
        raise
    ws = WebSocket(stream, conn, shown, max_message_size)
    ws._events.extend(early)
    return ws


async def _handshake(stream: trio.abc.Stream, conn: WSConnection, shown: str) -> list[Event]:
    """Read the server's answer to the opening handshake: on 101, the events that came
    in the same read after it (a dedicated endpoint's first message may); else raise."""
    status: int | None = None
    retry_after: float | None = None
    body = b""
    done = False
    while not done:
        try:
            data = await stream.receive_some(_RECEIVE_SIZE)
        except (trio.BrokenResourceError, OSError) as exc:
            raise connect_error(shown, exc, 0) from None
        if not data:
            if status is None:
                raise ConnectFailed(
                    f"cannot connect to {shown}: the server closed the connection during the "
                    "WebSocket handshake (is this the WebSocket port?)")
            break  # the refusal's body ended with the connection
        try:
            conn.receive_data(bytes(data))
            events = list(conn.events())
        except RemoteProtocolError as exc:
            raise ConnectFailed(f"cannot connect to {shown}: the answer is not a WebSocket "
                                f"handshake ({exc}); is this the WebSocket port?") from None
        for index, event in enumerate(events):
            if isinstance(event, AcceptConnection):
                return events[index + 1:]
            if isinstance(event, RejectConnection):
                status = event.status_code
                retry_after = _retry_after(event.headers)
                done = not event.has_body
            elif isinstance(event, RejectData):
                body = (body + event.data)[:_MAX_REJECTION_BODY]
                done = done or event.body_finished
    assert status is not None
    raise HandshakeRejected(status, body, retry_after,
                            f"{shown}: {describe_rejection(status, body)}")


def _retry_after(headers: list[tuple[bytes, bytes]]) -> float | None:
    for name, value in headers:
        if name.lower() == b"retry-after":
            try:
                return float(value)
            except ValueError:
                return None
    return None


def describe_rejection(status: int, body: bytes | None) -> str:
    """One line for an HTTP answer instead of a WebSocket handshake (the server's words)."""
    message = ""
    if body:
        try:
            error = msgspec.json.decode(body)["error"]
            message = _one_line(f"{error['code']}: {error['message']}")
        except (msgspec.DecodeError, KeyError, TypeError):
            text = body.decode("utf-8", "replace").strip()
            if text and "\n" not in text and "<" not in text and len(text) <= 200:
                message = text
    line = f"the server refused the WebSocket handshake with HTTP {status}"
    if message:
        line += f": {message}"
    if status == 404 and not message.startswith("unknown_symbol"):
        line += (" (endpoints: /ws, /ws/orders, /ws/trades, /ws/markets/SYMBOL, on the "
                 "WebSocket port the serve banner prints, 8081 by default)")
    return line


def _one_line(text: str) -> str:
    return " ".join(text.split())
