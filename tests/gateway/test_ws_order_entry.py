"""Order entry over the WebSocket: place, amend, cancel and cancel-all on ``/ws?token=``.

Every request kind and error goes over a real socket. A reply echoes the
request's ``id``, carries the same order object as the REST answer, comes only
once the command is durable, and replies come in request order, also when a
client pipelines. One user never touches another's orders.
"""

from __future__ import annotations

import os
import re
import threading

import httpx
import pytest
import trio
from wsclient import BTC, ETH, TIMEOUT, open_client, open_rest, rest_place

from gateway import Fsync, JournalSettings, LimitSettings

ORDER = {"symbol": BTC, "side": "buy", "price": "50000.00", "quantity": "0.01"}


async def entry(client, action: str, request_id: object, **fields):
    """Send one order-entry request and return the reply with its ``id``."""
    await client.send({"action": action, "id": request_id, **fields})
    replies = await client.receive_until(lambda m: m.get("id") == request_id)
    return replies[-1]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# ------------------------------------------------------------------ success


async def test_place_replies_with_the_order_that_rest_shows(gateway, token):
    alice = token("alice")
    async with open_client(gateway, "/ws", alice) as client, open_rest(gateway) as http:
        reply = await entry(client, "place", 7, order={**ORDER, "client_order_id": "c-7"})
        assert reply["type"] == "placed"
        assert reply["id"] == 7
        with trio.fail_after(TIMEOUT):
            shown = await http.get(f"/api/v1/orders/{reply['order']['order_id']}",
                                   headers=bearer(alice))
    assert reply["order"] == shown.json()
    assert reply["order"]["status"] == "OPEN"
    assert reply["order"]["client_order_id"] == "c-7"


async def test_pipelined_requests_get_every_reply_in_order(gateway, token):
    async with open_client(gateway, "/ws", token("alice")) as client:
        sides = ["buy", "sell"] * 50
        for i, side in enumerate(sides):
            # Crossing pairs: half of these trade, and an invalid one is mixed in.
            order = {**ORDER, "side": side}
            if i == 33:
                order["price"] = "1.001"
            await client.send({"action": "place", "id": i, "order": order})
        replies = [m for m in await client.collect(len(sides), timeout=TIMEOUT * 2)]
    assert [r["id"] for r in replies] == list(range(len(sides)))
    assert replies[33]["type"] == "error"
    assert replies[33]["code"] == "price_off_tick"
    assert {r["type"] for i, r in enumerate(replies) if i != 33} == {"placed"}
    ids = [r["order"]["order_id"] for r in replies if r["type"] == "placed"]
    assert ids == sorted(ids)
    # Each reply shows its order as its own command left it, also when the next
    # request (a crossing sell) was applied in the same journal batch.
    statuses = [(sides[i], r["order"]["status"]) for i, r in enumerate(replies) if i != 33]
    assert set(statuses) == {("buy", "OPEN"), ("sell", "FILLED")}


async def test_cancel_by_client_order_id_right_behind_its_place(gateway, token):
    async with open_client(gateway, "/ws", token("alice")) as client:
        await client.send({"action": "place", "id": 1, "order": {**ORDER, "client_order_id": "q"}})
        await client.send({"action": "cancel", "id": 2, "client_order_id": "q"})
        placed, cancelled = await client.collect(2)
    assert placed["type"] == "placed"
    assert cancelled["type"] == "cancelled"
    assert cancelled["order"]["order_id"] == placed["order"]["order_id"]
    assert cancelled["order"]["status"] == "CANCELLED"


async def test_amend_by_client_order_id_right_behind_its_place(gateway, token):
    async with open_client(gateway, "/ws", token("alice")) as client:
        await client.send({"action": "place", "id": 1, "order": {**ORDER, "client_order_id": "a"}})
        await client.send({"action": "amend", "id": 2, "client_order_id": "a",
                           "price": "49999.50", "quantity": "0.02"})
        placed, amended = await client.collect(2)
    assert amended["type"] == "amended", amended
    assert amended["order"]["order_id"] == placed["order"]["order_id"]
    assert amended["order"]["price"] == "49999.50"
    assert amended["order"]["quantity"] == "0.02000"


async def test_amend_and_cancel_by_order_id(gateway, token):
    async with open_client(gateway, "/ws", token("alice")) as client:
        order_id = (await entry(client, "place", "p", order=ORDER))["order"]["order_id"]
        amended = await entry(client, "amend", "a", order_id=order_id, quantity="0.005")
        cancelled = await entry(client, "cancel", "c", order_id=order_id)
        again = await entry(client, "cancel", "c2", order_id=order_id)
    assert amended["order"]["remaining_quantity"] == "0.00500"
    assert cancelled["order"]["status"] == "CANCELLED"
    assert (again["type"], again["code"]) == ("error", "order_not_open")


async def test_cancel_all_of_one_symbol_and_then_everything(gateway, token):
    async with open_client(gateway, "/ws", token("alice")) as client:
        btc = [(await entry(client, "place", i, order=ORDER))["order"]["order_id"]
               for i in range(3)]
        eth = (await entry(client, "place", "e", order={
            **ORDER, "symbol": "ETH-USDT", "price": "3000.00", "quantity": "0.1"}))["order"]
        some = await entry(client, "cancel_all", "x", symbol="btc-usdt")
        rest = await entry(client, "cancel_all", "y")
    assert some == {"type": "all_cancelled", "id": "x", "cancelled": btc, "count": 3}
    assert rest == {"type": "all_cancelled", "id": "y", "cancelled": [eth["order_id"]],
                    "count": 1}
    assert eth["symbol"] == ETH


# ------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("request_fields", "code", "field"),
    [
        ({"order": {**ORDER, "leverage": 10}}, "unknown_field", "leverage"),
        ({"order": {k: v for k, v in ORDER.items() if k != "side"}}, "missing_field", "side"),
        ({"order": {**ORDER, "side": "long"}}, "invalid_side", "side"),
        ({"order": {**ORDER, "price": 50000}}, "invalid_price", "price"),
        ({"order": {**ORDER, "price": "-1"}}, "invalid_price", "price"),
        ({"order": {**ORDER, "type": "market"}}, "invalid_price", "price"),
        ({"order": {**ORDER, "price": "100.00"}}, "below_min_notional", "quantity"),
        ({"order": {**ORDER, "symbol": "BTCUSDT"}}, "unknown_symbol", "symbol"),
        ({}, "missing_field", "order"),
        ({"order": "BTC"}, "invalid_message", "order"),
        ({"order": ORDER, "extra": 1}, "unknown_field", "extra"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
async def test_place_errors_carry_the_rest_code_and_field(gateway, token, request_fields, code,
                                                          field):
    async with open_client(gateway, "/ws", token("alice")) as client:
        reply = await entry(client, "place", 5, **request_fields)
    assert set(reply) == {"type", "id", "code", "message", "field"}
    assert (reply["type"], reply["id"], reply["code"], reply["field"]) == (
        "error", 5, code, field)


async def test_errors_say_what_to_do(gateway, token):
    async with open_client(gateway, "/ws", token("alice")) as client:
        symbol = await entry(client, "place", 1, order={**ORDER, "symbol": "BTCUSDT"})
        notional = await entry(client, "place", 2, order={**ORDER, "price": "100.00"})
        market = await entry(client, "place", 3, order={**ORDER, "type": "market"})
        negative = await entry(client, "place", 4, order={**ORDER, "price": "-1"})
    assert "BTC/USDT" in symbol["message"]
    assert "ETH/USDT" in symbol["message"]
    assert "BTC-USDT" in symbol["message"]
    assert re.search(r"= 1\.0* USDT", notional["message"]), notional
    assert "5 USDT" in notional["message"]
    assert "market order takes no price" in market["message"]
    assert "positive" in negative["message"]


async def test_a_connection_without_a_token_may_not_trade(gateway):
    async with open_client(gateway, "/ws") as client:
        reply = await entry(client, "place", 1, order=ORDER)
        pong = await client.ping()  # and the connection stays usable
    assert (reply["code"], reply["id"]) == ("unauthorized", 1)
    assert "token" in reply["message"]
    assert pong["type"] == "pong"


async def test_one_user_never_touches_anothers_order(gateway, token):
    async with open_client(gateway, "/ws", token("alice")) as alice, \
            open_client(gateway, "/ws", token("bob")) as bob, open_rest(gateway) as http:
        placed = await entry(alice, "place", 1, order={**ORDER, "client_order_id": "mine"})
        order_id = placed["order"]["order_id"]
        attempts = [
            await entry(bob, "cancel", 1, order_id=order_id),
            await entry(bob, "cancel", 2, client_order_id="mine"),
            await entry(bob, "amend", 3, order_id=order_id, price="1.00"),
            await entry(bob, "amend", 4, client_order_id="mine", price="1.00"),
        ]
        cancel_all = await entry(bob, "cancel_all", 5)
        with trio.fail_after(TIMEOUT):
            rest_cancel = await http.delete(f"/api/v1/orders/{order_id}",
                                            headers=bearer(token("bob")))
            still = await http.get(f"/api/v1/orders/{order_id}", headers=bearer(token("alice")))
    assert [a["code"] for a in attempts] == ["order_not_found"] * 4
    assert cancel_all["count"] == 0
    assert rest_cancel.status_code == 404
    assert still.json()["status"] == "OPEN"
    assert still.json() == {**placed["order"], "updated_at": still.json()["updated_at"]}


# ----------------------------------------------------------------- the rate


async def test_the_order_rate_is_per_user_across_rest_and_websockets(start_gateway, token):
    gateway = await start_gateway(limits=LimitSettings(orders_per_second=0.01, order_burst=3))
    alice = token("alice")
    async with open_client(gateway, "/ws", alice) as one, \
            open_client(gateway, "/ws", alice) as two, open_rest(gateway) as http:
        assert (await entry(one, "place", 1, order=ORDER))["type"] == "placed"
        assert (await entry(two, "place", 2, order=ORDER))["type"] == "placed"
        await rest_place(http, alice, **ORDER)
        refused = await entry(one, "place", 3, order=ORDER)
        with trio.fail_after(TIMEOUT):
            rest_refused = await http.post("/api/v1/orders", json=ORDER, headers=bearer(alice))
            bob = await http.post("/api/v1/orders", json=ORDER, headers=bearer(token("bob")))
            stats = (await http.get("/stats")).json()
            metrics = (await http.get("/metrics")).text
    assert (refused["type"], refused["code"]) == ("error", "rate_limited")
    assert "limits.orders_per_second" in refused["message"]
    assert rest_refused.status_code == 429
    assert rest_refused.json()["error"]["code"] == "rate_limited"
    assert int(rest_refused.headers["Retry-After"]) >= 1
    assert bob.status_code == 201  # another user has a budget of their own
    assert stats["orders_rate_limited"] == 2
    assert stats["ws_order_requests"] == 3
    assert "trade_engine_orders_rate_limited_total 2.0" in metrics


# --------------------------------------------------------------- durability


async def test_no_reply_before_the_command_is_durable(start_gateway, token, tmp_path,
                                                      monkeypatch):
    """With the journal's fsync held, neither transport answers; released, both do."""
    gateway = await start_gateway(journal=JournalSettings(fsync=Fsync.BATCH))
    alice = token("alice")
    release = threading.Event()
    fsync = os.fsync

    def held_fsync(fd: int) -> None:
        release.wait(TIMEOUT * 2)
        fsync(fd)

    monkeypatch.setattr(os, "fsync", held_fsync)
    replies: list[dict] = []
    async with open_client(gateway, "/ws", alice) as client, \
            httpx.AsyncClient(base_url=gateway.endpoints.rest_url, timeout=TIMEOUT * 3) as http:

        async def rest_order() -> None:
            response = await http.post("/api/v1/orders", json=ORDER, headers=bearer(alice))
            replies.append({"rest": response.status_code})

        async with trio.open_nursery() as nursery:
            nursery.start_soon(rest_order)
            await client.send({"action": "place", "id": 1, "order": ORDER})
            with trio.move_on_after(0.5):
                replies.append(await client.receive())
            assert replies == []  # the journal has not made either order durable yet
            release.set()
            replies.append(await client.receive())
    assert {"rest": 201} in replies
    assert any(r.get("type") == "placed" for r in replies)
