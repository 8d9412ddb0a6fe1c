"""Graceful shutdown: a ``shutdown`` message, close 1001, new connections refused, no task left.

These tests run ``gateway.serve`` in a nursery of their own, so they can watch it return.
"""

from __future__ import annotations

import json

import pytest
import trio
import trio.lowlevel
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url
from wsclient import CLOSE, TIMEOUT, RawClient, close_code, open_client, rejected_handshake

from gateway import Config, serve


def all_tasks() -> set[trio.lowlevel.Task]:
    tasks: set[trio.lowlevel.Task] = set()
    pending = [trio.lowlevel.current_root_task()]
    while pending:
        task = pending.pop()
        tasks.add(task)
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)
    return tasks


@pytest.fixture
def config(tmp_path):
    return Config(rest_port=0, ws_port=0, data_dir=tmp_path / "data", shutdown_grace_period=3)


async def test_shutdown_says_goodbye_closes_with_1001_and_leaves_no_task(config):
    before = all_tasks()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            gateway = await nursery.start(serve, config)
            async with open_client(gateway, "/ws/trades") as client:
                await client.receive()
                gateway.shutdown()
                assert await client.receive() == {
                    "type": "shutdown", "reason": "server shutting down"}
                with pytest.raises(ConnectionClosed) as closed:
                    await client.ws.get_message()
                assert closed.value.reason.code == 1001
            # serve returns on its own: this block ends without cancelling anything.
    assert not nursery.cancel_scope.cancel_called
    assert all_tasks() == before


async def test_new_connections_are_refused_during_shutdown(config):
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            gateway = await nursery.start(serve, config)
            # A raw client that never answers the close keeps the shutdown in progress.
            lingering = await RawClient.connect(gateway, "/ws/trades")
            gateway.shutdown()
            # The goodbye comes once the listener refuses new connections (same step).
            goodbye = await lingering.text_messages(2)  # subscribed, then shutdown
            assert json.loads(goodbye[-1]) == {"type": "shutdown", "reason": "server shutting down"}
            status, body = await rejected_handshake(gateway, "/ws")
            assert status == 503
            assert body is not None
            assert body["error"]["code"] == "shutting_down"
            frames = await lingering.frames()
            await lingering.aclose()
            assert [opcode for opcode, _ in frames] == [CLOSE]
            assert close_code(frames) == 1001
        endpoints = gateway.endpoints
    # After serve returned, nothing listens any more.
    with trio.fail_after(TIMEOUT), pytest.raises(HandshakeError):
        async with open_websocket_url(f"{endpoints.ws_url}/ws"):
            pass  # pragma: no cover


async def test_shutdown_with_several_clients_and_subscriptions(config):
    before = all_tasks()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            gateway = await nursery.start(serve, config)
            async with open_client(gateway, "/ws/markets/BTC-USDT") as a, \
                    open_client(gateway) as b:
                await a.receive()
                assert (await a.receive())["type"] == "orderbook_snapshot"
                await b.subscribe("depth", "BTC/USDT")
                await b.receive()
                gateway.shutdown()
                for client in (a, b):
                    assert (await client.receive())["type"] == "shutdown"
                    with pytest.raises(ConnectionClosed) as closed:
                        await client.ws.get_message()
                    assert closed.value.reason.code == 1001
    assert all_tasks() == before
