"""Soak: many connect, subscribe, disconnect cycles with traffic flowing; nothing may leak.

An in-process gateway (``gateway.serve``, loopback, ports 0, journal on with
fsync off in a temporary directory) and, in the same trio run, ``--clients``
client tasks doing ``--cycles`` cycles in all: open a WebSocket (a small raw
client, no library), subscribe to a stream, read the ``subscribed`` reply,
then leave: a clean close for three cycles in four, an abrupt TCP close for
the fourth. Meanwhile one task places crossing orders, so trades, top of book
and depth messages flow to whoever is subscribed.

Before (after a warm-up) and after (once the gateway reports no connection),
it records the number of trio tasks (the whole task tree), open file
descriptors (``/proc/self/fd``) and the RSS (``VmRSS``). Targets: tasks and
fds back to the baseline, RSS growth under 5%. Prints the figures and writes
``bench/results/soak.json``; exits 1 if a target is missed.

Run: ``nox -s soak`` or ``python -m bench.soak [--cycles N] [--clients N]``.
"""

from __future__ import annotations

import argparse
import base64
import gc
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio

from engine import PlaceOrder, Side
from gateway import (
    Config,
    EngineSettings,
    Fsync,
    Gateway,
    JournalSettings,
    LimitSettings,
    serve,
)
from gateway._frames import CLOSE, TEXT, FrameReader, client_frame

STREAMS = [
    {"action": "subscribe", "stream": "trades", "symbol": "BTC/USDT"},
    {"action": "subscribe", "stream": "orderbook", "symbol": "BTC/USDT"},
    {"action": "subscribe", "stream": "depth", "symbol": "BTC/USDT"},
    {"action": "subscribe", "stream": "trades"},
]
TIMEOUT = 10.0


# ---------------------------------------------------------------- measuring


def task_count() -> int:
    """Every task in this trio run, found by walking the tree from the root task."""
    count, stack = 0, [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        count += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


async def settle(gateway: Gateway) -> dict[str, int]:
    """Wait for the gateway to report no connection, let stragglers end, then measure."""
    async with httpx.AsyncClient(base_url=gateway.endpoints.rest_url, timeout=TIMEOUT) as http:
        with trio.fail_after(30):
            while (await http.get("/stats")).json()["connections"]:
                await trio.sleep(0.05)
    await trio.sleep(0.5)  # the REST connection's server task ends after its client closed
    gc.collect()
    return {"tasks": task_count(), "fds": fd_count(), "rss_kib": rss_kib()}


# ---------------------------------------------------------------- a raw client


class Frames:
    """The server's frames, one at a time, split by the project's frame codec."""

    def __init__(self, stream: trio.SocketStream, buffer: bytes) -> None:
        self.stream, self.reader = stream, FrameReader()
        self.reader.feed(buffer)

    async def next(self) -> tuple[int, bytes]:
        while (frame := self.reader.next_frame()) is None:
            chunk = await self.stream.receive_some(1 << 16)
            if not chunk:
                raise EOFError
            self.reader.feed(chunk)
        return frame[0], frame[2]


async def cycle(host: str, port: int, rng: random.Random) -> None:
    stream = await trio.open_tcp_stream(host, port)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        await stream.send_all(
            f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode())
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = await stream.receive_some(1 << 16)
            if not chunk:
                raise EOFError("closed during the handshake")
            received += chunk
        head, _, rest = received.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101 "):
            raise RuntimeError(f"handshake refused: {head[:80]!r}")
        frames = Frames(stream, rest)
        await stream.send_all(client_frame(TEXT, json.dumps(rng.choice(STREAMS)).encode(),
                                         key=os.urandom(4)))
        while True:
            opcode, payload = await frames.next()
            if opcode == TEXT and json.loads(payload)["type"] == "subscribed":
                break
        if rng.random() < 0.25:
            return  # abrupt: TCP closed under the connection
        await stream.send_all(client_frame(CLOSE, (1000).to_bytes(2, "big"), key=os.urandom(4)))
        while (await frames.next())[0] != CLOSE:
            pass
    finally:
        await stream.aclose()


# ---------------------------------------------------------------- the run


async def order_flow(gateway: Gateway, stop: trio.Event, placed: list[int]) -> None:
    """Pairs of orders that fill each other: a bid rests, then a sell takes it.

    Every pair makes order updates, a trade, top-of-book and depth changes, yet
    leaves the book as it was, so the engine's memory stays flat (closed orders
    are kept up to ``order_history``, reached during the warm-up) and what the
    RSS shows is the gateway's.
    """
    rng = random.Random(7)
    while not stop.is_set():
        price, quantity = rng.randrange(4_999_000, 5_001_000, 100), rng.randrange(1000, 3000)
        for side in (Side.BUY, Side.SELL):
            await gateway.submit(PlaceOrder(
                order_id=0, user_id=f"u{rng.randrange(20)}", symbol="BTC/USDT", side=side,
                price=price, quantity=quantity))
            placed[0] += 1
            await trio.sleep(0.002)


PROGRESS = {"cycles": 0}  # read when the run dies, to say how far it got


async def run_cycles(gateway: Gateway, cycles: int, clients: int, deadline: float) -> int:
    done = 0
    host, port = gateway.endpoints.host, gateway.endpoints.ws_port

    async def client(seed: int) -> None:
        nonlocal done
        rng = random.Random(seed)
        while done < cycles and trio.current_time() < deadline:
            done += 1
            mine = done
            PROGRESS["cycles"] += 1
            with trio.fail_after(TIMEOUT):
                await cycle(host, port, rng)
            if mine % 10_000 == 0:
                print(f"  {done} cycles, {task_count()} tasks, {fd_count()} fds, "
                      f"{rss_kib() / 1024:.1f} MiB", flush=True)

    async with trio.open_nursery() as nursery:
        for seed in range(clients):
            nursery.start_soon(client, seed)
    return done


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="soak-") as data_dir:
        unlimited = 10**9
        config = Config(
            rest_port=0, ws_port=0, data_dir=data_dir,
            journal=JournalSettings(fsync=Fsync.OFF),
            engine=EngineSettings(order_history=1_000),
            limits=LimitSettings(connections_per_second_per_ip=unlimited,
                                 connection_burst_per_ip=unlimited,
                                 max_connections_per_ip=unlimited),
        )
        async with trio.open_nursery() as nursery:
            gateway: Gateway = await nursery.start(serve, config)
            deadline = trio.current_time() + args.max_seconds
            stop, placed = trio.Event(), [0]
            async with trio.open_nursery() as flow:
                # The flow runs through the warm-up too, so that the baseline already
                # holds the engine's steady state (order history at its cap).
                if not args.no_flow:
                    flow.start_soon(order_flow, gateway, stop, placed)
                await run_cycles(gateway, args.warmup, args.clients, deadline)
                before = await settle(gateway)
                placed_before = placed[0]
                started = time.perf_counter()
                done = await run_cycles(gateway, args.cycles, args.clients, deadline)
                duration = time.perf_counter() - started
                after = await settle(gateway)
                stop.set()
            placed[0] -= placed_before
            stats = gateway.stats
            server = {"connections_total": stats.connections_total,
                      "messages_sent": dict(stats.messages_sent),
                      "slow_consumer_disconnects": stats.slow_consumer_disconnects,
                      "handshakes_rejected": stats.handshakes_rejected}
            nursery.cancel_scope.cancel()
    growth = 100.0 * (after["rss_kib"] - before["rss_kib"]) / before["rss_kib"]
    return {
        "cycles": done, "cycles_asked": args.cycles, "completed": done >= args.cycles,
        "warmup_cycles": args.warmup, "clients": args.clients, "order_flow": not args.no_flow,
        "duration_s": round(duration, 1), "cycles_per_s": round(done / duration, 1),
        "orders_placed": placed[0], "before": before, "after": after,
        "rss_growth_percent": round(growth, 2), "server": server,
        "targets": {
            "tasks_back_to_baseline": after["tasks"] == before["tasks"],
            "fds_back_to_baseline": after["fds"] == before["fds"],
            "rss_growth_under_5_percent": growth < 5.0,
        },
        "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                   time.gmtime()),
    }


def _leaves(exc: BaseException) -> list[str]:
    """Every leaf of an exception group as "Type at file:line (function): message", the
    ones raised through the gateway's code first (a client's error is usually an echo)."""
    if isinstance(exc, BaseExceptionGroup):
        found = [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
        return sorted(dict.fromkeys(found), key=lambda leaf: "gateway/" not in leaf)
    frames, tb = [], exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame.f_code)
        tb = tb.tb_next
    path = " <- ".join(f"{Path(c.co_filename).parent.name}/{Path(c.co_filename).name}"
                       f"({c.co_name})" for c in reversed(frames[-4:]))
    return [f"{type(exc).__name__}: {exc} [{path}]"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=100_000)
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--max-seconds", type=float, default=1800.0,
                        help="stop the cycles after this long (default 1800)")
    parser.add_argument("--no-flow", action="store_true",
                        help="no order flow: connections only, no stream traffic")
    parser.add_argument("--output", type=Path, default=Path("bench/results/soak.json"))
    args = parser.parse_args(argv)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        result = trio.run(soak, args)
    except Exception as exc:  # the gateway (or a client) died: record how far it got
        failure = {
            "crashed": True, "cycles": PROGRESS["cycles"], "cycles_asked": args.cycles,
            "warmup_cycles": args.warmup, "clients": args.clients,
            "order_flow": not args.no_flow,
            "duration_s": round(time.perf_counter() - started, 1),
            "errors": _leaves(exc), "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        }
        print(f"FAILED after {failure['cycles']} cycles (warm-up included):")
        for line in failure["errors"]:
            print("  ", line)
        args.output.write_text(json.dumps(failure, indent=2) + "\n")
        return 1
    before, after = result["before"], result["after"]
    print(f"{result['cycles']} cycles in {result['duration_s']} s "
          f"({result['cycles_per_s']}/s, {result['clients']} clients, "
          f"{result['orders_placed']} orders placed)")
    for name in ("tasks", "fds"):
        print(f"{name}: {before[name]} before, {after[name]} after")
    print(f"RSS: {before['rss_kib'] / 1024:.1f} MiB before, {after['rss_kib'] / 1024:.1f} MiB "
          f"after ({result['rss_growth_percent']:+.2f}%)")
    print("targets:", result["targets"])
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["completed"] and all(result["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
