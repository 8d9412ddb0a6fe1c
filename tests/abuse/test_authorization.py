"""Many users, random orders: each private stream carries exactly its user's updates,
and no REST call shows or touches another user's orders."""

from __future__ import annotations

import json
import random

import pytest
import trio
from wsclient import BTC, TIMEOUT, Client, open_rest, ws_url

from engine import (
    CancelOrder,
    OrderAccepted,
    OrderAmended,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    PlaceOrder,
    Side,
)

USERS = [f"user-{i}" for i in range(8)]
ORDER_EVENTS = (OrderAccepted, OrderFilled, OrderCancelled, OrderAmended, OrderRejected)


async def test_private_streams_and_rest_are_per_user(gateway, token, ws_connect):
    rng = random.Random(20261122)
    tokens = {user: token(user) for user in USERS}
    expected: dict[str, list[tuple[int, str]]] = {user: [] for user in USERS}
    received: dict[str, list[dict]] = {user: [] for user in USERS}
    owned: dict[str, set[int]] = {user: set() for user in USERS}
    done = trio.Event()

    async def listen(user: str, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with ws_connect(ws_url(gateway, "/ws/orders", tokens[user])) as ws:
            client = Client(ws)
            assert (await client.receive())["type"] == "subscribed"
            task_status.started()
            with trio.move_on_after(TIMEOUT * 4):
                while True:
                    with trio.move_on_after(0.3) as idle:
                        received[user].append(await client.receive())
                    if idle.cancelled_caught and done.is_set():
                        break

    async with trio.open_nursery() as nursery:
        for user in USERS:
            await nursery.start(listen, user)
        for _ in range(300):
            user = rng.choice(USERS)
            if owned[user] and rng.random() < 0.25:
                command = CancelOrder(order_id=rng.choice(sorted(owned[user])), user_id=user)
            else:
                command = PlaceOrder(
                    order_id=0, user_id=user, symbol=BTC, side=rng.choice([Side.BUY, Side.SELL]),
                    price=rng.randrange(4_999_000, 5_001_000, 100),
                    quantity=rng.randrange(1000, 5000))
            with trio.fail_after(TIMEOUT):
                events = await gateway.submit(command)
            for event in events:
                if isinstance(event, OrderAccepted):
                    owned[event.user_id].add(event.order_id)
                if isinstance(event, ORDER_EVENTS):  # what the orders stream carries
                    expected[event.user_id].append((event.order_id, type(event).__name__))
        done.set()

    fills = 0
    for user in USERS:
        updates = [m for m in received[user] if m["type"] == "order_update"]
        assert all(m["user_id"] == user for m in updates), user
        assert [m["order_id"] for m in updates] == [oid for oid, _ in expected[user]], user
        assert [m["seq"] for m in updates] == list(range(1, len(updates) + 1))
        assert {m["order_id"] for m in updates} <= owned[user]
        fills += sum(1 for _, kind in expected[user] if kind == "OrderFilled")
    assert fills > 20  # the flow really traded between users

    async with open_rest(gateway) as http:
        for user in USERS:
            headers = {"Authorization": f"Bearer {tokens[user]}"}
            listed = (await http.get("/api/v1/orders", headers=headers)).json()["orders"]
            assert {o["user_id"] for o in listed} <= {user}
            assert {o["order_id"] for o in listed} <= owned[user]
            others = [oid for other in USERS if other != user for oid in owned[other]]
            for order_id in rng.sample(others, 15):
                before = gateway.engine.order(order_id)
                for method in ("GET", "DELETE"):
                    response = await http.request(
                        method, f"/api/v1/orders/{order_id}", headers=headers)
                    assert response.status_code == 404, (method, response.text)
                    assert response.json()["error"]["code"] == "order_not_found"
                response = await http.patch(f"/api/v1/orders/{order_id}",
                                            json={"quantity": "0.01000"}, headers=headers)
                assert response.status_code == 404
                assert gateway.engine.order(order_id) == before  # untouched
            # Cancel-all cancels only one's own orders.
            cancelled = (await http.delete("/api/v1/orders", headers=headers)).json()
            assert set(cancelled["cancelled"]) <= owned[user]


async def test_orders_stream_needs_a_token_and_is_always_ones_own(gateway, token, ws_connect):
    async with ws_connect(ws_url(gateway)) as ws:  # anonymous
        client = Client(ws)
        error = await client.request(action="subscribe", stream="orders")
        assert error["code"] == "unauthorized"
        # There is no way to name another user's channel.
        error = await client.request(action="subscribe", stream="orders", symbol="bob")
        assert error["type"] == "error"
    async with ws_connect(ws_url(gateway, "/ws", token("alice"))) as ws:
        client = Client(ws)
        await client.subscribe("orders")
        await client.send({"action": "subscribe", "stream": "orders", "user_id": "bob"})
        assert (await client.receive())["code"] == "invalid_message"


@pytest.mark.parametrize("public_ids", [False, True])
async def test_public_trades_carry_user_ids_only_if_configured(start_gateway, ws_connect,
                                                              public_ids):
    gateway = await start_gateway(public_trade_user_ids=public_ids)
    async with ws_connect(ws_url(gateway, "/ws/trades")) as ws:
        assert json.loads(await ws.get_message())["type"] == "subscribed"
        for user, side in (("maker", Side.SELL), ("taker", Side.BUY)):
            await gateway.submit(PlaceOrder(order_id=0, user_id=user, symbol=BTC, side=side,
                                            price=5_000_000, quantity=1000))
        with trio.fail_after(TIMEOUT):
            trade = json.loads(await ws.get_message())
    assert trade["type"] == "trade_executed"
    assert ("maker" in json.dumps(trade) and "taker" in json.dumps(trade)) is public_ids, trade
    async with open_rest(gateway) as http:
        rest = (await http.get("/api/v1/markets/BTC-USDT/trades")).json()["trades"]
    assert len(rest) == 1
    assert ("maker" in json.dumps(rest)) is public_ids
