"""The top of book at once on subscribe (``orderbook_snapshot``), and a gapless stream after it.

A quiet market must show its best bid and ask right after ``subscribed``; with
orders flowing, a snapshot at ``seq`` s must be exactly the state that update s
left (as a client subscribed from the start saw it), and the updates that
follow must be s + 1, s + 2, ... with nothing missed or repeated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from wsclient import BTC, ETH, Client, Message, open_client, place

from gateway import Config, Fsync, JournalSettings, serve

SNAPSHOT_FIELDS = {"type", "symbol", "best_bid", "best_ask", "bid_quantity", "ask_quantity",
                   "spread", "seq"}


def state(message: Message) -> dict[str, Any]:
    """A top-of-book message without what differs between a snapshot and an update."""
    return {k: v for k, v in message.items() if k not in ("type", "timestamp")}


async def subscribe_by_message(client: Client, symbol: str = BTC) -> tuple[Message, Message]:
    await client.send({"action": "subscribe", "stream": "orderbook", "symbol": symbol, "id": 1})
    return await client.receive(), await client.receive()


@pytest.mark.parametrize("how", ["message", "endpoint"])
async def test_a_quiet_market_shows_its_top_of_book_at_once(gateway, how):
    await place(gateway, "alice", "buy", "49999.00", "0.10")
    await place(gateway, "bob", "buy", "49999.00", "0.15")
    await place(gateway, "bob", "buy", "49000.00", "1")
    await place(gateway, "carol", "sell", "50001.00", "0.3")
    await place(gateway, "dave", "sell", "3001.00", "0.5", ETH)  # another market
    path = "/ws" if how == "message" else "/ws/markets/BTC-USDT"
    async with open_client(gateway, path) as client:
        if how == "message":
            subscribed, snapshot = await subscribe_by_message(client)
        else:
            subscribed, snapshot = await client.receive(), await client.receive()
    assert subscribed["type"] == "subscribed"
    assert snapshot == {
        "type": "orderbook_snapshot", "symbol": BTC, "best_bid": "49999.00",
        "best_ask": "50001.00", "bid_quantity": "0.25000", "ask_quantity": "0.30000",
        "spread": "2.00", "seq": subscribed["seq"],
    }


async def test_snapshots_continue_without_a_gap_while_orders_flow(gateway):
    orders = 60
    marker = "45000.00"  # the last order's price: every client reads up to it

    async def flow() -> None:
        for i in range(orders):  # each a new best bid: each moves the top of book
            await place(gateway, "maker", "buy", f"{40000 + i}.00", "0.001")
            await trio.sleep(0)  # let subscribers in between orders
        await place(gateway, "maker", "buy", marker, "0.001")

    async def read_to_the_marker(client: Client) -> list[Message]:
        return await client.receive_until(lambda m: m.get("best_bid") == marker)

    async with open_client(gateway) as early:
        early_subscribed, early_snapshot = await subscribe_by_message(early)
        assert early_snapshot["seq"] == early_subscribed["seq"] == 0
        late: list[tuple[Message, Message, list[Message]]] = []

        async def one_late(path: str, after: trio.Event) -> None:
            await after.wait()
            async with open_client(gateway, path) as client:
                if path == "/ws":
                    subscribed, snapshot = await subscribe_by_message(client)
                else:
                    subscribed, snapshot = await client.receive(), await client.receive()
                done = snapshot["best_bid"] == marker  # subscribed after the last order
                late.append((subscribed, snapshot,
                             [] if done else await read_to_the_marker(client)))

        progress = [trio.Event() for _ in range(6)]
        async with trio.open_nursery() as nursery:
            for index, event in enumerate(progress):
                nursery.start_soon(one_late, "/ws" if index % 2 else "/ws/markets/BTC-USDT",
                                   event)
            nursery.start_soon(flow)
            seen: list[Message] = []
            while not seen or seen[-1]["best_bid"] != marker:
                seen.append(await early.receive())
                if len(seen) % 10 == 0:
                    progress[len(seen) // 10 - 1].set()
            for event in progress:
                event.set()

    assert [m["seq"] for m in seen] == list(range(1, orders + 2))
    by_seq = {m["seq"]: m for m in seen}
    assert {snapshot["seq"] for _, snapshot, _ in late} - {0, orders + 1}, (
        "no late client subscribed while orders flowed")
    for subscribed, snapshot, updates in late:
        assert set(snapshot) == SNAPSHOT_FIELDS
        assert snapshot["seq"] == subscribed["seq"]
        if snapshot["seq"]:
            assert state(snapshot) == state(by_seq[snapshot["seq"]])
        assert [u["seq"] for u in updates] == list(range(snapshot["seq"] + 1, orders + 2))
        assert updates == [by_seq[u["seq"]] for u in updates]


async def test_after_a_restart_the_snapshot_is_the_recovered_book(tmp_path: Path):
    config = Config(rest_port=0, ws_port=0, data_dir=tmp_path / "data",
                    journal=JournalSettings(fsync=Fsync.OFF))
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            gateway = await nursery.start(serve, config)
            await place(gateway, "alice", "buy", "49999.00", "0.25")
            await place(gateway, "bob", "sell", "50001.00", "0.3")
            nursery.cancel_scope.cancel()
        async with trio.open_nursery() as nursery:
            gateway = await nursery.start(serve, config)
            async with open_client(gateway, "/ws/markets/BTC-USDT") as client:
                await client.receive()
                snapshot = await client.receive()
            nursery.cancel_scope.cancel()
    assert (snapshot["best_bid"], snapshot["best_ask"], snapshot["spread"]) == (
        "49999.00", "50001.00", "2.00")
