"""A short soak: connect, subscribe, disconnect cycles with orders flowing; nothing leaks.

The full run (100,000 cycles) is ``nox -s soak`` (``bench/soak.py``). Here,
2,000 cycles after a warm-up: afterwards the trio task tree and the open file
descriptors are back to their baseline and the RSS grew by less than 5%.
"""

from __future__ import annotations

import gc
import json
import os
import random

import trio
import trio.testing
from wsclient import CLOSE, TEXT, TIMEOUT, RawClient, wait_for_stats

from bench.soak import rss_kib, task_count
from engine import PlaceOrder, Side
from gateway import Gateway, LimitSettings

CYCLES, WARMUP, CLIENTS = 2_000, 200, 4
SUBSCRIPTIONS = [
    {"action": "subscribe", "stream": "trades", "symbol": "BTC/USDT"},
    {"action": "subscribe", "stream": "orderbook", "symbol": "BTC/USDT"},
    {"action": "subscribe", "stream": "depth", "symbol": "BTC/USDT"},
    {"action": "subscribe", "stream": "orders"},
]


async def measure(gateway: Gateway) -> tuple[int, int, int]:
    await wait_for_stats(gateway, lambda s: s["connections"] == 0)
    # The /stats request's server task ends after its client left: once every task
    # waits, it has.
    await trio.testing.wait_all_tasks_blocked()
    gc.collect()
    return task_count(), len(os.listdir("/proc/self/fd")), rss_kib()


async def test_connect_subscribe_disconnect_cycles_leak_nothing(start_gateway, token, ws_frame):
    unlimited = 10**9
    gateway = await start_gateway(limits=LimitSettings(
        connections_per_second_per_ip=unlimited, connection_burst_per_ip=unlimited,
        max_connections_per_user=unlimited))
    path = f"/ws?token={token('trader-1')}"
    done = 0

    async def cycles(count: int, seed: int) -> None:
        nonlocal done
        rng = random.Random(seed)
        while done < count:
            done += 1
            client = await RawClient.connect(gateway, path)
            try:
                subscribe = json.dumps(rng.choice(SUBSCRIPTIONS)).encode()
                await client.stream.send_all(ws_frame(TEXT, subscribe))
                with trio.fail_after(TIMEOUT):
                    assert json.loads((await client.text_messages(1))[0])["type"] == "subscribed"
                if rng.random() < 0.25:
                    continue  # abrupt: TCP closed under the connection
                await client.stream.send_all(ws_frame(CLOSE, (1000).to_bytes(2, "big")))
                frames = await client.frames()
                assert frames[-1][0] == CLOSE
            finally:
                await client.aclose()

    async def run(count: int) -> None:
        nonlocal done
        done = 0
        async with trio.open_nursery() as nursery:
            for seed in range(CLIENTS):
                nursery.start_soon(cycles, count, seed)

    submitted = 0

    async def order_flow(stop: trio.Event) -> None:
        nonlocal submitted
        rng = random.Random(3)
        while not stop.is_set():
            submitted += 1
            await gateway.submit(PlaceOrder(
                order_id=0, user_id=rng.choice(["trader-1", "trader-2", "trader-3"]),
                symbol="BTC/USDT", side=rng.choice([Side.BUY, Side.SELL]),
                price=rng.randrange(4_999_000, 5_001_000, 100),
                quantity=rng.randrange(1000, 3000)))
            await trio.sleep(0.002)

    await run(WARMUP)
    tasks, fds, rss = await measure(gateway)
    with trio.fail_after(60):
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(order_flow, stop)
            await run(CYCLES)
            stop.set()
    after = await measure(gateway)
    assert after[:2] == (tasks, fds), {"before": (tasks, fds, rss), "after": after}
    assert (after[2] - rss) / rss < 0.05, {"rss_kib_before": rss, "rss_kib_after": after[2]}
    report = await wait_for_stats(gateway, lambda s: s["connections"] == 0)
    assert report["connections_total"] == WARMUP + CYCLES
    # Traffic did flow while the connections came and went.
    assert submitted > 100
    assert sum(report["messages_sent"].values()) > 0
