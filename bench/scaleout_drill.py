"""The kill-a-gateway drill of ``bench/load_scaleout.py``: clients resume elsewhere.

Rules of this module: Redis + engine + 3 gateways as subprocesses; ``clients``
trio WebSocket clients on gateway 1 hold trades, depth (BTC/USDT) and the
taker's orders; a reference client per channel set on gateway 2 never moves;
the order flow (``bench/orderflow.py``) goes through gateway 2. Gateway 1 is
SIGKILLed after ``before`` seconds; each client reconnects to gateway 2 or 3
(alternately) and subscribes with ``since``; after ``after`` more seconds the
flow stops, and every client's messages per channel must be contiguous and
reach the reference's last ``seq``. Everything is bounded in time and stopped
in ``finally``.
"""

from __future__ import annotations

import json
import secrets
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from bench.orderflow import OrderFlow
from bench.redis_server import RedisServer, free_port
from gateway import issue_token

CHANNELS = [("trades", "BTC/USDT"), ("depth", "BTC/USDT"), ("orders", None)]


def _channel(message: dict[str, Any]) -> tuple[str, Any]:
    kind = message["type"]
    if kind == "trade_executed":
        return ("trades", message["symbol"])
    if kind == "order_update":
        return ("orders", None)
    return ("depth", message["symbol"])


class DrillClient:
    def __init__(self, token: str) -> None:
        self.token = token
        self.last: dict[tuple[str, Any], int] = {}
        self.epoch: str | None = None
        self.missed = 0
        self.messages = 0
        self.resumed = 0
        self.resumed_at = 0.0
        self.reconnects = 0
        self.closes: list[int] = []  # close codes the servers sent (4008: slow consumer)
        self.ready = trio.Event()

    async def follow(self, first: str, then: list[str]) -> None:
        """On ``first`` until it goes away, then on each of ``then`` in turn, resuming."""
        urls = [first]
        while True:
            url = urls.pop(0) if urls else then[self.reconnects % len(then)]
            try:
                async with open_websocket_url(f"{url}/ws?token={self.token}") as ws:
                    await self._subscribe(ws)
                    self.ready.set()
                    while True:
                        self._take(json.loads(await ws.get_message()))
            except (ConnectionClosed, HandshakeError, OSError, trio.BrokenResourceError) as exc:
                self.reconnects += 1
                if isinstance(exc, ConnectionClosed) and exc.reason is not None:
                    self.closes.append(exc.reason.code)
                await trio.sleep(0.05)

    async def _subscribe(self, ws: Any) -> None:
        for number, (stream, symbol) in enumerate(CHANNELS, start=1):
            request: dict[str, Any] = {"action": "subscribe", "stream": stream, "id": number}
            if symbol:
                request["symbol"] = symbol
            if (stream, symbol) in self.last:
                request["since"] = {"epoch": self.epoch, "seq": self.last[(stream, symbol)]}
            await ws.send_message(json.dumps(request))
            while True:
                message = json.loads(await ws.get_message())
                if message.get("id") == number:
                    break
                self._take(message)
            if message["type"] != "subscribed":
                raise RuntimeError(f"the drill's resume was refused: {message}")
            if "since" in request and not message.get("resumed"):
                raise RuntimeError(f"the drill's resume was not resumed: {message}")
            if "since" in request:
                self.resumed += message.get("resumed") is True
                self.resumed_at = max(self.resumed_at, time.monotonic())
            self.epoch = message["epoch"]
            self.last[(stream, symbol)] = message["seq"]

    def _take(self, message: dict[str, Any]) -> None:
        if "seq" not in message or message["type"].endswith("_snapshot"):
            return
        key = _channel(message)
        expected = self.last.get(key, message["seq"] - 1) + 1
        if message["seq"] > expected:
            self.missed += message["seq"] - expected
        if message["seq"] >= expected:
            self.last[key] = message["seq"]
            self.messages += 1


async def _start(argv: list[str], log: Path) -> tuple[trio.Process, str, str]:
    import re  # noqa: PLC0415

    with log.open("wb") as out:
        process = await trio.lowlevel.open_process(argv, stdout=out, stderr=out)
    pattern = re.compile(r"REST on (http://[^/]+)/api/v1, WebSocket on (ws://[^/]+)/ws")
    with trio.fail_after(60):
        while not (found := pattern.search(log.read_text(errors="replace"))):
            if process.returncode is not None:
                raise RuntimeError(f"{argv} exited:\n{log.read_text()}")
            await trio.sleep(0.05)
    return process, found.group(1), found.group(2)


async def _drill(clients: int, fsync: str, before: float, after: float, rate: float,
                 workdir: Path) -> dict[str, Any]:
    import sys  # noqa: PLC0415

    secret = secrets.token_hex(32)
    redis = RedisServer(workdir, free_port())
    processes: list[trio.Process] = []
    flow: OrderFlow | None = None
    (workdir / "c.toml").write_text(
        f'[auth]\njwt_secret = "{secret}"\n[journal]\nfsync = "{fsync}"\n'
        "[limits]\norders_per_second = 1e6\norder_burst = 1000000\n"
        "rest_requests_per_second = 1e6\nrest_burst = 1000000\n"
        "max_connections_per_ip = 1000000\nconnections_per_second_per_ip = 1e6\n"
        "connection_burst_per_ip = 1000000\n")
    try:
        redis.start()

        def argv(role: str, name: str) -> list[str]:
            return [sys.executable, "-m", "gateway._cli", "--log-level", "WARNING", "serve",
                    "--config", str(workdir / "c.toml"), "--data-dir", str(workdir / name),
                    "--rest-port", "0", "--ws-port", "0", "--role", role, "--broker", redis.url]

        engine = await _start(argv("engine", "engine"), workdir / "engine.log")
        processes.append(engine[0])
        started: dict[int, tuple[trio.Process, str, str]] = {}

        async def start(index: int) -> None:
            started[index] = await _start(argv("gateway", f"g{index}"), workdir / f"g{index}.log")
            processes.append(started[index][0])

        async with trio.open_nursery() as nursery:
            for index in range(3):
                nursery.start_soon(start, index)
        fronts = [started[index] for index in range(3)]
        taker = issue_token(secret, "taker", ttl=3600)
        movers = [DrillClient(taker) for _ in range(clients)]
        reference = DrillClient(taker)
        rest_port = int(fronts[1][1].rsplit(":", 1)[1])
        flow = OrderFlow("127.0.0.1", rest_port, secret, connections=4)
        await trio.to_thread.run_sync(flow.place_resting)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reference.follow, fronts[1][2], [fronts[1][2]])
            await reference.ready.wait()
            for index, mover in enumerate(movers):
                survivors = [fronts[1 + index % 2][2], fronts[2 - index % 2][2]]
                nursery.start_soon(mover.follow, fronts[0][2], survivors)
                await mover.ready.wait()
            flow.start(rate)
            await trio.sleep(before)
            fronts[0][0].send_signal(signal.SIGKILL)
            killed = time.monotonic()
            await trio.sleep(after)
            await trio.to_thread.run_sync(flow.stop)
            await trio.sleep(1.0)
            with trio.move_on_after(30):  # until every client got the reference's last message
                while any(mover.last.get(key, 0) < seq for mover in movers
                          for key, seq in reference.last.items()):
                    await trio.sleep(0.1)
            nursery.cancel_scope.cancel()
        missed = sum(m.missed for m in movers)
        for mover in movers:  # short of the reference's end: missed too
            for key, seq in reference.last.items():
                missed += max(0, seq - mover.last.get(key, 0))
        return {
            "clients": clients, "resumed": sum(m.resumed for m in movers),
            "subscriptions": clients * len(CHANNELS), "missed": missed,
            "messages": sum(m.messages for m in movers),
            "reconnects": sum(m.reconnects for m in movers),
            "closes": sorted({code for m in movers for code in m.closes}),
            "resume_s": round(max((m.resumed_at - killed for m in movers if m.resumed_at),
                                  default=0.0), 3),
            "order_flow": flow.summary(),
        }
    finally:
        if flow is not None:
            await trio.to_thread.run_sync(flow.stop)
        for process in processes:
            if process.returncode is None:
                process.send_signal(signal.SIGKILL)
            with trio.move_on_after(10):
                await process.wait()
        redis.kill()


def run_drill(*, clients: int, fsync: str, before: float = 3.0, after: float = 4.0,
              rate: float = 50.0) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="scaleout-drill-") as tmp:
        return trio.run(_drill, clients, fsync, before, after, rate, Path(tmp))
