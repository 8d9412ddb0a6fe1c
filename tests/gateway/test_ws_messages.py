"""Message formats, exactly, and the reply to every control message.

Seed scenarios: OrderUpdateMessage, TradeExecutedMessage, OrderBookUpdateMessage,
MessageFormatting, InvalidSubscriptionMessage, SubscribeOrderBookWithoutSymbol,
PlaceOrder_SendsUpdate, MatchTrade_BroadcastsExecution, OrderBookChange_NotifiesSubscribers.
"""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
import trio
from trio_websocket import ConnectionClosed
from wsclient import (
    BTC,
    TIMEOUT,
    open_client,
    open_rest,
    order_id_of,
    place,
    rest_place,
    stats,
)

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

ORDER_FIELDS = {"type", "action", "order_id", "client_order_id", "user_id", "symbol", "side",
                "status", "price", "quantity", "filled_quantity", "remaining_quantity",
                "timestamp", "seq"}
TRADE_FIELDS = {"type", "trade_id", "symbol", "price", "quantity", "taker_side", "buyer_fee",
                "seller_fee", "fee_asset", "executed_at", "seq"}


def without_volatile(message, *names):
    assert ISO_MS.match(message.get("timestamp") or message.get("executed_at")), message
    return {k: v for k, v in message.items() if k not in {"timestamp", "executed_at", *names}}


# --------------------------------------------------------- order_update


async def test_placing_an_order_over_rest_sends_created(gateway, token):
    async with open_client(gateway, "/ws/orders", token("alice")) as client, \
            open_rest(gateway) as http:
        await client.receive()
        order = await rest_place(http, token("alice"), side="buy", price="49000.00",
                                 quantity="0.01", client_order_id="my-1")
        update = await client.receive()
    assert without_volatile(update) == {
        "type": "order_update", "action": "created", "order_id": order["order_id"],
        "client_order_id": "my-1", "user_id": "alice", "symbol": BTC, "side": "BUY",
        "status": "OPEN", "order_type": "limit", "time_in_force": "gtc",
        "price": "49000.00", "quantity": "0.01000", "filled_quantity": "0.00000",
        "remaining_quantity": "0.01000", "seq": 1,
    }
    assert update["timestamp"] == order["created_at"]


async def test_partial_fill_then_fill(gateway, token):
    async with open_client(gateway, "/ws/orders", token("maker")) as client:
        await client.receive()
        maker_id = order_id_of(await place(gateway, "maker", "sell", "50000.00", "0.02"))
        await place(gateway, "taker", "buy", "50000.00", "0.005")
        await place(gateway, "taker", "buy", "50000.00", "0.015")
        created, partial, filled = await client.collect(3)
    assert created["action"] == "created"
    assert set(partial) >= ORDER_FIELDS
    assert without_volatile(partial, "trade_id") == {
        "type": "order_update", "action": "partially_filled", "order_id": maker_id,
        "client_order_id": None, "user_id": "maker", "symbol": BTC, "side": "SELL",
        "status": "PARTIALLY_FILLED", "price": "50000.00", "quantity": "0.02000",
        "filled_quantity": "0.00500", "remaining_quantity": "0.01500",
        "fill_price": "50000.00", "fill_quantity": "0.00500",
        "fee": partial["fee"], "fee_asset": "USDT", "liquidity": "maker", "seq": 2,
    }
    assert Decimal(partial["fee"]) == Decimal("0.125")  # 250 USDT at the 0.05 % maker rate
    assert (filled["action"], filled["status"]) == ("filled", "FILLED")
    assert (filled["filled_quantity"], filled["remaining_quantity"]) == ("0.02000", "0.00000")
    assert filled["fill_quantity"] == "0.01500"
    assert filled["seq"] == 3
    assert filled["trade_id"] != partial["trade_id"]


async def test_taker_fill_reports_taker_liquidity_and_fee(gateway, token):
    await place(gateway, "maker", "sell", "50000.00", "0.01")
    async with open_client(gateway, "/ws/orders", token("taker")) as client:
        await client.receive()
        await place(gateway, "taker", "buy", "50000.00", "0.01")
        created, filled = await client.collect(2)
    assert created["action"] == "created"
    assert (filled["action"], filled["liquidity"]) == ("filled", "taker")
    assert Decimal(filled["fee"]) == Decimal("0.5")  # 500 USDT at the 0.1 % taker rate


async def test_cancel_over_rest_sends_cancelled(gateway, token):
    async with open_client(gateway, "/ws/orders", token("alice")) as client, \
            open_rest(gateway) as http:
        await client.receive()
        order = await rest_place(http, token("alice"), side="sell", price="51000.00",
                                 quantity="0.01")
        with trio.fail_after(TIMEOUT):
            response = await http.delete(f"/api/v1/orders/{order['order_id']}",
                                         headers={"Authorization": f"Bearer {token('alice')}"})
        assert response.status_code == 200
        _, cancelled = await client.collect(2)
    assert without_volatile(cancelled) == {
        "type": "order_update", "action": "cancelled", "order_id": order["order_id"],
        "client_order_id": None, "user_id": "alice", "symbol": BTC, "side": "SELL",
        "status": "CANCELLED", "price": "51000.00", "quantity": "0.01000",
        "filled_quantity": "0.00000", "remaining_quantity": "0.00000",
        "cancelled_quantity": "0.01000", "reason": "user", "seq": 2,
    }


async def test_amend_over_rest_sends_amended(gateway, token):
    async with open_client(gateway, "/ws/orders", token("alice")) as client, \
            open_rest(gateway) as http:
        await client.receive()
        order = await rest_place(http, token("alice"), side="buy", price="49000.00",
                                 quantity="0.02")
        with trio.fail_after(TIMEOUT):
            response = await http.patch(
                f"/api/v1/orders/{order['order_id']}", json={"quantity": "0.01"},
                headers={"Authorization": f"Bearer {token('alice')}"})
        assert response.status_code == 200, response.text
        _, amended = await client.collect(2)
    assert without_volatile(amended) == {
        "type": "order_update", "action": "amended", "order_id": order["order_id"],
        "client_order_id": None, "user_id": "alice", "symbol": BTC, "side": "BUY",
        "status": "OPEN", "price": "49000.00", "quantity": "0.01000",
        "filled_quantity": "0.00000", "remaining_quantity": "0.01000",
        "priority_kept": True, "seq": 2,
    }


async def test_rejected_order_sends_rejected(gateway, token):
    async with open_client(gateway, "/ws/orders", token("alice")) as client, \
            open_rest(gateway) as http:
        await client.receive()
        with trio.fail_after(TIMEOUT):
            response = await http.post(
                "/api/v1/orders", headers={"Authorization": f"Bearer {token('alice')}"},
                json={"symbol": BTC, "side": "buy", "price": "100.00", "quantity": "0.001"})
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "below_min_notional"
        rejected = await client.receive()
    assert without_volatile(rejected) == {
        "type": "order_update", "action": "rejected", "order_id": rejected["order_id"],
        "client_order_id": None, "user_id": "alice", "symbol": BTC, "status": "REJECTED",
        "command": "place", "reason": "below_min_notional", "seq": 1,
    }


# ------------------------------------------------------- trade_executed


async def test_match_broadcasts_execution_without_user_ids(gateway, token):
    async with open_client(gateway, "/ws/trades") as client, open_rest(gateway) as http:
        await client.receive()
        await rest_place(http, token("bob"), side="sell", price="50000.00", quantity="0.01")
        await rest_place(http, token("alice"), side="buy", price="50000.00", quantity="0.01")
        message = await client.receive()
    assert set(message) == TRADE_FIELDS
    assert without_volatile(message) == {
        "type": "trade_executed", "trade_id": message["trade_id"], "symbol": BTC,
        "price": "50000.00", "quantity": "0.01000", "taker_side": "BUY",
        "buyer_fee": message["buyer_fee"], "seller_fee": message["seller_fee"],
        "fee_asset": "USDT", "seq": 1,
    }
    assert Decimal(message["buyer_fee"]) == Decimal("0.5")  # the buyer took: 0.1 %
    assert Decimal(message["seller_fee"]) == Decimal("0.25")  # the seller made: 0.05 %


async def test_trade_carries_user_ids_when_the_operator_allows(start_gateway):
    gateway = await start_gateway(public_trade_user_ids=True)
    async with open_client(gateway, "/ws/trades?symbol=BTC-USDT") as client:
        await client.receive()
        await place(gateway, "alice", "buy", "50000.00", "0.01")
        await place(gateway, "bob", "sell", "49000.00", "0.01")
        message = await client.receive()
    assert set(message) == TRADE_FIELDS | {"buyer_id", "seller_id"}
    assert (message["buyer_id"], message["seller_id"]) == ("alice", "bob")
    assert (message["taker_side"], message["price"]) == ("SELL", "50000.00")
    assert Decimal(message["buyer_fee"]) == Decimal("0.25")
    assert Decimal(message["seller_fee"]) == Decimal("0.5")


async def test_one_order_sweeping_levels_gives_one_trade_each(gateway):
    async with open_client(gateway, "/ws/trades") as client:
        await client.receive()
        for price in ("50000.00", "50001.00", "50002.00"):
            await place(gateway, "maker", "sell", price, "0.001")
        await place(gateway, "taker", "buy", "50002.00", "0.003")
        messages = await client.collect(3)
    assert [m["price"] for m in messages] == ["50000.00", "50001.00", "50002.00"]
    assert [m["seq"] for m in messages] == [1, 2, 3]
    assert len({m["trade_id"] for m in messages}) == 3


# ----------------------------------------------------- orderbook_update


async def test_orderbook_change_notifies_with_spread(gateway):
    async with open_client(gateway, "/ws/markets/BTC-USDT") as client:
        await client.receive()
        assert (await client.receive())["type"] == "orderbook_snapshot"
        await place(gateway, "alice", "buy", "49999.00", "2.5")
        one_sided = await client.receive()
        await place(gateway, "bob", "sell", "50001.00", "3")
        two_sided = await client.receive()
    assert without_volatile(one_sided) == {
        "type": "orderbook_update", "symbol": BTC, "best_bid": "49999.00", "best_ask": None,
        "bid_quantity": "2.50000", "ask_quantity": "0.00000", "spread": None, "seq": 1,
    }
    assert without_volatile(two_sided) == {
        "type": "orderbook_update", "symbol": BTC, "best_bid": "49999.00",
        "best_ask": "50001.00", "bid_quantity": "2.50000", "ask_quantity": "3.00000",
        "spread": "2.00", "seq": 2,
    }


async def test_order_behind_the_top_does_not_notify(gateway):
    await place(gateway, "alice", "buy", "49999.00", "0.01")
    async with open_client(gateway, "/ws/markets/BTC-USDT") as client:
        await client.receive()
        snapshot = await client.receive()
        assert (snapshot["type"], snapshot["best_bid"]) == ("orderbook_snapshot", "49999.00")
        await place(gateway, "alice", "buy", "49000.00", "0.01")  # not the best bid
        await place(gateway, "alice", "buy", "49999.50", "0.01")  # the new best bid
        message = await client.receive()
    assert (message["best_bid"], message["seq"]) == ("49999.50", snapshot["seq"] + 1)


# ------------------------------------------------------ control replies


async def test_ping_echoes_id_of_every_kind(gateway):
    async with open_client(gateway) as client:
        for request_id in (1, 0, -5, "abc", "x" * 128, None):
            await client.send({"action": "ping", "id": request_id})
            assert await client.receive() == {"type": "pong", "id": request_id}
        await client.send({"action": "ping"})
        assert await client.receive() == {"type": "pong", "id": None}


def error(code, request_id=None, field=None):
    return {"type": "error", "id": request_id, "code": code, "field": field}


@pytest.mark.parametrize(("message", "expected"), [
    ("not json", error("invalid_json")),
    ("{", error("invalid_json")),
    (b"\xff\xfe", error("invalid_json")),
    ("[1, 2]", error("invalid_message")),
    ('"subscribe"', error("invalid_message")),
    ({"action": "ping", "id": True}, error("invalid_message")),
    ({"action": "ping", "id": 1.5}, error("invalid_message")),
    ({"action": "ping", "id": "x" * 129}, error("invalid_message")),
    ({"action": "ping", "id": 7, "extra": 1}, error("invalid_message", 7)),
    ({"action": "subscribe", "stream": "orders", "symbol": BTC, "id": 8},
     error("invalid_message", 8)),
    ({"action": "jump", "id": 1}, error("unknown_action", 1)),
    ({"stream": "trades", "id": 2}, error("unknown_action", 2)),
    ({"action": "subscribe", "stream": "candles", "id": 3}, error("unknown_stream", 3)),
    ({"action": "subscribe", "id": 4}, error("unknown_stream", 4)),
    ({"action": "subscribe", "stream": "orderbook", "id": 5}, error("missing_symbol", 5)),
    ({"action": "subscribe", "stream": "depth", "id": "d"}, error("missing_symbol", "d")),
    ({"action": "unsubscribe", "stream": "orderbook", "id": 6}, error("missing_symbol", 6)),
    ({"action": "subscribe", "stream": "trades", "symbol": "DOGE/USDT", "id": 7},
     error("unknown_symbol", 7, "symbol")),
    ({"action": "subscribe", "stream": "orderbook", "symbol": 42, "id": 8},
     error("unknown_symbol", 8, "symbol")),
    ({"action": "subscribe", "stream": "orders", "id": 9}, error("unauthorized", 9)),
    ({"action": "unsubscribe", "stream": "trades", "id": 10}, error("not_subscribed", 10)),
])
async def test_bad_request_gets_an_error_and_the_connection_lives(gateway, message, expected):
    async with open_client(gateway) as client:
        await client.send(message)
        reply = await client.receive()
        assert isinstance(reply.pop("message"), str)
        assert reply == expected
        await client.ping()
    assert (await stats(gateway))["protocol_errors"] == 1


async def test_already_subscribed_and_not_subscribed(gateway, token):
    async with open_client(gateway, token=token("alice")) as client:
        await client.subscribe("orders")
        await client.subscribe("trades", "BTC-USDT")
        again = await client.request(action="subscribe", stream="trades", symbol=BTC, id=1)
        assert (again["type"], again["id"], again["code"]) == ("error", 1, "already_subscribed")
        again = await client.request(action="subscribe", stream="orders", id=2)
        assert (again["code"], again["id"]) == ("already_subscribed", 2)
        await client.unsubscribe("trades", BTC)
        twice = await client.request(action="unsubscribe", stream="trades", symbol=BTC, id=3)
        assert (twice["type"], twice["id"], twice["code"]) == ("error", 3, "not_subscribed")
        other = await client.request(action="unsubscribe", stream="trades", symbol="ETH/USDT",
                                     id=4)
        assert other["code"] == "not_subscribed"
    assert (await stats(gateway))["protocol_errors"] == 4


async def test_too_many_subscriptions(start_gateway):
    gateway = await start_gateway(websocket={"max_subscriptions": 2})
    async with open_client(gateway) as client:
        await client.subscribe("trades")
        await client.subscribe("orderbook", BTC)
        third = await client.request(action="subscribe", stream="depth", symbol=BTC, id="3rd")
        assert (third["type"], third["id"], third["code"]) == (
            "error", "3rd", "too_many_subscriptions")
        assert (await stats(gateway))["subscriptions"]["depth"] == 0
        await client.unsubscribe("trades")
        reply = await client.request(action="subscribe", stream="depth", symbol=BTC, id="ok")
        assert reply["type"] == "subscribed"


async def test_message_too_large_is_answered_then_too_much_closes_with_1009(start_gateway):
    gateway = await start_gateway(websocket={"max_message_size": 100})
    async with open_client(gateway) as client:
        padded = '{"action": "ping", "id": 1}' + " " * 100
        await client.send(padded)
        reply = await client.receive()
        assert (reply["type"], reply["id"], reply["code"]) == ("error", None,
                                                              "message_too_large")
        exact = '{"action":"ping","id":2}'
        await client.send(exact + " " * (100 - len(exact)))  # exactly the limit
        assert await client.receive() == {"type": "pong", "id": 2}
        await client.send("x" * 1000)  # far past the limit
        with trio.fail_after(TIMEOUT), pytest.raises(ConnectionClosed) as closed:
            await client.ws.get_message()
    assert closed.value.reason.code == 1009


async def test_bad_input_never_disturbs_other_clients(gateway):
    garbage = ["", "null", "{}", "[]", "\x00", '{"action": null}', '{"action": {}}',
               '{"action": "subscribe", "stream": ["trades"]}', "9" * 5000, "{" * 500]
    async with open_client(gateway, "/ws/trades") as bystander:
        await bystander.receive()
        async with open_client(gateway) as vandal:
            for text in garbage:
                await vandal.send(text)
                assert (await vandal.receive())["type"] == "error"
            await vandal.ping()
        await place(gateway, "maker", "sell", "50000.00", "0.001")
        await place(gateway, "taker", "buy", "50000.00", "0.001")
        assert (await bystander.receive())["type"] == "trade_executed"
        await bystander.ping()
    async with open_client(gateway) as newcomer:
        await newcomer.ping()
