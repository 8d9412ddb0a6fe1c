"""docs/protocol.md and docs/configuration.md tell the truth.

Every ``json example: NAME`` block of the protocol document is compared with a
message that a live gateway sends for the same situation: same ``type``, same
set of fields. Every configuration key is documented.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from trio_websocket import ConnectionClosed

from gateway import (
    AuthSettings,
    BrokerSettings,
    Config,
    EngineSettings,
    GcSettings,
    HistorySettings,
    JournalSettings,
    LimitSettings,
    WebSocketSettings,
)

DOCS = Path(__file__).parents[2] / "docs"
EXAMPLE = re.compile(r"```json example: (\w+)\n(.*?)```", re.DOTALL)


def documented_examples() -> dict[str, dict[str, Any]]:
    text = (DOCS / "protocol.md").read_text(encoding="utf-8")
    return {name: json.loads(body) for name, body in EXAMPLE.findall(text)}


async def next_json(ws: Any) -> dict[str, Any]:
    with trio.fail_after(5):
        message: dict[str, Any] = json.loads(await ws.get_message())
        return message


async def next_of(ws: Any, kind: str, action: str | None = None) -> dict[str, Any]:
    while True:
        message = await next_json(ws)
        if message["type"] == kind and (action is None or message.get("action") == action):
            return message


def same_shape(documented: dict[str, Any], real: dict[str, Any]) -> None:
    assert real.get("type") == documented.get("type")
    assert set(real) == set(documented), (sorted(real), sorted(documented))
    if "error" in documented:
        assert set(real["error"]) == set(documented["error"])


async def test_every_protocol_example_matches_a_live_message(gateway, http, token, ws_connect):
    examples = documented_examples()
    assert len(examples) >= 16
    alice = {"Authorization": f"Bearer {token('alice')}"}
    bob = {"Authorization": f"Bearer {token('bob')}"}
    real: dict[str, dict[str, Any]] = {}
    url = gateway.endpoints.ws_url
    async with ws_connect(f"{url}/ws/orders?token={token('alice')}") as orders, \
            ws_connect(f"{url}/ws") as general:
        await next_of(orders, "subscribed")
        for request in (
            {"action": "subscribe", "stream": "trades", "symbol": "BTC/USDT", "id": 1},
            {"action": "subscribe", "stream": "orderbook", "symbol": "BTC/USDT", "id": 5},
            {"action": "subscribe", "stream": "depth", "symbol": "BTC/USDT", "id": 6},
        ):
            await general.send_message(json.dumps(request))
        real["subscribed"] = await next_of(general, "subscribed")
        real["orderbook_snapshot"] = await next_of(general, "orderbook_snapshot")
        real["depth_snapshot"] = await next_of(general, "depth_snapshot")
        wrong_port = f"http://{gateway.endpoints.host}:{gateway.endpoints.ws_port}"
        real["websocket_only"] = (await http.get(f"{wrong_port}/api/v1/markets")).json()

        placed = await http.post("/api/v1/orders", headers=alice, json={
            "symbol": "BTC/USDT", "side": "buy", "price": "50000.00", "quantity": "0.01"})
        real["rest_order"] = placed.json()
        await http.post("/api/v1/orders", headers=bob, json={
            "symbol": "BTC/USDT", "side": "sell", "type": "market", "quantity": "0.004"})
        order_id = placed.json()["order_id"]
        await http.patch(f"/api/v1/orders/{order_id}", headers=alice, json={"price": "49999.00"})
        await http.post("/api/v1/orders", headers=alice, json={
            "symbol": "BTC/USDT", "side": "sell", "price": "49000.00", "quantity": "0.01",
            "post_only": True})
        await http.delete(f"/api/v1/orders/{order_id}", headers=alice)
        real["rest_error"] = (await http.post("/api/v1/orders", headers=alice, json={
            "symbol": "BTC/USDT", "side": "buy", "price": "50000.001", "quantity": "0.01"})).json()

        real["order_update_created"] = await next_of(orders, "order_update", "created")
        real["order_update_filled"] = await next_of(orders, "order_update", "partially_filled")
        real["order_update_amended"] = await next_of(orders, "order_update", "amended")
        real["order_update_rejected"] = await next_of(orders, "order_update", "rejected")
        real["order_update_cancelled"] = await next_of(orders, "order_update", "cancelled")
        real["trade_executed"] = await next_of(general, "trade_executed")
        real["orderbook_update"] = await next_of(general, "orderbook_update")
        real["depth_update"] = await next_of(general, "depth_update")

        async with ws_connect(f"{url}/ws?token={token('alice')}") as trader:
            order = {"symbol": "BTC/USDT", "side": "buy", "price": "40000.00",
                     "quantity": "0.01", "client_order_id": "my-42"}
            await trader.send_message(json.dumps({"action": "place", "id": 7, "order": order}))
            real["ws_placed"] = await next_of(trader, "placed")
            await trader.send_message(json.dumps({"action": "place", "id": 8, "order": {
                **order, "price": "100.00", "client_order_id": None}}))
            real["ws_order_error"] = await next_of(trader, "error")
            await trader.send_message(json.dumps({"action": "cancel_all", "id": 10}))
            real["ws_all_cancelled"] = await next_of(trader, "all_cancelled")

        trades_seq = real["trade_executed"]["seq"]
        async with ws_connect(f"{url}/ws") as again:
            epoch = real["subscribed"]["epoch"]
            await again.send_message(json.dumps(
                {"action": "subscribe", "stream": "trades", "symbol": "BTC/USDT", "id": 5,
                 "since": {"epoch": epoch, "seq": trades_seq - 1}}))
            real["subscribed_resumed"] = await next_of(again, "subscribed")
            assert (await next_of(again, "trade_executed")) == real["trade_executed"]
            await again.send_message(json.dumps(
                {"action": "subscribe", "stream": "trades", "id": 6,
                 "since": {"epoch": "not-" + epoch, "seq": 0}}))
            real["resume_unavailable"] = await next_of(again, "error")

        await general.send_message(json.dumps({"action": "ping", "id": 3}))
        real["pong"] = await next_of(general, "pong")
        await general.send_message(json.dumps({"action": "subscribe", "stream": "x", "id": 4}))
        real["error"] = await next_of(general, "error")
        await general.send_message(json.dumps(
            {"action": "unsubscribe", "stream": "trades", "symbol": "BTC/USDT", "id": 2}))
        real["unsubscribed"] = await next_of(general, "unsubscribed")

        gateway.shutdown()
        real["shutdown"] = await next_of(general, "shutdown")
        with trio.fail_after(5), pytest.raises(ConnectionClosed) as closed:
            await general.get_message()
        assert closed.value.reason.code == 1001

    assert set(real) == set(examples)
    for name, documented in examples.items():
        same_shape(documented, real[name])


def test_every_configuration_key_is_documented():
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    for settings in (Config, WebSocketSettings, AuthSettings, EngineSettings, JournalSettings,
                     LimitSettings, GcSettings, HistorySettings, BrokerSettings):
        for field in attrs.fields(settings):
            assert f"`{field.name}`" in text or f"[{field.name}]" in text, field.name
