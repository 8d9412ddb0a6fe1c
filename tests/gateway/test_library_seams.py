"""The one place the gateway reaches into a library's internals still holds.

``gateway._ws.abort_transport`` closes trio-websocket's private ``_stream``; if
a new trio-websocket renames it, this fails before any client sees a torn frame
followed by a close frame.
"""

import pytest
import trio
from trio_websocket import ConnectionClosed

from gateway._ws import abort_transport


async def test_abort_transport_closes_the_tcp_connection_without_a_close_frame(
    gateway, ws_connect
):
    async with ws_connect(f"{gateway.endpoints.ws_url}/ws") as client:
        received = []

        async def server_side() -> None:
            # The server's own connection object is what abort_transport gets.
            (connection,) = gateway._ws._connections
            await abort_transport(connection._ws)
            received.append("aborted")

        with trio.fail_after(5):
            while not gateway._ws._connections:
                await trio.sleep(0.01)
            await server_side()
            with pytest.raises(ConnectionClosed) as closed:
                await client.get_message()
        # No close frame: the client sees an abnormal closure.
        assert closed.value.reason.code == 1006
    assert received == ["aborted"]
