"""Shared fixtures: a real gateway on loopback ports, tokens, and an HTTP client.

Every gateway here is started through the public API (``gateway.serve``) in the
test's own nursery, on port 0, with its data directory in ``tmp_path``; the
nursery is cancelled when the test ends, which is how the server stops.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs
import httpx
import pytest
import trio
from trio_websocket import WebSocketConnection, wrap_client_stream

from gateway import (
    Config,
    Fsync,
    Gateway,
    JournalSettings,
    WebSocketSettings,
    issue_token,
    serve,
)
from gateway._auth import load_or_create_secret

StartGateway = Callable[..., Awaitable[Gateway]]


@pytest.fixture
def start_gateway(nursery: trio.Nursery, tmp_path: Path) -> StartGateway:
    """Start a gateway; keyword arguments override Config fields (``websocket=`` too).

    The journal is on, as in production, but not fsynced (``fsync = "off"``):
    every record is still written, and the durability tests choose their own
    policy. An fsync costs milliseconds on this disk.
    """

    async def start(**overrides: Any) -> Gateway:
        config = Config(
            rest_port=0, ws_port=0, data_dir=tmp_path / "data",
            journal=JournalSettings(fsync=Fsync.OFF),
        )
        websocket = overrides.pop("websocket", None)
        if isinstance(websocket, dict):
            websocket = attrs.evolve(WebSocketSettings(), **websocket)
        if websocket is not None:
            overrides["websocket"] = websocket
        config = attrs.evolve(config, **overrides)
        gateway: Gateway = await nursery.start(serve, config)
        return gateway

    return start


@pytest.fixture
async def gateway(start_gateway: StartGateway) -> Gateway:
    return await start_gateway()


@pytest.fixture
def token(tmp_path: Path) -> Callable[[str], str]:
    """``token("alice")``: a valid token for the gateway started by these fixtures."""

    def make(user: str, ttl: float = 3600.0) -> str:
        return issue_token(load_or_create_secret(tmp_path / "data"), user, ttl=ttl)

    return make


@pytest.fixture
async def http(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.endpoints.rest_url, timeout=10) as client:
        yield client


@asynccontextmanager
async def open_ws(url: str) -> AsyncIterator[WebSocketConnection]:
    """A WebSocket client whose TCP stream is always closed on exit.

    trio-websocket's own client (0.12.2) leaves its socket open when the
    server closes first (it waits for the TCP close and never closes its end),
    which ``filterwarnings = error`` turns into a failure. Owning the stream and
    handing it to the public ``wrap_client_stream`` avoids that.
    """
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    resource = parts.path + ("?" + parts.query if parts.query else "")
    stream = await trio.open_tcp_stream(parts.hostname, parts.port)
    try:
        async with trio.open_nursery() as nursery:
            ws = await wrap_client_stream(nursery, stream, parts.hostname, resource)
            try:
                yield ws
            finally:
                with trio.move_on_after(2):
                    await ws.aclose()
                nursery.cancel_scope.cancel()
    finally:
        await stream.aclose()


@pytest.fixture
def ws_connect() -> Callable[[str], Any]:
    """``async with ws_connect(url) as ws:`` (see :func:`open_ws`)."""
    return open_ws
