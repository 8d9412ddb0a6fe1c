"""Shared fixtures: a real gateway on loopback ports, tokens, and an HTTP client.

Every gateway here is started through the public API (``gateway.serve``) in the
test's own nursery, on port 0, with its data directory in ``tmp_path``; the
nursery is cancelled when the test ends, which is how the server stops.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
from trio.testing import MockClock

sys.path.insert(0, str(Path(__file__).resolve().parent / "gateway"))  # for ``import wsclient``

from wsclient import open_ws

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
def idle_clock() -> MockClock:
    """Virtual time that passes only while every task has waited 20 ms of real time.

    For timeouts over real sockets (request it in the test itself, as pytest-trio
    wants): a heartbeat or a rate limit then sees exactly the intervals the test
    sleeps, however slow the machine, and a 0.2 s timeout costs 20 ms. Unlike
    ``autojump_clock`` (threshold 0), it never jumps while a byte is still on its
    way through the kernel. Start the gateway without its journal there
    (``journal=JournalSettings(enabled=False)``): a journal write waits on a thread,
    which would count as idle if it took longer than the threshold.
    """
    return MockClock(autojump_threshold=0.02)


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


@pytest.fixture
def ws_connect() -> Callable[[str], Any]:
    """``async with ws_connect(url) as ws:`` (see ``wsclient.open_ws``)."""
    return open_ws
