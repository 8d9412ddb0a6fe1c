"""Local helpers for the abuse tests: raw HTTP upgrades and hand-made WebSocket frames.

The WebSocket helpers of ``tests/gateway/wsclient.py`` (``RawClient``, ``stats``...)
are reused (``tests/conftest.py`` puts that directory on ``sys.path``). Helpers are
handed out as fixtures, like ``ws_connect`` in ``tests/conftest.py``.
"""

from __future__ import annotations

import base64
import os
import socket
from collections.abc import Awaitable, Callable

import httpx
import pytest
import trio
from wsclient import TIMEOUT

from gateway import Gateway
from gateway._frames import FIN, frame_header, unmask

HttpResponse = tuple[int, dict[str, str], bytes]


def upgrade_request(
    host: str, port: int, path: str = "/ws", headers: dict[str, str] | None = None
) -> bytes:
    """A valid opening handshake for ``path``, plus ``headers``."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket",
        "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13",
        *(f"{name}: {value}" for name, value in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def parse_response(data: bytes) -> HttpResponse:
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split(" ")[1])
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def _complete(data: bytes) -> bool:
    """A whole response: a 101 head, or a head and ``content-length`` bytes of body."""
    head, found, body = data.partition(b"\r\n\r\n")
    if not found:
        return False
    if head.startswith(b"HTTP/1.1 101 "):
        return True
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


async def open_from(gateway: Gateway, source: str | None = None) -> trio.SocketStream:
    """A TCP connection to the WebSocket port, from ``source`` (e.g. 127.0.0.2) if given."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if source is not None:
            await sock.bind((source, 0))
        with trio.fail_after(TIMEOUT):
            await sock.connect((gateway.endpoints.host, gateway.endpoints.ws_port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


async def send_raw(
    gateway: Gateway, data: bytes, *, timeout: float = TIMEOUT, source: str | None = None
) -> bytes:
    """Send ``data`` to the WebSocket port; the server's answer.

    Reads until the server closes (a reset counts as a close) or a whole HTTP
    response has arrived: a 101 head, or a head plus its ``content-length``;
    then our socket is closed.
    """
    received = bytearray()
    stream = await open_from(gateway, source)
    try:
        with trio.fail_after(timeout):
            try:
                await stream.send_all(data)
                while True:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        break
                    received += chunk
                    if _complete(bytes(received)):
                        break
            except trio.BrokenResourceError:
                pass
    finally:
        await stream.aclose()
    return bytes(received)


@pytest.fixture
def raw_send() -> Callable[..., Awaitable[bytes]]:
    """``await raw_send(gateway, data, source=ip)``: see :func:`send_raw`."""
    return send_raw


@pytest.fixture
def upgrade_bytes() -> Callable[..., bytes]:
    """``upgrade_bytes(gateway, path, headers)``: a valid opening handshake's bytes."""

    def make(gateway: Gateway, path: str = "/ws", headers: dict[str, str] | None = None) -> bytes:
        return upgrade_request(gateway.endpoints.host, gateway.endpoints.ws_port, path, headers)

    return make


@pytest.fixture
def upgrade() -> Callable[..., Awaitable[HttpResponse]]:
    """``await upgrade(gateway, path, headers={...}, source=ip)``: the answer's status,
    headers and body (the connection is dropped at once after a 101)."""

    async def run(
        gateway: Gateway, path: str = "/ws", headers: dict[str, str] | None = None,
        source: str | None = None,
    ) -> HttpResponse:
        endpoints = gateway.endpoints
        answer = await send_raw(
            gateway, upgrade_request(endpoints.host, endpoints.ws_port, path, headers),
            source=source)
        assert answer, "the server closed without answering the upgrade request"
        return parse_response(answer)

    return run


def frame(
    opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0, mask: bool = True,
    length: int | None = None,
) -> bytes:
    """One client frame (``rsv``: RSV1-3 as 0b100..0b001); ``length`` overrides the
    announced payload length. Built with the project's frame codec."""
    key = os.urandom(4) if mask else None
    first = (FIN if fin else 0) | (rsv << 4) | opcode
    body = payload if key is None else unmask(payload, key)
    return frame_header(first, len(payload) if length is None else length, key) + body


@pytest.fixture
def ws_frame() -> Callable[..., bytes]:
    """``ws_frame(opcode, payload, fin=, rsv=, mask=, length=)``: a client frame's bytes."""
    return frame


async def metric_value(gateway: Gateway, sample: str) -> float:
    """The value of one sample of ``/metrics``, e.g. ``name_total{reason="x"}``; 0 if absent."""
    async with httpx.AsyncClient(base_url=gateway.endpoints.rest_url, timeout=TIMEOUT) as http:
        response = await http.get("/metrics")
    assert response.status_code == 200
    for line in response.text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == sample:
            return float(value)
    return 0.0


@pytest.fixture
def metric() -> Callable[[Gateway, str], Awaitable[float]]:
    """``await metric(gateway, 'trade_engine_rest_rate_limited_total')``."""
    return metric_value
