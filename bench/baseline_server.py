"""The baseline: what a Python user would write instead, on websockets (asyncio + uvloop).

One process, ``websockets.asyncio.server.serve`` with ``compression=None``, and one
publisher task that, ``--rate`` times a second, builds a ``trade_executed`` message
of the same shape (and so the same size, give or take a digit) as the gateway's,
with ``seq`` (+1 per message) and ``published_ns`` (``time.monotonic_ns()`` at
publication), and hands it to every subscriber with ``websockets.broadcast()``.

It speaks the part of our protocol the load generator uses: ``/ws`` with
``{"action": "subscribe", "stream": "trades", "symbol": "BTC/USDT", "id": 1}``
(answered ``{"type": "subscribed", ..., "seq": N}``, N the current seq), the
same for ``unsubscribe``, and ``/ws/trades?symbol=BTC-USDT``, which subscribes on
connect. Only the BTC/USDT trades channel has traffic.

Run: ``python -m bench.baseline_server --port 0 --rate 50``; it prints
``baseline: WebSocket on ws://127.0.0.1:PORT/ws`` when it listens, and stops on
SIGINT or SIGTERM. Needs ``websockets`` and ``uvloop`` (the ``load_baseline`` nox
session installs them); nothing else in ``bench`` imports this module.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import time
from datetime import UTC, datetime
from typing import Any

import uvloop
from websockets.asyncio.server import ServerConnection, broadcast, serve

SYMBOL = "BTC/USDT"
_dumps = json.JSONEncoder(separators=(",", ":")).encode


def iso_now() -> str:
    moment = datetime.now(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def trade_message(trade_id: int, seq: int) -> str:
    """Our ``trade_executed`` for a one-lot market buy at 50000.00 (docs/protocol.md)."""
    return _dumps({
        "type": "trade_executed", "trade_id": trade_id, "symbol": SYMBOL,
        "price": "50000.00", "quantity": "0.00001", "taker_side": "BUY",
        "buyer_fee": "0.00050000", "seller_fee": "0.00025000", "fee_asset": "USDT",
        "executed_at": iso_now(), "seq": seq, "published_ns": time.monotonic_ns(),
    })


class Broadcaster:
    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.subscribers: set[ServerConnection] = set()
        self.seq = 0
        self.published = 0
        self.lag_resets = 0

    def _reply(self, kind: str, request: dict[str, Any], **extra: Any) -> str:
        return _dumps({"type": kind, "id": request.get("id"), "stream": "trades",
                       "symbol": request.get("symbol"), **extra})

    async def handler(self, ws: ServerConnection) -> None:
        path = ws.request.path if ws.request is not None else "/ws"
        try:
            if path.startswith("/ws/trades"):
                self.subscribers.add(ws)
                await ws.send(_dumps({"type": "subscribed", "id": None, "stream": "trades",
                                      "symbol": SYMBOL, "seq": self.seq}))
            async for raw in ws:
                try:
                    request = json.loads(raw)
                    action = request.get("action")
                except (ValueError, AttributeError):
                    await ws.send(_dumps({"type": "error", "code": "invalid_json"}))
                    continue
                ours = request.get("stream") == "trades" and request.get("symbol") in (SYMBOL,
                                                                                        None)
                if action == "subscribe":
                    if ours:
                        self.subscribers.add(ws)
                    await ws.send(self._reply("subscribed", request,
                                              seq=self.seq if ours else 0))
                elif action == "unsubscribe":
                    self.subscribers.discard(ws)
                    await ws.send(self._reply("unsubscribed", request))
                elif action == "ping":
                    await ws.send(_dumps({"type": "pong", "id": request.get("id")}))
        finally:
            self.subscribers.discard(ws)

    async def publish(self) -> None:
        loop = asyncio.get_running_loop()
        interval = 1.0 / self.rate
        due = loop.time()
        trade_id = 0
        while True:
            due += interval
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                if delay < -1.0:  # more than a second behind: drop the backlog, as ours does
                    due = loop.time()
                    self.lag_resets += 1
                await asyncio.sleep(0)
            trade_id += 1
            self.seq += 1
            broadcast(self.subscribers, trade_message(trade_id, self.seq))
            self.published += 1


async def main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    hub = Broadcaster(args.rate)
    async with serve(hub.handler, args.host, args.port, compression=None,
                     ping_interval=args.ping_interval, ping_timeout=args.pong_timeout,
                     max_size=65536) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(f"baseline: WebSocket on ws://{args.host}:{port}/ws", flush=True)
        publisher = asyncio.create_task(hub.publish())
        await stop.wait()
        publisher.cancel()
    print(f"baseline: published {hub.published}, lag resets {hub.lag_resets}", flush=True)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--rate", type=float, default=50.0, help="messages published per second")
    parser.add_argument("--ping-interval", type=float, default=20.0)
    parser.add_argument("--pong-timeout", type=float, default=20.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    uvloop.run(main(args))


if __name__ == "__main__":
    cli()
