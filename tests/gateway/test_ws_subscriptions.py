"""Subscriptions: by message on ``/ws``, by the dedicated endpoints; unsubscribe; several.

Seed scenarios: SubscribeToOrders, SubscribeToTrades, SubscribeToOrderBook,
UnsubscribeFromStream, MultipleSubscriptions, Reconnection_HistoryNotReplayed (without
``since``; resuming with it: ``test_ws_resume.py``).
"""

from __future__ import annotations

import pytest
from wsclient import BTC, ETH, open_client, place, stats


def without_epoch(reply: dict) -> dict:
    """The reply minus its ``epoch``, which must be one: 16 hex characters."""
    reply = dict(reply)
    epoch = reply.pop("epoch")
    assert len(epoch) == 16
    int(epoch, 16)
    return reply


async def trade(gateway, symbol=BTC, price="50000.00", quantity="0.001"):
    """One trade between ``maker`` (seller) and ``taker`` (buyer)."""
    await place(gateway, "maker", "sell", price, quantity, symbol)
    await place(gateway, "taker", "buy", price, quantity, symbol)


# ------------------------------------------------------- by message on /ws


async def test_subscribe_to_own_orders(gateway, token):
    async with open_client(gateway, token=token("alice")) as client:
        reply = await client.request(action="subscribe", stream="orders", id=1)
        assert without_epoch(reply) == {"type": "subscribed", "id": 1, "stream": "orders", "seq": 0}
        await place(gateway, "alice", "buy", "49000.00", "0.01")
        update = await client.receive()
    assert update["type"] == "order_update"
    assert update["user_id"] == "alice"
    assert update["action"] == "created"
    assert update["seq"] == 1


async def test_subscribe_to_trades_of_one_symbol(gateway):
    async with open_client(gateway) as client:
        reply = await client.request(action="subscribe", stream="trades", symbol=BTC, id="t")
        assert without_epoch(reply) == {
            "type": "subscribed", "id": "t", "stream": "trades", "symbol": BTC, "seq": 0}
        await trade(gateway, ETH, "3000.00", "0.01")
        await trade(gateway, BTC)
        message = await client.receive()
    assert message["type"] == "trade_executed"
    assert message["symbol"] == BTC
    assert message["seq"] == 1


async def test_subscribe_to_trades_of_every_symbol(gateway):
    async with open_client(gateway) as client:
        reply = await client.request(action="subscribe", stream="trades", id=2)
        assert without_epoch(reply) == {
            "type": "subscribed", "id": 2, "stream": "trades", "symbol": None, "seq": 0}
        await trade(gateway, ETH, "3000.00", "0.01")
        await trade(gateway, BTC)
        messages = await client.collect(2)
    assert [(m["symbol"], m["seq"]) for m in messages] == [(ETH, 1), (BTC, 2)]


async def test_subscribe_to_orderbook(gateway):
    async with open_client(gateway) as client:
        reply = await client.request(action="subscribe", stream="orderbook", symbol=BTC, id=3)
        assert without_epoch(reply) == {
            "type": "subscribed", "id": 3, "stream": "orderbook", "symbol": BTC, "seq": 0}
        assert await client.receive() == {  # the top of book at once: an empty book
            "type": "orderbook_snapshot", "symbol": BTC, "best_bid": None, "best_ask": None,
            "bid_quantity": "0.00000", "ask_quantity": "0.00000", "spread": None, "seq": 0}
        await place(gateway, "alice", "buy", "49999.00", "0.01")
        message = await client.receive()
    assert message["type"] == "orderbook_update"
    assert message["best_bid"] == "49999.00"
    assert message["seq"] == 1


async def test_subscribe_to_depth_gets_a_snapshot_then_updates(gateway):
    await place(gateway, "alice", "buy", "49999.00", "0.01")
    async with open_client(gateway) as client:
        reply = await client.request(action="subscribe", stream="depth", symbol=BTC, id=4)
        assert without_epoch(reply) == {
            "type": "subscribed", "id": 4, "stream": "depth", "symbol": BTC, "seq": 1}
        snapshot = await client.receive()
        assert snapshot["type"] == "depth_snapshot"
        assert snapshot["seq"] == 1
        assert snapshot["bids"] == [["49999.00", "0.01000"]]
        await place(gateway, "bob", "sell", "50001.00", "0.02")
        update = await client.receive()
    assert update["type"] == "depth_update"
    assert update["seq"] == 2
    assert update["asks"] == [["50001.00", "0.02000"]]
    assert update["bids"] == []


@pytest.mark.parametrize("spelling", ["btc-usdt", "BTC-USDT", "btc/usdt"])
async def test_symbols_are_normalized(gateway, spelling):
    async with open_client(gateway) as client:
        reply = await client.subscribe("orderbook", spelling)
    assert reply["symbol"] == BTC


# ---------------------------------------------------- dedicated endpoints


async def test_orders_endpoint_subscribes_to_own_orders(gateway, token):
    async with open_client(gateway, "/ws/orders", token("alice")) as client:
        assert without_epoch(await client.receive()) == {
            "type": "subscribed", "id": None, "stream": "orders", "seq": 0}
        await place(gateway, "alice", "sell", "51000.00", "0.01")
        update = await client.receive()
    assert (update["type"], update["action"], update["user_id"]) == (
        "order_update", "created", "alice")


@pytest.mark.parametrize(("path", "symbol"), [
    ("/ws/trades", None),
    ("/ws/trades?symbol=BTC/USDT", BTC),
    ("/ws/trades?symbol=BTC-USDT", BTC),
    ("/ws/trades?symbol=btc-usdt", BTC),
])
async def test_trades_endpoint(gateway, path, symbol):
    async with open_client(gateway, path) as client:
        assert without_epoch(await client.receive()) == {
            "type": "subscribed", "id": None, "stream": "trades", "symbol": symbol, "seq": 0}
        await trade(gateway, ETH, "3000.00", "0.01")
        await trade(gateway, BTC)
        first = await client.receive()
    assert first["type"] == "trade_executed"
    assert first["symbol"] == (ETH if symbol is None else BTC)


@pytest.mark.parametrize("path", [
    "/ws/markets/BTC/USDT", "/ws/markets/BTC-USDT", "/ws/markets/BTC%2FUSDT",
    "/ws/markets/btc-usdt",
])
async def test_markets_endpoint_streams_the_top_of_book(gateway, path):
    async with open_client(gateway, path) as client:
        assert without_epoch(await client.receive()) == {
            "type": "subscribed", "id": None, "stream": "orderbook", "symbol": BTC, "seq": 0}
        assert (await client.receive())["type"] == "orderbook_snapshot"
        await place(gateway, "alice", "buy", "3000.00", "0.01", ETH)
        await place(gateway, "alice", "buy", "49000.00", "0.01")
        message = await client.receive()
    assert message["type"] == "orderbook_update"
    assert message["symbol"] == BTC


async def test_dedicated_endpoint_accepts_more_subscriptions_by_message(gateway):
    async with open_client(gateway, "/ws/trades?symbol=BTC-USDT") as client:
        await client.receive()
        await client.subscribe("orderbook", BTC)
        assert (await stats(gateway))["subscriptions"] == {
            "orders": 0, "trades": 1, "orderbook": 1, "depth": 0}


# ------------------------------------------------------------ unsubscribe


async def test_unsubscribe_stops_the_stream(gateway):
    async with open_client(gateway) as client:
        await client.subscribe("trades", BTC)
        await client.subscribe("trades", ETH)  # the barrier: same fan-out, later event
        await trade(gateway, BTC)
        assert (await client.receive())["symbol"] == BTC
        reply = await client.request(action="unsubscribe", stream="trades", symbol=BTC, id=9)
        assert reply == {"type": "unsubscribed", "id": 9, "stream": "trades", "symbol": BTC}
        await trade(gateway, BTC)
        await trade(gateway, ETH, "3000.00", "0.01")
        # The BTC trade came first; had it been delivered, it would be first here.
        assert (await client.receive())["symbol"] == ETH
    assert (await stats(gateway))["subscriptions"]["trades"] == 0


async def test_unsubscribe_orders(gateway, token):
    async with open_client(gateway, "/ws/orders", token("alice")) as client:
        await client.receive()
        reply = await client.request(action="unsubscribe", stream="orders", id="u")
        assert reply == {"type": "unsubscribed", "id": "u", "stream": "orders"}
        await place(gateway, "alice", "buy", "49000.00", "0.01")
        assert await client.request(action="ping", id="p") == {"type": "pong", "id": "p"}
        assert (await stats(gateway))["subscriptions"]["orders"] == 0


async def test_unsubscribe_then_subscribe_again(gateway):
    async with open_client(gateway) as client:
        await client.subscribe("orderbook", BTC)
        await client.unsubscribe("orderbook", BTC)
        reply = await client.subscribe("orderbook", BTC)
        assert reply["seq"] == 0
        assert (await client.receive())["type"] == "orderbook_snapshot"  # of this subscription
        await place(gateway, "alice", "buy", "49000.00", "0.01")
        assert (await client.receive())["seq"] == 1


# ---------------------------------------------------------- several at once


async def test_multiple_subscriptions_on_one_connection(gateway, token):
    async with open_client(gateway, token=token("taker")) as client:
        await client.subscribe("orders")
        await client.subscribe("trades", BTC)
        await client.subscribe("orderbook", BTC)
        await client.subscribe("depth", BTC)
        assert (await client.receive())["type"] == "depth_snapshot"
        await place(gateway, "maker", "sell", "50000.00", "0.002")
        await place(gateway, "taker", "buy", "50000.00", "0.001")
        messages = await client.collect(7)
        assert (await stats(gateway))["subscriptions"] == {
            "orders": 1, "trades": 1, "orderbook": 1, "depth": 1}
    # maker's sell: orderbook + depth; taker's buy: created and filled, the trade,
    # orderbook + depth. Streams are independent, so only the multiset is fixed.
    assert sorted(m["type"] for m in messages) == [
        "depth_update", "depth_update", "order_update", "order_update", "orderbook_update",
        "orderbook_update", "trade_executed"]
    assert [m["action"] for m in messages if m["type"] == "order_update"] == [
        "created", "filled"]


async def test_same_stream_for_two_symbols_and_all_symbols(gateway):
    async with open_client(gateway) as client:
        await client.subscribe("trades", BTC)
        await client.subscribe("trades")
        await trade(gateway, BTC)
        messages = await client.collect(2)
    # One trade, delivered once per channel, each with its channel's seq.
    assert [m["trade_id"] for m in messages] == [messages[0]["trade_id"]] * 2
    assert [m["seq"] for m in messages] == [1, 1]


# ------------------------------------------------------------ reconnection


async def test_reconnecting_without_since_starts_at_the_current_seq(gateway):
    async with open_client(gateway, "/ws/trades") as client:
        await client.receive()
        await trade(gateway, BTC, "50000.00")
        assert (await client.receive())["seq"] == 1
    await trade(gateway, BTC, "50001.00")  # while nobody listens: still numbered
    async with open_client(gateway, "/ws/trades") as client:
        reply = await client.receive()
        assert reply["seq"] == 2  # nothing replayed without since (test_ws_resume.py)
        await trade(gateway, BTC, "50002.00")
        message = await client.receive()
    assert (message["price"], message["seq"]) == ("50002.00", 3)


async def test_a_new_subscriber_joins_a_running_channel_at_its_current_seq(gateway):
    async with open_client(gateway, "/ws/trades") as first:
        await first.receive()
        await trade(gateway)
        await trade(gateway)
        assert [m["seq"] for m in await first.collect(2)] == [1, 2]
        async with open_client(gateway, "/ws/trades") as second:
            reply = await second.receive()
            assert reply["seq"] == 2  # the seq of the last message, which it does not get
            await trade(gateway, price="50003.00")
            message = await second.receive()
            assert (message["price"], message["seq"]) == ("50003.00", 3)
            assert (await first.receive())["seq"] == 3
