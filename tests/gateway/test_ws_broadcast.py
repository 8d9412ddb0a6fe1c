"""Fan-out: every subscriber gets every message of its channels, and only those.

Seed scenarios: BroadcastToAllClients, FilterByUserID, FilterBySymbol,
ConcurrentBroadcasting, Load_100Clients_1000Messages; plus ``seq`` rising by one.
"""

from __future__ import annotations

import json

import trio
from wsclient import BTC, ETH, TIMEOUT, RawClient, open_client, place, stats


async def test_broadcast_reaches_every_client(gateway):
    async with open_client(gateway, "/ws/trades") as a, open_client(gateway, "/ws/trades") as b, \
            open_client(gateway, "/ws/trades?symbol=BTC-USDT") as c:
        for client in (a, b, c):
            await client.receive()
        await place(gateway, "maker", "sell", "50000.00", "0.001")
        await place(gateway, "taker", "buy", "50000.00", "0.001")
        received = [await client.receive() for client in (a, b, c)]
    assert len({m["trade_id"] for m in received}) == 1
    assert [m["seq"] for m in received] == [1, 1, 1]


async def test_a_user_never_receives_another_users_order_updates(gateway, token):
    async with open_client(gateway, "/ws/orders", token("alice")) as alice, \
            open_client(gateway, "/ws/orders", token("bob")) as bob:
        await alice.receive()
        await bob.receive()
        await place(gateway, "alice", "sell", "50000.00", "0.001")
        await place(gateway, "carol", "buy", "50000.00", "0.001")  # fills alice's order
        await place(gateway, "bob", "buy", "40000.00", "0.001")
        alice_messages = await alice.collect(2)
        first_for_bob = await bob.receive()
    assert [(m["user_id"], m["action"]) for m in alice_messages] == [
        ("alice", "created"), ("alice", "filled")]
    # bob's own order came last on the same fan-out: nothing of alice's reached him first.
    assert (first_for_bob["user_id"], first_for_bob["action"], first_for_bob["seq"]) == (
        "bob", "created", 1)


async def test_two_connections_of_one_user_both_get_the_updates(gateway, token):
    async with open_client(gateway, "/ws/orders", token("alice")) as one, \
            open_client(gateway, token=token("alice")) as two:
        await one.receive()
        await two.subscribe("orders")
        await place(gateway, "alice", "buy", "40000.00", "0.001")
        assert (await one.receive())["action"] == "created"
        assert (await two.receive())["action"] == "created"


async def test_filter_by_symbol(gateway):
    async with open_client(gateway, "/ws/markets/ETH-USDT") as eth, \
            open_client(gateway, "/ws/markets/BTC-USDT") as btc:
        for client in (eth, btc):
            await client.receive()  # subscribed
            assert (await client.receive())["type"] == "orderbook_snapshot"
        await place(gateway, "alice", "buy", "49000.00", "0.001", BTC)
        await place(gateway, "alice", "buy", "3000.00", "0.01", ETH)
        assert (await eth.receive())["symbol"] == ETH  # the BTC change came first
        assert (await btc.receive())["symbol"] == BTC
        await place(gateway, "alice", "buy", "3001.00", "0.01", ETH)
        await place(gateway, "alice", "buy", "49001.00", "0.001", BTC)
        assert (await btc.receive())["best_bid"] == "49001.00"


async def test_concurrent_broadcasting_from_many_submitters(gateway, token):
    """Orders from many tasks at once: every subscriber sees the same sequence, seq 1..n."""
    users = [f"user{i}" for i in range(10)]
    per_user = 10
    total = len(users) * per_user

    async def submitter(user: str) -> None:
        for i in range(per_user):
            await place(gateway, user, "buy", f"{40000 + i}.00", "0.001")

    async with open_client(gateway, "/ws/markets/BTC-USDT") as watcher_a, \
            open_client(gateway, "/ws/markets/BTC-USDT") as watcher_b, \
            open_client(gateway, "/ws/orders", token("user3")) as user3:
        for client in (watcher_a, watcher_b, user3):
            await client.receive()
        for client in (watcher_a, watcher_b):
            assert (await client.receive())["type"] == "orderbook_snapshot"
        async with trio.open_nursery() as nursery:
            for user in users:
                nursery.start_soon(submitter, user)
        own = await user3.collect(per_user)
        assert {m["user_id"] for m in own} == {"user3"}
        assert [m["seq"] for m in own] == list(range(1, per_user + 1))
        # Top of book changes only when a better bid arrives; both watchers agree exactly.
        seen_a = await watcher_a.receive_until(lambda m: m["best_bid"] == "40009.00")
        seen_b = await watcher_b.receive_until(lambda m: m["best_bid"] == "40009.00")
    assert seen_a == seen_b
    assert [m["seq"] for m in seen_a] == list(range(1, len(seen_a) + 1))
    assert (await stats(gateway))["commands"] == total


async def test_seq_rises_by_exactly_one_per_channel(gateway, token):
    async with open_client(gateway, token=token("maker")) as client:
        await client.subscribe("orders")
        await client.subscribe("trades", BTC)
        await client.subscribe("orderbook", BTC)
        for i in range(5):
            await place(gateway, "maker", "sell", f"{50000 + i}.00", "0.001")
        await place(gateway, "taker", "buy", "50004.00", "0.005")
        # 5 created + 5 filled; 5 trades; orderbook: the snapshot at subscribe (seq 0),
        # then 1 (first ask) + 1 (book emptied)
        messages = await client.collect(18)
    by_type: dict[str, list[int]] = {}
    for message in messages:
        by_type.setdefault(message["type"], []).append(message["seq"])
    assert by_type == {"order_update": list(range(1, 11)), "trade_executed": [1, 2, 3, 4, 5],
                       "orderbook_snapshot": [0], "orderbook_update": [1, 2]}


async def test_100_clients_each_receive_1000_trades_in_order(gateway):
    clients, trades = 100, 1000
    all_subscribed = trio.Event()
    subscribed = 0
    results: dict[int, list[int]] = {}

    async def client_task(index: int) -> None:
        nonlocal subscribed
        # A hand-written client keeps the client side cheap: the load is the server's.
        client = await RawClient.connect(gateway, "/ws/trades")
        try:
            with trio.fail_after(TIMEOUT):
                (reply,) = await client.text_messages(1)
            assert json.loads(reply)["type"] == "subscribed"
            subscribed += 1
            if subscribed == clients:
                all_subscribed.set()
            with trio.fail_after(30):  # about 10 s on an idle machine
                texts = await client.text_messages(trades, pause=0.2)
            results[index] = [json.loads(text)["seq"] for text in texts]
        finally:
            await client.aclose()

    async def driver() -> None:
        for _ in range(trades):  # resting orders first: they make no trades
            await place(gateway, "maker", "sell", "50000.00", "0.001")
        with trio.fail_after(TIMEOUT):
            await all_subscribed.wait()
        for _ in range(trades // 100):  # each buy sweeps 100 makers: 100 trades
            await place(gateway, "taker", "buy", "50000.00", "0.1")

    async with trio.open_nursery() as nursery:
        for index in range(clients):
            nursery.start_soon(client_task, index)
        nursery.start_soon(driver)
    expected = list(range(1, trades + 1))
    assert len(results) == clients
    assert all(seqs == expected for seqs in results.values())
    report = await stats(gateway)
    assert report["messages_sent"]["trades"] == clients * trades
    assert report["messages_dropped"] == 0
