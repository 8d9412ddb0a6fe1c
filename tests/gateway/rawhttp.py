"""A raw HTTP/1.1 client on one TCP connection, for tests that decide every write.

httpx (like any client library) chooses how a request is split into writes and
when a connection is reused; the keep-alive and CORS tests need to send the
headers and the body separately, wait in between, and see the exact headers.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import trio


@attrs.frozen
class RawResponse:
    status: int
    headers: dict[str, str]  # lowercase names; a repeated header keeps its last value
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class RawHttp:
    """One client connection; :meth:`response` reads the next answer off it."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._buffer = bytearray()

    @classmethod
    async def open(cls, port: int, host: str = "127.0.0.1") -> RawHttp:
        return cls(await trio.open_tcp_stream(host, port))

    async def aclose(self) -> None:
        await self.stream.aclose()

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _fill(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            raise EOFError("the server closed the connection")
        self._buffer += data

    async def response_to_head(self) -> RawResponse:
        """The next final response to a HEAD request: its headers, no body."""
        return await self.response(body=False)

    async def response(self, *, body: bool = True) -> RawResponse:
        """The next final (non-1xx) response; every answer here has a Content-Length."""
        while True:
            while b"\r\n\r\n" not in self._buffer:
                await self._fill()
            head, _, rest = bytes(self._buffer).partition(b"\r\n\r\n")
            self._buffer = bytearray(rest)
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if status >= 200:
                break
        length = int(headers.get("content-length", "0")) if body else 0
        while len(self._buffer) < length:
            await self._fill()
        content = bytes(self._buffer[:length])
        del self._buffer[:length]
        return RawResponse(status, headers, content)

    async def closed_by_server(self) -> bool:
        """True once the server closes its end without sending anything more."""
        try:
            data = await self.stream.receive_some(65536)
        except trio.BrokenResourceError:  # a reset also ends the connection
            return True
        assert not data, f"expected the connection to close, got {data!r}"
        return True


def request(method: str, path: str, *headers: str, body: bytes | None = None,
            length: int | None = None) -> bytes:
    """Request head bytes (the body is not included: send it yourself, when you like).

    ``length`` sets the Content-Length (default: ``len(body)`` when a body is given).
    """
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *headers]
    if length is None and body is not None:
        length = len(body)
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
