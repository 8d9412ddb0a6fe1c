"""The one place the gateway reaches into a library's internals still holds.

``gateway._transport.adopt`` replaces trio-websocket's private ``_stream`` with
the gateway's :class:`CoalescingStream`, which then carries every byte of the
connection: the fan-out's pre-built frames and trio-websocket's own pings,
pongs and close frames. If a new trio-websocket renames or bypasses that
attribute, these fail before any client sees a torn or misordered frame.
"""

import pytest
import trio
from trio_websocket import ConnectionClosed

from gateway._frames import text_frame
from gateway._transport import CoalescingStream


async def server_connection(gateway):
    with trio.fail_after(5):
        while not gateway._ws._connections:
            await trio.sleep(0.01)
    (connection,) = gateway._ws._connections
    return connection


async def test_adopted_stream_is_what_trio_websocket_writes_through(gateway, ws_connect):
    async with ws_connect(f"{gateway.endpoints.ws_url}/ws") as client:
        connection = await server_connection(gateway)
        assert isinstance(connection._ws._stream, CoalescingStream)
        assert connection._ws._stream is connection._transport
        # A frame written by us and a ping written by trio-websocket arrive whole, in order.
        assert connection.offer(text_frame(b'{"hello": 1}'))
        with trio.fail_after(5):
            await connection._ws.ping(b"seam")  # returns when the client's pong came back
            assert await client.get_message() == '{"hello": 1}'


async def test_aborting_the_adopted_stream_closes_tcp_without_a_close_frame(gateway, ws_connect):
    async with ws_connect(f"{gateway.endpoints.ws_url}/ws") as client:
        connection = await server_connection(gateway)
        await connection._transport.aclose()
        with trio.fail_after(5), pytest.raises(ConnectionClosed) as closed:
            await client.get_message()
        # No close frame: the client sees an abnormal closure.
        assert closed.value.reason.code == 1006
