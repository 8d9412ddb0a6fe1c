"""The client's WebSocket (``gateway.client._ws``) against a scripted wsproto server.

Each test's server is a few lines of wsproto (an independent implementation of
RFC 6455) on a loopback socket, so it can do what the real gateway does only
by chance or never: put its first message in the same TCP segment as the 101
answer, refuse with a body and ``Retry-After``, ping, send an oversized
message, close with a code.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from gateway.client import ConnectionLost, HandshakeRejected
from gateway.client._ws import open_websocket

Script = Callable[[trio.SocketStream, WSConnection], Awaitable[None]]


async def serve_once(nursery: trio.Nursery, script: Script) -> str:
    """A server that runs ``script`` on its first connection, after reading the request."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def run() -> None:
        stream = await listeners[0].accept()
        conn = WSConnection(ConnectionType.SERVER)
        try:
            while True:
                conn.receive_data(await stream.receive_some(65536))
                if any(isinstance(event, Request) for event in conn.events()):
                    break
            await script(stream, conn)
        finally:
            with trio.CancelScope(shield=True):  # aclose closes, then checkpoints
                await stream.aclose()
                await listeners[0].aclose()

    nursery.start_soon(run)
    return f"ws://127.0.0.1:{port}/ws"


async def test_a_message_in_the_same_segment_as_the_101_is_not_lost(nursery):
    async def script(stream, conn):
        await stream.send_all(conn.send(AcceptConnection())
                              + conn.send(TextMessage(data='{"type":"first"}')))
        await trio.sleep_forever()

    url = await serve_once(nursery, script)
    ws = await open_websocket(url)
    try:
        with trio.fail_after(5):
            assert await ws.receive() == '{"type":"first"}'
    finally:
        await ws.abort()


async def test_a_refusal_carries_status_body_and_retry_after(nursery):
    body = b'{"error": {"code": "too_many_connections", "message": "at most 2 per IP"}}'

    async def script(stream, conn):
        await stream.send_all(conn.send(RejectConnection(
            status_code=429, has_body=True,
            headers=[(b"retry-after", b"3"), (b"content-length", str(len(body)).encode())]))
            + conn.send(RejectData(data=body)))

    url = await serve_once(nursery, script)
    with trio.fail_after(5), pytest.raises(HandshakeRejected) as refused:
        await open_websocket(url + "?token=secret", shown_url=url + "?token=***")
    assert (refused.value.status, refused.value.retry_after, refused.value.body) == (429, 3.0,
                                                                                     body)
    assert str(refused.value) == (f"{url}?token=***: the server refused the WebSocket "
                                  "handshake with HTTP 429: too_many_connections: at most 2 "
                                  "per IP")


async def test_pings_are_answered_and_a_close_reports_its_code(nursery):
    answered: list[bytes] = []

    async def script(stream, conn):
        await stream.send_all(conn.send(AcceptConnection()) + conn.send(Ping(payload=b"hi")))
        while not answered:
            conn.receive_data(await stream.receive_some(65536))
            answered.extend(e.payload for e in conn.events() if isinstance(e, Pong))
        await stream.send_all(conn.send(CloseConnection(code=4008, reason="slow consumer")))
        await stream.receive_some(65536)  # the client's answer to the close

    url = await serve_once(nursery, script)
    with trio.fail_after(5):
        ws = await open_websocket(url)
        with pytest.raises(ConnectionLost) as lost:
            await ws.receive()
    assert answered == [b"hi"]
    assert (lost.value.code, lost.value.reason) == (4008, "slow consumer")


async def test_a_message_over_the_limit_closes_with_1009(nursery):
    seen: list[int] = []

    async def script(stream, conn):
        await stream.send_all(conn.send(AcceptConnection())
                              + conn.send(TextMessage(data="x" * 5000)))
        while not seen:
            data = await stream.receive_some(65536)
            if not data:
                return
            conn.receive_data(data)
            seen.extend(e.code for e in conn.events() if isinstance(e, CloseConnection))

    url = await serve_once(nursery, script)
    with trio.fail_after(5):
        ws = await open_websocket(url, max_message_size=1000)
        with pytest.raises(ConnectionLost, match="a message over 1000 bytes") as lost:
            await ws.receive()
    assert lost.value.code == 1009
    assert seen == [1009]
