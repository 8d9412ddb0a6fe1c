"""Faults of a scale-out deployment, with real processes and a real ``redis-server``.

* The engine is SIGKILLed under a steady order flow through two gateways and
  restarted: the gateways keep their WebSocket clients; meanwhile order entry
  answers 503 ``engine_unavailable`` at once (or, for a request caught in
  flight, after ``broker.reply_timeout``); afterwards every acknowledged order
  exists, and every client's streams go on with no duplicate and no gap.
* Redis is SIGKILLed and a fresh, empty one started on the same port: every
  ``/healthz`` says ``degraded`` meanwhile, everything reconnects with backoff,
  the engine rebuilds Redis from its journal (a gateway started afterwards
  bootstraps and agrees), nothing acknowledged is lost, no client sees a gap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
from roles import (
    Deployment,
    Flow,
    Server,
    check_contiguous,
    deployment,
    health,
    wait_for,
    ws_client,
)

from bench.redis_server import RedisServer

TEST_TIMEOUT = 120


async def watch(server: Server, token: str, out: list[dict[str, Any]], ready: trio.Event
                ) -> None:
    """One client on trades, depth and the user's orders, recording until cancelled.

    A close by the server fails the test (the client must stay connected).
    """
    async with ws_client(server, token) as client:
        for stream, symbol in (("trades", "BTC/USDT"), ("depth", "BTC/USDT"),
                               ("orders", None)):
            out.append(await client.subscribe(stream, symbol))
        ready.set()
        while True:
            out.append(await client.receive(timeout=60))


async def start_three(deploy: Deployment) -> tuple[Server, Server, Server]:
    engine = await deploy.start("engine")
    started: dict[str, Server] = {}
    async with trio.open_nursery() as nursery:
        async def start(name: str) -> None:
            started[name] = await deploy.start("gateway", name)
        nursery.start_soon(start, "gateway-a")
        nursery.start_soon(start, "gateway-b")
    return engine, started["gateway-a"], started["gateway-b"]


async def check_acked(flow: Flow, server: Server, deploy: Deployment) -> None:
    """Every acknowledged order is there, as acknowledged (id, user, side, price, quantity)."""
    assert flow.acked
    async with server.http() as http:
        for order_id, order in flow.acked.items():
            token = deploy.token(order["user_id"])
            response = await http.get(f"/api/v1/orders/{order_id}",
                                      headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 200, (order_id, response.text)
            found = response.json()
            for key in ("client_order_id", "side", "price", "quantity", "symbol"):
                assert found[key] == order[key], (key, found, order)


async def test_engine_sigkill_and_restart(tmp_path: Path, redis_server: RedisServer) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with deployment(tmp_path, redis_server.url) as deploy:
            tokens = {user: deploy.token(user) for user in ("alice", "bob")}
            engine, a, b = await start_three(deploy)
            seen: dict[str, list[dict[str, Any]]] = {"a": [], "b": []}
            flow = Flow([a, b], tokens)
            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                for name, server in (("a", a), ("b", b)):
                    ready = trio.Event()
                    nursery.start_soon(watch, server, tokens["alice"], seen[name], ready)
                    await ready.wait()
                nursery.start_soon(flow.run, stop)
                await wait_for(lambda: len(flow.acked) >= 20, what="20 acknowledged orders")

                await deploy.kill(engine)
                killed = trio.current_time()
                await wait_for(lambda: _degraded(a), what="gateway a saying degraded")
                assert "engine" in (await health(a))["error"]
                # Order entry is refused at once now, not after a timeout.
                async with a.http() as http:
                    started = trio.current_time()
                    response = await http.post(
                        "/api/v1/orders", json={"symbol": "BTC/USDT", "side": "buy",
                                                "price": "1.00", "quantity": "0.001"},
                        headers={"Authorization": f"Bearer {tokens['alice']}"})
                    assert trio.current_time() - started < 1.0
                assert response.status_code == 503
                assert response.json()["error"]["code"] == "engine_unavailable"
                acked_before = len(flow.acked)

                engine = await deploy.start("engine")
                await wait_for(lambda: _ok(a), what="gateway a saying ok again")
                await wait_for(lambda: _ok(b), what="gateway b saying ok again")
                await wait_for(lambda: len(flow.acked) >= acked_before + 20,
                               what="20 more acknowledged orders after the restart")
                stop.set()
                await trio.sleep(1.0)  # the last replies' stream messages arrive
                nursery.cancel_scope.cancel()

            codes = {code for when, code in flow.refused if when >= killed}
            assert codes <= {"engine_unavailable"}, codes
            assert "engine_unavailable" in codes
            await check_acked(flow, a, deploy)
            await check_acked(flow, b, deploy)
            last_a = check_contiguous(seen["a"])
            last_b = check_contiguous(seen["b"])
            assert last_a == last_b
            assert seen["a"] == seen["b"]  # the same messages on both gateways
            # The restarted engine kept the epoch: a gateway bootstrapped from it now
            # numbers in the epoch the first clients subscribed in.
            c = await deploy.start("gateway", "gateway-c")
            async with ws_client(c) as client:
                reply = await client.subscribe("trades", "BTC/USDT")
            assert reply["epoch"] == seen["a"][0]["epoch"]
            assert reply["seq"] == last_a[("trades", "BTC/USDT")]


async def _degraded(server: Server) -> bool:
    return (await health(server))["status"] == "degraded"


async def _ok(server: Server) -> bool:
    return (await health(server))["status"] == "ok"


async def test_redis_restart(tmp_path: Path, redis_server: RedisServer) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with deployment(tmp_path, redis_server.url) as deploy:
            tokens = {user: deploy.token(user) for user in ("alice", "bob")}
            engine, a, b = await start_three(deploy)
            seen: dict[str, list[dict[str, Any]]] = {"a": [], "b": []}
            flow = Flow([a, b], tokens)
            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                for name, server in (("a", a), ("b", b)):
                    ready = trio.Event()
                    nursery.start_soon(watch, server, tokens["alice"], seen[name], ready)
                    await ready.wait()
                nursery.start_soon(flow.run, stop)
                await wait_for(lambda: len(flow.acked) >= 20, what="20 acknowledged orders")

                await trio.to_thread.run_sync(redis_server.kill)
                for server in (engine, a, b):
                    await wait_for(lambda s=server: _degraded(s),
                                   what=f"{server.role} saying degraded")
                assert "Redis" in (await health(engine))["error"]
                assert (await health(engine))["order_entry"] is True  # its own REST still works
                assert "Redis" in (await health(a))["error"]
                acked_before = len(flow.acked)

                await trio.to_thread.run_sync(redis_server.start)  # empty: no persistence
                for server in (engine, a, b):
                    await wait_for(lambda s=server: _ok(s), what=f"{server.role} ok again")
                await wait_for(lambda: len(flow.acked) >= acked_before + 20,
                               what="20 more acknowledged orders after the restart")
                stop.set()
                await trio.sleep(1.0)
                nursery.cancel_scope.cancel()

            await check_acked(flow, a, deploy)
            assert check_contiguous(seen["a"]) == check_contiguous(seen["b"])
            assert seen["a"] == seen["b"]
            # Redis was rebuilt from the journal: a gateway started now agrees with the others.
            c = await deploy.start("gateway", "gateway-c")
            for path in ("/api/v1/markets/BTC-USDT/orderbook", "/healthz"):
                answers = []
                for server in (a, c):
                    async with server.http() as http:
                        answers.append((await http.get(path)).json())
                assert answers[0] == answers[1], path
            await check_acked(flow, c, deploy)
