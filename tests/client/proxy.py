"""A loopback TCP proxy between a client and the server's WebSocket port, with levers.

The tests use it to do to a live connection what a network does: cut it
(:meth:`Proxy.cut`), go silent (:meth:`Proxy.freeze`: the server's bytes stop
reaching the client), or alter one message in flight (:attr:`Proxy.alter`).
Everything else passes through untouched, so the client and the server speak
to each other exactly as without it.

To alter messages the proxy splits the server's stream into WebSocket frames
(RFC 6455, written here: server frames are never masked); the client must
then connect with ``compression=False`` so that text frames are plain.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import trio


def split_frame(buffer: bytearray) -> tuple[int, int, bytes, int] | None:
    """``(first byte, header length, payload, frame length)`` of the first whole frame."""
    if len(buffer) < 2:
        return None
    length = buffer[1] & 0x7F
    header = 2
    if length == 126:
        header = 4
        if len(buffer) < header:
            return None
        length = int.from_bytes(buffer[2:4], "big")
    elif length == 127:
        header = 10
        if len(buffer) < header:
            return None
        length = int.from_bytes(buffer[2:10], "big")
    if len(buffer) < header + length:
        return None
    return buffer[0], header, bytes(buffer[header:header + length]), header + length


def server_frame(first: int, payload: bytes) -> bytes:
    """An unmasked frame with the first byte (FIN, RSV, opcode) kept and a new payload."""
    size = len(payload)
    if size < 126:
        head = bytes([first, size])
    elif size < 1 << 16:
        head = bytes([first, 126]) + size.to_bytes(2, "big")
    else:
        head = bytes([first, 127]) + size.to_bytes(8, "big")
    return head + payload


@attrs.define
class _Pair:
    client: trio.SocketStream
    server: trio.SocketStream
    scope: trio.CancelScope
    frozen: bool = False
    handshake_done: bool = False
    buffer: bytearray = attrs.field(factory=bytearray)


class Proxy:
    """Serve with ``port = await nursery.start(proxy.serve)``; point the client at ``url``."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.alter: Callable[[str], str | None] | None = None
        """Called with each server text message; a string replaces it, None keeps it."""
        self.accepted = 0
        self._pairs: list[_Pair] = []

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def serve(self, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._handle, listeners)

    def freeze(self) -> None:
        """From now on, the server's bytes on the open connections are dropped."""
        for pair in self._pairs:
            pair.frozen = True

    async def cut(self) -> None:
        """Close every open connection, both ways (the client sees its stream end)."""
        for pair in list(self._pairs):
            pair.scope.cancel()
            await pair.client.aclose()
            await pair.server.aclose()
        self._pairs.clear()

    async def _handle(self, client: trio.SocketStream) -> None:
        self.accepted += 1
        try:
            server = await trio.open_tcp_stream("127.0.0.1", self.target_port)
        except OSError:
            await client.aclose()
            return
        with trio.CancelScope() as scope:
            pair = _Pair(client, server, scope)
            self._pairs.append(pair)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._upstream, pair, nursery.cancel_scope)
                    nursery.start_soon(self._downstream, pair, nursery.cancel_scope)
            finally:
                if pair in self._pairs:
                    self._pairs.remove(pair)
                with trio.CancelScope(shield=True):  # aclose closes, then checkpoints
                    await client.aclose()
                    await server.aclose()

    async def _upstream(self, pair: _Pair, done: trio.CancelScope) -> None:
        try:
            while data := await pair.client.receive_some(65536):
                await pair.server.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        done.cancel()

    async def _downstream(self, pair: _Pair, done: trio.CancelScope) -> None:
        try:
            while data := await pair.server.receive_some(65536):
                if pair.frozen:
                    continue
                await pair.client.send_all(self._rewrite(pair, data))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        done.cancel()

    def _rewrite(self, pair: _Pair, data: bytes) -> bytes:
        pair.buffer += data
        out = bytearray()
        if not pair.handshake_done:  # the 101 answer ends with an empty line
            end = pair.buffer.find(b"\r\n\r\n")
            if end < 0:
                return b""
            out += pair.buffer[:end + 4]
            del pair.buffer[:end + 4]
            pair.handshake_done = True
        while (frame := split_frame(pair.buffer)) is not None:
            first, _, payload, size = frame
            del pair.buffer[:size]
            if first & 0x0F == 0x1 and self.alter is not None:  # text
                assert first == 0x81, "compressed or fragmented: use compression=False"
                replaced = self.alter(payload.decode())
                if replaced is not None:
                    payload = replaced.encode()
            out += server_frame(first, payload)
        return bytes(out)
