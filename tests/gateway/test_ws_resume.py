"""Resume from history: ``subscribe`` with ``since`` continues a channel without a gap.

The contract (docs/protocol.md, "Resume after a reconnect"): every channel is
numbered whether or not anyone listens; a client that gives the epoch and the
last seq it received gets every message after it, then the live stream; when
the server cannot (another epoch, history gone, a seq from the future) it says
``resume_unavailable`` and subscribes nothing. The epoch and the numbering
survive a restart on the same data directory, and history is refilled from
the journal.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio
from wsclient import BTC, Client, open_client, place, stats

from gateway import Config, Fsync, Gateway, HistorySettings, JournalSettings, serve


async def trade(gateway: Gateway, price: str = "50000.00") -> None:
    await place(gateway, "maker", "sell", price, "0.001")
    await place(gateway, "taker", "buy", price, "0.001")


async def resume(client: Client, stream: str, symbol: str | None, epoch: str, seq: int,
                 request_id: int = 9) -> dict:
    fields = {"symbol": symbol} if symbol else {}
    return await client.request(action="subscribe", stream=stream, id=request_id,
                                since={"epoch": epoch, "seq": seq}, **fields)


@asynccontextmanager
async def running(config: Config) -> AsyncIterator[Gateway]:
    """A gateway in its own nursery, cancelled (as Ctrl-C would) on exit."""
    async with trio.open_nursery() as nursery:
        gateway: Gateway = await nursery.start(serve, config)
        try:
            yield gateway
        finally:
            nursery.cancel_scope.cancel()


def config_in(path: Path, **overrides: object) -> Config:
    return attrs.evolve(Config(rest_port=0, ws_port=0, data_dir=path,
                               journal=JournalSettings(fsync=Fsync.OFF)), **overrides)


# ------------------------------------------------------------ one process


async def test_a_resumed_subscription_gets_what_it_missed_then_the_live_stream(gateway):
    async with open_client(gateway) as client:
        reply = await client.subscribe("trades", BTC)
        epoch = reply["epoch"]
        await trade(gateway, "50000.00")
        last = (await client.receive())["seq"]
    for price in ("50001.00", "50002.00", "50003.00"):  # while the client is away
        await trade(gateway, price)
    async with open_client(gateway) as client:
        reply = await resume(client, "trades", BTC, epoch, last)
        assert reply == {"type": "subscribed", "id": 9, "stream": "trades", "symbol": BTC,
                         "epoch": epoch, "seq": last, "resumed": True}
        missed = await client.collect(3)
        await trade(gateway, "50004.00")
        live = await client.receive()
    assert [(m["seq"], m["price"]) for m in missed] == [
        (last + 1, "50001.00"), (last + 2, "50002.00"), (last + 3, "50003.00")]
    assert (live["seq"], live["price"]) == (last + 4, "50004.00")


async def test_resuming_an_up_to_date_channel_sends_nothing_before_the_live_stream(gateway):
    async with open_client(gateway) as client:
        reply = await client.subscribe("trades", BTC)
        async with open_client(gateway) as again:
            resumed = await resume(again, "trades", BTC, reply["epoch"], reply["seq"])
            assert resumed["resumed"] is True
            await trade(gateway)
            assert (await again.receive())["seq"] == reply["seq"] + 1


async def test_a_resumed_depth_subscription_keeps_the_clients_book_exact(gateway):
    await place(gateway, "alice", "buy", "49990.00", "0.01")
    async with open_client(gateway) as client:
        reply = await client.subscribe("depth", BTC)
        snapshot = await client.receive()
    await place(gateway, "alice", "buy", "49995.00", "0.02")  # missed: a new best bid
    await place(gateway, "bob", "sell", "50010.00", "0.03")  # missed: a first ask
    async with open_client(gateway) as client:
        await resume(client, "depth", BTC, reply["epoch"], snapshot["seq"])
        updates = await client.collect(2)  # no snapshot: straight to the missed updates
        await place(gateway, "bob", "sell", "50005.00", "0.01")
        updates.append(await client.receive())
    assert [u["type"] for u in updates] == ["depth_update"] * 3
    assert [u["seq"] for u in updates] == [snapshot["seq"] + i for i in (1, 2, 3)]
    book = {"bids": dict(snapshot["bids"]), "asks": dict(snapshot["asks"])}
    for update in updates:
        for side in ("bids", "asks"):
            for price, quantity in update[side]:
                if quantity == "0":
                    book[side].pop(price, None)
                else:
                    book[side][price] = quantity
    assert book == {"bids": {"49995.00": "0.02000", "49990.00": "0.01000"},
                    "asks": {"50005.00": "0.01000", "50010.00": "0.03000"}}


async def test_a_resumed_orderbook_subscription_gets_no_snapshot(gateway):
    async with open_client(gateway) as client:
        reply = await client.subscribe("orderbook", BTC)
        snapshot = await client.receive()
    await place(gateway, "alice", "buy", "49999.00", "0.01")
    async with open_client(gateway) as client:
        await resume(client, "orderbook", BTC, reply["epoch"], snapshot["seq"])
        update = await client.receive()
    assert (update["type"], update["seq"], update["best_bid"]) == (
        "orderbook_update", snapshot["seq"] + 1, "49999.00")


async def test_orders_resume_per_user_and_never_show_another_users_history(gateway, token):
    async with open_client(gateway, token=token("alice")) as alice:
        reply = await alice.subscribe("orders")
    await place(gateway, "alice", "buy", "49000.00", "0.01")
    await place(gateway, "bob", "buy", "48000.00", "0.01")
    await place(gateway, "alice", "buy", "47000.00", "0.01")
    async with open_client(gateway, token=token("alice")) as alice:
        await resume(alice, "orders", None, reply["epoch"], 0)
        missed = await alice.collect(2)
    assert [(m["user_id"], m["price"], m["seq"]) for m in missed] == [
        ("alice", "49000.00", 1), ("alice", "47000.00", 2)]
    async with open_client(gateway, token=token("bob")) as bob:  # bob's channel, from 0
        await resume(bob, "orders", None, reply["epoch"], 0)
        [mine] = await bob.collect(1)
        await bob.send({"action": "ping", "id": "end"})
        assert await bob.receive() == {"type": "pong", "id": "end"}  # nothing of alice's
    assert (mine["user_id"], mine["seq"]) == ("bob", 1)


async def test_resume_unavailable_names_the_reason_and_subscribes_nothing(start_gateway):
    gateway = await start_gateway(history=HistorySettings(messages=2))
    async with open_client(gateway) as client:
        epoch = (await client.subscribe("trades", BTC))["epoch"]
        await client.unsubscribe("trades", BTC)
        for price in ("50001.00", "50002.00", "50003.00"):
            await trade(gateway, price)
        cases = [
            ({"epoch": "0" * 16, "seq": 0}, f"the current epoch is {epoch}"),
            ({"epoch": epoch, "seq": 0}, "after seq 0 are no longer held"),  # 2 of 3 kept
            ({"epoch": epoch, "seq": 4}, "after seq 4"),  # ahead of the channel (at 3)
        ]
        for since, words in cases:
            await client.send({"action": "subscribe", "stream": "trades", "symbol": BTC,
                               "id": "r", "since": since})
            error = await client.receive()
            assert (error["type"], error["code"], error["field"], error["id"]) == (
                "error", "resume_unavailable", "since", "r")
            assert words in error["message"], error["message"]
            assert "subscribe again without since" in error["message"]
        assert (await stats(gateway))["subscriptions"]["trades"] == 0
        fresh = await client.subscribe("trades", BTC)  # as the error says
        assert (fresh["seq"], "resumed" in fresh) == (3, False)
        resumed = await resume(client, "trades", None, epoch, 1, request_id=10)  # all symbols
        assert resumed["resumed"] is True
        assert [m["seq"] for m in await client.collect(2)] == [2, 3]


async def test_a_malformed_since_is_an_invalid_message(gateway):
    async with open_client(gateway) as client:
        for since in ({"epoch": "e"}, {"epoch": 1, "seq": 0}, {"epoch": "e", "seq": -1},
                      {"epoch": "e", "seq": True}, "e:1", {"epoch": "e", "seq": 0, "x": 1}):
            await client.send({"action": "subscribe", "stream": "trades", "id": 1,
                               "since": since})
            error = await client.receive()
            assert (error["code"], error["field"]) == ("invalid_message", "since"), since
        await client.send({"action": "unsubscribe", "stream": "trades", "id": 2,
                           "since": {"epoch": "e", "seq": 0}})
        assert (await client.receive())["code"] == "invalid_message"


# ------------------------------------------------------- across restarts


async def test_epoch_numbering_and_history_survive_a_restart(tmp_path):
    config = config_in(tmp_path / "data")
    async with running(config) as gateway:
        async with open_client(gateway) as client:
            reply = await client.subscribe("trades", BTC)
            await trade(gateway, "50000.00")
            last = (await client.receive())["seq"]
        await trade(gateway, "50001.00")  # missed, then the server stops
    async with running(config) as gateway:
        assert gateway.epoch == reply["epoch"]
        await trade(gateway, "50002.00")
        async with open_client(gateway) as client:
            await resume(client, "trades", BTC, reply["epoch"], last)
            missed = await client.collect(2)
    assert [(m["seq"], m["price"]) for m in missed] == [
        (last + 1, "50001.00"), (last + 2, "50002.00")]


async def test_numbering_continues_from_a_snapshot_after_a_restart(tmp_path):
    config = config_in(tmp_path / "data", journal=JournalSettings(
        fsync=Fsync.OFF, snapshot_every=3))
    async with running(config) as gateway:
        for price in ("50000.00", "50001.00", "50002.00", "50003.00"):
            await trade(gateway, price)  # 8 commands: snapshots were taken
        async with open_client(gateway) as client:
            before = await client.subscribe("trades", BTC)
        with trio.fail_after(5):
            while not list((tmp_path / "data" / "journal").glob("snapshot-*.bin")):
                await trio.sleep(0.01)
    assert before["seq"] == 4
    streams = list((tmp_path / "data" / "journal").glob("streams-*.bin"))
    assert len(streams) == 1  # beside the newest snapshot only
    async with running(config) as gateway, open_client(gateway) as client:
        after = await client.subscribe("trades", BTC)
        await trade(gateway, "50004.00")
        message = await client.receive()
    assert (after["epoch"], after["seq"], message["seq"]) == (before["epoch"], 4, 5)


async def test_a_snapshot_without_its_stream_state_starts_a_new_epoch(tmp_path):
    config = config_in(tmp_path / "data", journal=JournalSettings(
        fsync=Fsync.OFF, snapshot_every=2))
    async with running(config) as gateway:
        old_epoch = gateway.epoch
        await trade(gateway)
        await trade(gateway)
        with trio.fail_after(5):
            while not list((tmp_path / "data" / "journal").glob("streams-*.bin")):
                await trio.sleep(0.01)
    for path in (tmp_path / "data" / "journal").glob("streams-*.bin"):
        path.unlink()  # as a data directory from before this version looks
    async with running(config) as gateway:
        assert gateway.epoch != old_epoch
        async with open_client(gateway) as client:
            await client.send({"action": "subscribe", "stream": "trades", "symbol": BTC,
                               "id": 1, "since": {"epoch": old_epoch, "seq": 1}})
            assert (await client.receive())["code"] == "resume_unavailable"


async def test_a_new_data_directory_or_no_journal_means_a_new_epoch(tmp_path):
    epochs = []
    for config in (config_in(tmp_path / "a"), config_in(tmp_path / "b"),
                   config_in(tmp_path / "c", journal=JournalSettings(enabled=False)),
                   config_in(tmp_path / "c", journal=JournalSettings(enabled=False))):
        async with running(config) as gateway:
            epochs.append(gateway.epoch)
    assert len(set(epochs)) == 4
