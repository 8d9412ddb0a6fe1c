"""1 engine + 2 gateways: every client sees the same messages, seqs and checksums, everywhere.

Real processes (``trade-engine serve --role engine|gateway`` and an all-in-one
``trade-engine serve``), a real ``redis-server``. One script of orders (places
that rest and cross, an amend, cancels, a market order) is sent one command
at a time, alternately through gateway A's REST and gateway B's WebSocket
order entry; the same script goes to the all-in-one server the same way.
Clients subscribed on both gateways (trades, depth, top of book, alice's
orders) must receive byte-identical streams; the all-in-one server's streams
must be the same apart from the wall-clock timestamps the engine stamped and
the epoch (another data directory).
REST reads on each gateway come from its replica and equal the engine's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import trio
from roles import Deployment, Server, deployment, ws_client

from bench.redis_server import RedisServer

CHANNELS = [("trades", "BTC/USDT"), ("depth", "BTC/USDT"), ("orderbook", "BTC/USDT"),
            ("orders", None)]
CLOCK_FIELDS = ("timestamp", "created_at", "updated_at", "executed_at")
"""What differs between two deployments given the same commands: when, and which epoch."""
OTHER_DEPLOYMENT = (*CLOCK_FIELDS, "epoch")

# (user, order) in order; "cancel"/"amend" name the user's earlier order by its client id.
SCRIPT: list[tuple[str, dict[str, Any]]] = [
    ("alice", {"symbol": "BTC/USDT", "side": "buy", "price": "50000.00", "quantity": "0.01",
               "client_order_id": "a1"}),
    ("alice", {"symbol": "BTC/USDT", "side": "buy", "price": "49990.00", "quantity": "0.02",
               "client_order_id": "a2"}),
    ("bob", {"symbol": "BTC/USDT", "side": "sell", "price": "50010.00", "quantity": "0.03",
             "client_order_id": "b1"}),
    ("bob", {"symbol": "BTC/USDT", "side": "sell", "price": "50000.00", "quantity": "0.004"}),
    ("alice", {"amend": "a2", "price": "49995.00"}),
    ("bob", {"symbol": "BTC/USDT", "side": "sell", "type": "market", "quantity": "0.015"}),
    ("alice", {"symbol": "BTC/USDT", "side": "buy", "price": "50010.00", "quantity": "0.005"}),
    ("bob", {"cancel": "b1"}),
    ("alice", {"symbol": "ETH/USDT", "side": "buy", "price": "3000.00", "quantity": "0.1"}),
    ("alice", {"cancel": "a2"}),
]


async def rest_send(http: httpx.AsyncClient, token: str, order: dict[str, Any]) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    if "cancel" in order:
        listed = (await http.get("/api/v1/orders", headers=headers)).json()["orders"]
        [target] = [o for o in listed if o["client_order_id"] == order["cancel"]]
        response = await http.delete(f"/api/v1/orders/{target['order_id']}", headers=headers)
    elif "amend" in order:
        listed = (await http.get("/api/v1/orders", headers=headers)).json()["orders"]
        [target] = [o for o in listed if o["client_order_id"] == order["amend"]]
        response = await http.patch(f"/api/v1/orders/{target['order_id']}", headers=headers,
                                    json={"price": order["price"]})
    else:
        response = await http.post("/api/v1/orders", headers=headers, json=order)
    assert response.status_code in (200, 201), response.text


async def ws_send(server: Server, token: str, order: dict[str, Any]) -> None:
    async with ws_client(server, token) as client:
        if "cancel" in order:
            reply = await client.request(action="cancel", client_order_id=order["cancel"])
        elif "amend" in order:
            reply = await client.request(action="amend", client_order_id=order["amend"],
                                         price=order["price"])
        else:
            reply = await client.request(action="place", order=order)
        assert reply["type"] in ("placed", "cancelled", "amended"), reply


async def run_script(rest: Server, ws: Server, tokens: dict[str, str]) -> None:
    async with rest.http() as http:
        for index, (user, order) in enumerate(SCRIPT):
            if index % 2 == 0:
                await rest_send(http, tokens[user], order)
            else:
                await ws_send(ws, tokens[user], order)


async def watch(server: Server, token: str, out: list[dict[str, Any]],
                ready: trio.Event, stop: trio.Event) -> None:
    """Subscribe to every channel, then record every message until ``stop``."""
    async with ws_client(server, token) as client:
        for stream, symbol in CHANNELS:
            out.append(await client.subscribe(stream, symbol))
        ready.set()
        with trio.CancelScope() as scope:
            async def stopper() -> None:
                await stop.wait()
                scope.cancel()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stopper)
                while True:
                    out.append(await client.receive(timeout=60))


async def streams_of(servers: list[Server], token: str, act: Any) -> list[list[dict[str, Any]]]:
    """What a client on each server saw while ``act()`` ran (plus one second to settle)."""
    seen: list[list[dict[str, Any]]] = [[] for _ in servers]
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        for server, out in zip(servers, seen, strict=True):
            ready = trio.Event()
            nursery.start_soon(watch, server, token, out, ready, stop)
            await ready.wait()
        await act()
        await trio.sleep(1.0)
        stop.set()
    return seen


def as_elsewhere(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in m.items() if k not in OTHER_DEPLOYMENT} for m in messages]


async def test_every_client_sees_the_all_in_one_streams(
        tmp_path: Path, redis_server: RedisServer) -> None:
    async with deployment(tmp_path, redis_server.url) as deploy:
        tokens = {user: deploy.token(user) for user in ("alice", "bob")}
        await scale_out_and_all_in_one(deploy, tokens)


async def scale_out_and_all_in_one(deploy: Deployment, tokens: dict[str, str]) -> None:
    engine = await deploy.start("engine")
    started: dict[str, Server] = {}
    async with trio.open_nursery() as nursery:
        async def start(role: str, name: str) -> None:
            started[name] = await deploy.start(role, name)
        nursery.start_soon(start, "gateway", "gateway-a")
        nursery.start_soon(start, "gateway", "gateway-b")
        nursery.start_soon(start, "all", "all")
    a, b, alone = started["gateway-a"], started["gateway-b"], started["all"]

    seen_a, seen_b = await streams_of([a, b], tokens["alice"],
                                      lambda: run_script(a, b, tokens))
    [seen_alone] = await streams_of([alone], tokens["alice"],
                                    lambda: run_script(alone, alone, tokens))

    assert len(seen_a) > len(CHANNELS) + 20  # the script made trades, depth and order updates
    assert json.dumps(seen_a) == json.dumps(seen_b)  # byte for byte, timestamps included
    assert as_elsewhere(seen_a) == as_elsewhere(seen_alone)

    # REST reads come from each gateway's replica and equal the engine's own.
    for path in ("/api/v1/markets/BTC-USDT/orderbook", "/api/v1/markets/BTC-USDT/trades",
                 "/api/v1/markets/ETH-USDT/orderbook"):
        answers = []
        for server in (engine, a, b):
            async with server.http() as http:
                answers.append((await http.get(path)).json())
        assert answers[0] == answers[1] == answers[2], path
    headers = {"Authorization": f"Bearer {tokens['alice']}"}
    orders = []
    for server in (engine, a, b):
        async with server.http() as http:
            orders.append((await http.get("/api/v1/orders", headers=headers)).json())
    assert orders[0] == orders[1] == orders[2]
    assert orders[0]["orders"]  # alice still has open orders
