"""Backpressure and liveness: a client that stops reading or stops answering pings is closed.

Seed scenario: PublishChannelFull. A stalled client must cost nobody else a message.

The heartbeat tests run on ``idle_clock`` (virtual time that passes only while
every task waits) with the journal off, so a pong is never late because the
machine was slow, and their 0.2 s intervals cost a few milliseconds.
"""

from __future__ import annotations

import json

import trio
import trio.testing
from wsclient import (
    PING,
    TEXT,
    TIMEOUT,
    RawClient,
    close_code,
    open_client,
    place,
    pong,
    stats,
    wait_for_stats,
)

from gateway import JournalSettings

SMALL_QUEUE = {"send_queue_size": 8}
NO_JOURNAL = JournalSettings(enabled=False)  # no thread: idle_clock's jumps stay exact


async def trades_until_stalled_client_dropped(gateway, extra_after: int = 50) -> int:
    """Trade one lot at a time until /stats shows the slow consumer gone, then some more."""
    await place(gateway, "maker", "sell", "50000.00", "100")
    count = 0
    with trio.fail_after(TIMEOUT * 2):
        while True:
            await place(gateway, "taker", "buy", "50000.00", "0.001")
            count += 1
            if count % 20 == 0 and (await stats(gateway))["slow_consumer_disconnects"]:
                break
    for _ in range(extra_after):
        await place(gateway, "taker", "buy", "50000.00", "0.001")
    return count + extra_after


async def test_stalled_client_is_dropped_while_others_get_everything(start_gateway):
    gateway = await start_gateway(websocket=SMALL_QUEUE)
    # A tiny receive buffer so that the stall reaches the server quickly.
    stalled = await RawClient.connect(gateway, "/ws/trades", receive_buffer=4096)
    received: list[int] = []
    done = trio.Event()
    total = 0

    async with open_client(gateway, "/ws/trades") as healthy:
        assert (await healthy.receive())["type"] == "subscribed"

        async def read_all() -> None:
            # Trades reach the socket before their REST answer, so the last one may
            # already be read when `done` is set: wake up now and then to look.
            with trio.fail_after(TIMEOUT * 3):
                while not (done.is_set() and len(received) >= total):
                    with trio.move_on_after(0.1):
                        received.append((await healthy.receive())["seq"])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_all)
            total = await trades_until_stalled_client_dropped(gateway)
            done.set()
        assert received == list(range(1, total + 1))
        report = await wait_for_stats(gateway, lambda s: s["connections"] == 1)
        assert report["slow_consumer_disconnects"] == 1
        assert report["subscriptions"]["trades"] == 1
        await healthy.ping()
    await stalled.aclose()


async def test_stalled_clients_are_closed_with_code_4008(start_gateway):
    """Each stalled client, once it reads again, finds whole frames and then close 4008.

    Several at once, because the failure this guards against (a send cut off
    mid-frame by the cancellation, so the close frame lands inside a text frame)
    depends on where each send was interrupted.
    """
    gateway = await start_gateway(websocket=SMALL_QUEUE)
    stalled = [await RawClient.connect(gateway, "/ws/trades", receive_buffer=4096)
               for _ in range(5)]
    outcomes: list[int | str] = []
    try:
        await place(gateway, "maker", "sell", "50000.00", "100")
        with trio.fail_after(TIMEOUT * 2):
            while (await stats(gateway))["slow_consumer_disconnects"] < len(stalled):
                for _ in range(20):
                    await place(gateway, "taker", "buy", "50000.00", "0.001")
        # Every task waits: the server is now stuck sending its close frames.
        await trio.testing.wait_all_tasks_blocked()
        for client in stalled:
            try:
                frames = await client.frames()
            except AssertionError as exc:  # a frame cut off by the close
                outcomes.append(str(exc))
                continue
            assert json.loads(frames[0][1])["type"] == "subscribed"
            assert all(opcode == TEXT for opcode, _ in frames[:-1])
            outcomes.append(close_code(frames))
    finally:
        for client in stalled:
            await client.aclose()
    assert outcomes == [4008] * len(stalled)


async def test_a_client_that_never_answers_pings_is_closed_with_4009(start_gateway, idle_clock):
    gateway = await start_gateway(websocket={"ping_interval": 0.2, "pong_timeout": 0.2},
                                  journal=NO_JOURNAL)
    silent = await RawClient.connect(gateway, "/ws")
    async with open_client(gateway, "/ws/trades") as lively:
        assert (await lively.receive())["type"] == "subscribed"
        try:
            frames = await silent.frames()  # pings, then the close frame
        finally:
            await silent.aclose()
        assert frames[0][0] == PING
        assert close_code(frames) == 4009
        report = await wait_for_stats(gateway, lambda s: s["heartbeat_timeouts"] == 1)
        assert report["connections"] == 1  # the lively one; the silent one is gone
        # The trio-websocket client answers pings: it outlives several intervals.
        await trio.sleep(1.0)
        await lively.ping()
        report = await stats(gateway)
    assert report["heartbeat_timeouts"] == 1
    assert report["connections"] == 1


async def test_a_client_that_stops_answering_pings_is_closed_with_4009(start_gateway,
                                                                       idle_clock):
    """Pings answered keep a quiet client open; once the pongs stop, it is closed."""
    gateway = await start_gateway(websocket={"ping_interval": 0.2, "pong_timeout": 0.2},
                                  journal=NO_JOURNAL)
    client = await RawClient.connect(gateway, "/ws/trades")  # subscribed; never sends a message
    try:
        pings = 0
        while pings < 4:  # 0.8 s: several intervals and pong timeouts
            opcode, payload = await client.next_frame()
            if opcode == PING:
                pings += 1
                await client.stream.send_all(pong(payload))
        assert (await stats(gateway))["heartbeat_timeouts"] == 0
        frames = await client.frames()  # no more pongs: pings, then the close frame
    finally:
        await client.aclose()
    assert close_code(frames) == 4009
    assert (await stats(gateway))["heartbeat_timeouts"] == 1


async def test_a_client_that_stops_reading_is_a_slow_consumer_not_a_dead_one(start_gateway,
                                                                             idle_clock):
    """Its pong cannot come: the ping is stuck behind data it does not read. That is 4008.

    Here the queue never fills (a few dozen KiB at most); the heartbeat finds the
    client's receive window shut (bytes unacknowledged) when the pong is late. On
    the idle clock no time passes while the trades are sent: the window is shut
    before the first ping, however slow the machine.
    """
    gateway = await start_gateway(websocket={"ping_interval": 0.3, "pong_timeout": 0.3},
                                  journal=NO_JOURNAL)
    stalled = await RawClient.connect(gateway, "/ws/trades", receive_buffer=4096)
    try:
        await place(gateway, "maker", "sell", "50000.00", "100")
        for _ in range(150):  # ~40 KiB of trades: more than the client's window
            await place(gateway, "taker", "buy", "50000.00", "0.001")
        report = await wait_for_stats(gateway, lambda s: s["slow_consumer_disconnects"] == 1)
    finally:
        await stalled.aclose()
    assert report["heartbeat_timeouts"] == 0
    assert report["messages_dropped"] == 0  # not a queue overflow: the heartbeat found it
