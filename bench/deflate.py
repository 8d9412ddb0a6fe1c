"""permessage-deflate: what compressing each message once costs, and the bytes it saves.

Run it with ``nox -s bench_deflate``, or ``python -m bench.deflate`` from the
repository root in any Python >= 3.11 environment holding the project
(``--help`` for the options). ``bench/README.md``, section "permessage-deflate",
says what is measured and how to read it.

Rules of this module:

* In process, no sockets: the messages are real. An :class:`engine.Engine`
  applies a seeded order flow (the journal benchmark's shape: BTC/USDT limit
  orders within 0.2% of 50 000, a quarter of them cancels of earlier ones) and
  the hub's own handlers (``gateway/_hub.py``) turn the events into messages
  and fan them out. The subscribers are stubs whose ``offer`` only counts, so
  the time measured is the hub's: encoding, framing, compressing, handing out.
* Bytes: every stream message of the flow, and depth snapshots of the book the
  flow left at 10, 50 and 200 levels, plain and as a deflate client receives it
  (compressed, or plain when compressing would not shrink it).
* CPU (thread CPU time, not wall time: a shared machine's other load does not
  count): the same batches fanned out to ``--subscribers`` stubs on each public
  channel (depth, orderbook, trades of BTC/USDT, trades of every market) and one
  per user on its orders channel, all plain, all deflate, and half and half.
  Rounds interleave the three, the order rotated; medians over rounds. The
  extra cost of deflate is reported per compressed message and per delivery.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import random
import statistics
import sys
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from engine import (
    CancelOrder,
    Engine,
    OrderAccepted,
    PlaceOrder,
    Side,
)
from gateway._deflate import LEVEL, MessageDeflater
from gateway._history import History
from gateway._hub import Hub
from gateway._messages import DepthBook
from gateway._protocol import Stream
from gateway._stats import Stats
from gateway._streams import Item, Numbered, StreamState

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "bench" / "results" / "deflate.json"
WINDOW = 15  # what browsers leave the server
DEPTH_LEVELS = 10
CONFIGS = ("plain", "deflate", "mixed")
SNAPSHOT_LEVELS = (10, 50, 200)
_encode = msgspec.json.Encoder().encode


class Stub:
    """A subscriber that takes every frame at once and counts bytes."""

    __slots__ = ("bytes", "deflate_window_bits", "frames")

    def __init__(self, bits: int) -> None:
        self.deflate_window_bits = bits
        self.bytes = 0
        self.frames = 0

    def offer(self, frames: bytes, count: int = 1) -> bool:
        self.bytes += len(frames)
        self.frames += count
        return True

    def close_soon(self, code: int, reason: str) -> None:
        raise AssertionError("a stub never overflows")


def order_flow(count: int, seed: int, users: int) -> tuple[Engine, list[Numbered]]:
    """``count`` commands applied to a fresh engine; the numbered stream items of each."""
    engine = Engine()
    streams = StreamState(engine.markets, DEPTH_LEVELS, "bench")
    rng = random.Random(seed)
    mine: dict[str, list[int]] = defaultdict(list)
    batches: list[Numbered] = []
    for seq in range(1, count + 1):
        user = f"u{rng.randrange(users)}"
        command: PlaceOrder | CancelOrder
        if mine[user] and rng.random() < 0.25:
            command = CancelOrder(order_id=mine[user].pop(rng.randrange(len(mine[user]))),
                                  user_id=user)
        else:
            command = PlaceOrder(
                order_id=seq, user_id=user, symbol="BTC/USDT",
                side=Side.BUY if rng.random() < 0.5 else Side.SELL,
                price=5_000_000 + rng.randrange(-100, 101) * 100,
                quantity=rng.randrange(100, 5_000))
        events = engine.apply(command, seq=seq, ts=1_700_000_000_000_000_000 + seq * 1_000_000)
        if isinstance(events[0], OrderAccepted):
            mine[user].append(events[0].order_id)
        numbered = Numbered()
        streams.number(events, numbered)
        batches.append(numbered)
    return engine, batches


def by_stream(numbered: Numbered) -> dict[Stream, list[Item]]:
    """What ``Hub.publish`` hands each fan-out task for one command."""
    parts = {Stream.ORDERS: numbered.orders, Stream.TRADES: numbered.trades,
             Stream.ORDERBOOK: numbered.orderbook, Stream.DEPTH: numbered.depth}
    return {stream: items for stream, items in parts.items() if items}


def new_hub(engine: Engine) -> Hub:
    """A hub at the start of the flow (an empty book, every channel at seq 0)."""
    streams = StreamState(engine.markets, DEPTH_LEVELS, "bench")
    return Hub(engine.markets, streams=streams, history=History(0, 1, {}),
               public_trade_user_ids=False, queue_size=16, stats=Stats())


def subscribe(hub: Hub, config: str, subscribers: int, users: int) -> list[Stub]:
    stubs = []
    channels: list[tuple[Stream, str | None]] = [
        (Stream.DEPTH, "BTC/USDT"), (Stream.ORDERBOOK, "BTC/USDT"),
        (Stream.TRADES, "BTC/USDT"), (Stream.TRADES, None)]
    for channel in channels:
        for index in range(subscribers):
            deflate = config == "deflate" or (config == "mixed" and index % 2)
            stub = Stub(WINDOW if deflate else 0)
            hub.subscribe(stub, channel, None)
            stubs.append(stub)
    for user in range(users):
        stub = Stub(WINDOW if config != "plain" else 0)
        hub.subscribe(stub, (Stream.ORDERS, f"u{user}"), None)
        stubs.append(stub)
    return stubs


def fan_out(engine: Engine, batches: list[Numbered], config: str, subscribers: int,
            users: int) -> dict[str, Any]:
    """One timed pass of every batch through the hub's handlers, as its tasks run them."""
    hub = new_hub(engine)
    stubs = subscribe(hub, config, subscribers, users)
    handlers = {Stream.ORDERS: hub._orders, Stream.TRADES: hub._trades,
                Stream.ORDERBOOK: hub._orderbook, Stream.DEPTH: hub._depth}
    split = [by_stream(numbered) for numbered in batches]
    flush = hub._flush
    sent_before = sum(hub._stats.messages_sent.values())
    compressed_before = hub._stats.messages_compressed  # the snapshots at subscribe
    for stub in stubs:
        stub.bytes = stub.frames = 0  # the subscribe replies are not the flow's
    gc.collect()
    start = time.thread_time_ns()  # CPU time: the machine may be shared
    for streams in split:
        for stream, events in streams.items():
            handlers[stream](events)
            flush()
    elapsed = time.thread_time_ns() - start
    stats = hub._stats
    deliveries = sum(stats.messages_sent.values()) - sent_before
    deflated = sum(stub.frames for stub in stubs if stub.deflate_window_bits)
    return {
        "config": config, "elapsed_ns": elapsed, "deliveries": deliveries,
        "deflate_deliveries": deflated,
        "compressed": stats.messages_compressed - compressed_before,
        "bytes": sum(stub.bytes for stub in stubs),
    }


def message_sizes(engine: Engine, batches: list[Numbered], level: int) -> dict[str, Any]:
    """Each stream message of the flow once, plain and as a deflate client gets it."""
    hub = new_hub(engine)
    captured: list[bytes] = []
    hub._flush = lambda: (captured.extend(p for ps in hub._outbox.values() for p in ps),
                          hub._outbox.clear())  # type: ignore[method-assign]
    for stream, channel in ((Stream.DEPTH, "BTC/USDT"), (Stream.ORDERBOOK, "BTC/USDT"),
                            (Stream.TRADES, "BTC/USDT")):
        hub.subscribe(Stub(0), (stream, channel), None)
    for user in {channel[1] for numbered in batches for channel, _, _ in numbered.orders}:
        hub.subscribe(Stub(0), (Stream.ORDERS, user), None)
    handlers = {Stream.ORDERS: hub._orders, Stream.TRADES: hub._trades,
                Stream.ORDERBOOK: hub._orderbook, Stream.DEPTH: hub._depth}
    for numbered in batches:
        for stream, part in by_stream(numbered).items():
            handlers[stream](part)
            hub._flush()
    deflater = MessageDeflater(WINDOW, level)
    kinds: dict[str, Counter[str]] = defaultdict(Counter)
    for payload in captured:
        kind = json.loads(payload)["type"]
        compressed = deflater.compress(payload)
        sent = len(payload) if compressed is None else len(compressed)
        kinds[kind].update(messages=1, plain=len(payload), deflate=sent,
                           left_plain=compressed is None)
    return {kind: dict(counts) for kind, counts in sorted(kinds.items())}


def snapshot_sizes(engine: Engine, level: int, repeat: int) -> list[dict[str, Any]]:
    """Depth snapshots of the book the flow left: bytes, and the time to compress one."""
    depth = engine.depth("BTC/USDT")
    rows = []
    for levels in SNAPSHOT_LEVELS:
        book = DepthBook(engine.markets["BTC/USDT"], levels)
        book.load([(lv.price, lv.quantity) for lv in depth.bids],
                  [(lv.price, lv.quantity) for lv in depth.asks])
        payload = _encode(book.snapshot())
        deflater = MessageDeflater(WINDOW, level)
        compressed = deflater.compress(payload)
        costs = []
        for _ in range(repeat):
            start = time.thread_time_ns()
            for _ in range(10):
                deflater.compress(payload)
            costs.append((time.thread_time_ns() - start) / 10)
        rows.append({
            "levels": levels, "plain_bytes": len(payload),
            "deflate_bytes": len(payload) if compressed is None else len(compressed),
            "compress_us": round(statistics.median(costs) / 1e3, 1),
        })
    return rows


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    medians = {c: statistics.median(r["elapsed_ns"] for r in runs if r["config"] == c)
               for c in CONFIGS}
    one = {c: next(r for r in runs if r["config"] == c) for c in CONFIGS}
    plain = one["plain"]
    extra = medians["deflate"] - medians["plain"]
    return {
        "median_ms": {c: round(m / 1e6, 2) for c, m in medians.items()},
        "deliveries": plain["deliveries"],
        "ns_per_delivery": {c: round(medians[c] / one[c]["deliveries"], 1) for c in CONFIGS},
        "compressed_messages": {c: one[c]["compressed"] for c in CONFIGS},
        "extra_us_per_compressed_message": round(extra / one["deflate"]["compressed"] / 1e3, 2),
        "extra_ns_per_deflate_delivery": round(extra / one["deflate"]["deflate_deliveries"], 1),
        "bytes_sent": {c: one[c]["bytes"] for c in CONFIGS},
    }


def _n(value: float) -> str:
    """A number with thin spaces between thousands, as the other benchmarks print them."""
    return f"{value:,}".replace(",", " ")


def tables(sizes: dict[str, Any], snapshots: list[dict[str, Any]], cpu: dict[str, Any],
           subscribers: int) -> str:
    lines = ["| message | count | plain bytes | deflate bytes | saved | left plain |",
             "|---|---:|---:|---:|---:|---:|"]
    for kind, row in sizes.items():
        lines.append(
            f"| {kind} | {_n(row['messages'])} | {_n(row['plain'])} | {_n(row['deflate'])} "
            f"| {1 - row['deflate'] / row['plain']:.0%} | {_n(row.get('left_plain', 0))} |")
    lines += ["", "| depth snapshot | plain bytes | deflate bytes | saved | compress us |",
              "|---|---:|---:|---:|---:|"]
    for row in snapshots:
        lines.append(
            f"| {row['levels']} levels per side | {_n(row['plain_bytes'])} "
            f"| {_n(row['deflate_bytes'])} "
            f"| {1 - row['deflate_bytes'] / row['plain_bytes']:.0%} | {row['compress_us']} |")
    lines += ["", f"| fan-out, {subscribers} subscribers per public channel | median CPU ms "
              "| ns per delivery | messages compressed |", "|---|---:|---:|---:|"]
    for config in CONFIGS:
        lines.append(f"| {config} | {_n(cpu['median_ms'][config])} "
                     f"| {cpu['ns_per_delivery'][config]} "
                     f"| {_n(cpu['compressed_messages'][config])} |")
    lines.append(f"\ndeflate costs {cpu['extra_us_per_compressed_message']} us of CPU per "
                 f"message compressed, {cpu['extra_ns_per_deflate_delivery']} ns per delivery "
                 f"to a deflate client ({_n(cpu['deliveries'])} deliveries per pass)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.deflate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=5_000,
                        help="commands in the flow (default 5 000)")
    parser.add_argument("--users", type=int, default=50, help="users placing orders (50)")
    parser.add_argument("--subscribers", type=int, default=100,
                        help="subscribers on each public channel (default 100)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--seed", type=int, default=42, help="flow seed (default 42)")
    parser.add_argument("--levels", default=f"1,{LEVEL},9",
                        help=f"zlib levels for the byte tables (default 1,{LEVEL},9; the "
                             f"gateway uses {LEVEL})")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help="JSON results (default bench/results/deflate.json)")
    args = parser.parse_args(argv)
    levels = [int(level) for level in args.levels.split(",")]

    load_before = os.getloadavg()[0]
    engine, batches = order_flow(args.count, args.seed, args.users)
    sizes = {level: message_sizes(engine, batches, level) for level in levels}
    snapshots = {level: snapshot_sizes(engine, level, 50) for level in levels}
    runs = []
    for round_ in range(args.rounds):
        order = CONFIGS[round_ % 3:] + CONFIGS[:round_ % 3]
        for config in order:
            run = fan_out(engine, batches, config, args.subscribers, args.users)
            runs.append(run | {"round": round_ + 1})
            print(f"round {round_ + 1} {config:>7}: {run['elapsed_ns'] / 1e6:8.1f} ms, "
                  f"{run['deliveries']:,} deliveries, {run['compressed']:,} compressed",
                  flush=True)
    cpu = summarise(runs)
    for level in levels:
        print(f"\nzlib level {level}" + (" (the gateway's)" if level == LEVEL else ""))
        text = tables(sizes[level], snapshots[level], cpu, args.subscribers)
        print(text if level == LEVEL else text.split("\n\n| fan-out")[0])
    result = {
        "benchmark": "deflate",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0], "zlib": zlib.ZLIB_RUNTIME_VERSION,
        "machine": platform.machine(), "processor": platform.processor(),
        "cpus": os.cpu_count(), "load_average_1m": [load_before, os.getloadavg()[0]],
        "command": "python -m bench.deflate " + " ".join(argv or sys.argv[1:]),
        "parameters": vars(args) | {"output": str(args.output)},
        "gateway_level": LEVEL, "window_bits": WINDOW,
        "message_sizes": {str(level): sizes[level] for level in levels},
        "depth_snapshots": {str(level): snapshots[level] for level in levels},
        "fan_out": cpu, "runs": runs,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"\n1-minute load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after, "
          f"on {os.cpu_count()} CPUs (CPU times grow on a busy machine)")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
