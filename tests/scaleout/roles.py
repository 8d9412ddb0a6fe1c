"""Helpers for the scale-out tests: ``trade-engine serve --role ...`` as real subprocesses.

Every process runs the installed CLI (``python -m gateway._cli``) on ports 0,
with one shared configuration file (a JWT secret, limits out of the way, the
journal without fsync: a SIGKILL of the process loses nothing written) and
its own data directory; the banner line gives its URLs. :class:`Deployment`
remembers every process and kills what is left at the end of the test.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gateway"))  # ``import wsclient``

from wsclient import Client, open_ws

from gateway import issue_token

STARTUP_TIMEOUT = 60.0  # three Python processes start at once on a loaded 2-core machine
BANNER = re.compile(r"trade-engine: REST on (http://127\.0\.0\.1:\d+)/api/v1, "
                    r"WebSocket on (ws://127\.0\.0\.1:\d+)/ws")
SECRET = "scale-out-tests-secret-of-at-least-32-bytes"
CONFIG = f"""
[auth]
jwt_secret = "{SECRET}"

[journal]
fsync = "off"

[broker]
reply_timeout = 2.0
liveness_ttl = 1.0

[limits]
rest_requests_per_second = 1e6
rest_burst = 1000000
orders_per_second = 1e6
order_burst = 1000000
messages_per_second = 1e6
message_burst = 1000000
"""


@attrs.define
class Server:
    role: str
    process: trio.Process
    rest_url: str
    ws_url: str
    log: Path

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.rest_url, timeout=10)


class Deployment:
    """Starts, kills and remembers the role processes of one test."""

    def __init__(self, tmp_path: Path, broker: str, *, extra_config: str = "") -> None:
        self.tmp_path = tmp_path
        self.broker = broker
        self.config = tmp_path / "scaleout.toml"
        self.config.write_text(CONFIG + extra_config)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TRADE_ENGINE_")}
        self.env["XDG_DATA_HOME"] = str(tmp_path / "xdg")
        self.env["PYTHONUNBUFFERED"] = "1"
        self.processes: list[trio.Process] = []
        self.starts = 0

    def token(self, user: str) -> str:
        return issue_token(SECRET, user, ttl=3600)

    async def start(self, role: str, name: str | None = None) -> Server:
        """Start ``role`` (``engine``, ``gateway`` or ``all``) and wait for its banner."""
        self.starts += 1
        name = name or role
        log = self.tmp_path / f"{name}-{self.starts}.log"
        argv = [sys.executable, "-m", "gateway._cli", "serve", "--config", str(self.config),
                "--data-dir", str(self.tmp_path / f"data-{name}"),
                "--rest-port", "0", "--ws-port", "0"]
        if role != "all":
            argv += ["--role", role, "--broker", self.broker]
        with log.open("wb") as stderr:
            process = await trio.lowlevel.open_process(
                argv, stdout=subprocess.PIPE, stderr=stderr, env=self.env)
        self.processes.append(process)
        assert process.stdout is not None
        buffer = b""
        with trio.fail_after(STARTUP_TIMEOUT):
            while True:
                while b"\n" not in buffer:
                    chunk = await process.stdout.receive_some()
                    assert chunk, f"{name} exited early:\n{log.read_text()}"
                    buffer += chunk
                line, buffer = buffer.split(b"\n", 1)
                if match := BANNER.match(line.decode()):
                    break
        return Server(role, process, match.group(1), match.group(2), log)

    async def kill(self, server: Server) -> None:
        """SIGKILL, and wait for the process to be gone."""
        process = server.process
        if process.returncode is None:
            process.send_signal(signal.SIGKILL)
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            await process.wait()
        if process.stdout is not None:
            await process.stdout.aclose()

    async def kill_all(self) -> None:
        for process in self.processes:
            if process.returncode is None:
                process.send_signal(signal.SIGKILL)
            with trio.CancelScope(shield=True), trio.move_on_after(10):
                await process.wait()
            if process.stdout is not None:
                with trio.CancelScope(shield=True):
                    await process.stdout.aclose()


@asynccontextmanager
async def deployment(tmp_path: Path, broker: str, **options: Any) -> AsyncIterator[Deployment]:
    deploy = Deployment(tmp_path, broker, **options)
    try:
        yield deploy
    finally:
        await deploy.kill_all()


@asynccontextmanager
async def ws_client(server: Server, token: str | None = None) -> AsyncIterator[Client]:
    url = server.ws_url + "/ws" + (f"?token={token}" if token else "")
    async with open_ws(url) as ws:
        yield Client(ws)


async def wait_for(predicate: Callable[[], Any], timeout: float = 20.0,
                   what: str = "the condition") -> None:
    """Poll an async or plain ``predicate`` every 50 ms until it is true."""
    with trio.move_on_after(timeout) as scope:
        while True:
            result = predicate()
            if hasattr(result, "__await__"):
                result = await result
            if result:
                return
            await trio.sleep(0.05)
    if scope.cancelled_caught:
        raise AssertionError(f"{what} did not happen within {timeout} s")


async def health(server: Server) -> dict[str, Any]:
    async with server.http() as http:
        response = await http.get("/healthz")
    body: dict[str, Any] = response.json()
    return body


@attrs.define
class Flow:
    """Orders placed at a steady pace through some gateways, and what each was told."""

    servers: list[Server]
    tokens: dict[str, str]
    acked: dict[int, dict[str, Any]] = attrs.field(factory=dict)  # order id -> the order
    refused: list[tuple[float, str]] = attrs.field(factory=list)  # (when, error code)
    sent: int = 0

    async def run(self, stop: trio.Event, pause: float = 0.02) -> None:
        """Alternate buyers and sellers crossing at one price, one request at a time per
        server, until ``stop``; every order carries a unique client_order_id."""
        async with trio.open_nursery() as nursery:
            for index, server in enumerate(self.servers):
                nursery.start_soon(self._trade, index, server, stop, pause)

    async def _trade(self, index: int, server: Server, stop: trio.Event, pause: float) -> None:
        users = sorted(self.tokens)
        async with server.http() as http:
            n = 0
            while not stop.is_set():
                n += 1
                user = users[n % len(users)]
                order = {"symbol": "BTC/USDT", "side": "buy" if n % 2 else "sell",
                         "price": "50000.00", "quantity": "0.001",
                         "client_order_id": f"s{index}-{n}"}
                self.sent += 1
                try:
                    response = await http.post(
                        "/api/v1/orders", json=order,
                        headers={"Authorization": f"Bearer {self.tokens[user]}"})
                except httpx.TransportError as exc:
                    self.refused.append((trio.current_time(), type(exc).__name__))
                else:
                    if response.status_code == 201:
                        body = response.json()
                        self.acked[body["order_id"]] = body
                    else:
                        assert response.status_code == 503, response.text
                        self.refused.append((trio.current_time(),
                                             response.json()["error"]["code"]))
                await trio.sleep(pause)


def check_contiguous(messages: list[dict[str, Any]]) -> dict[tuple[str, Any], int]:
    """Per channel, ``seq`` must rise by exactly one from the ``subscribed`` reply on.

    Returns the last seq of each channel.
    """
    last: dict[tuple[str, Any], int] = {}
    for message in messages:
        if message.get("type") == "subscribed":
            last[(message["stream"], message.get("symbol"))] = message["seq"]
            continue
        if "seq" not in message:
            continue
        key = channel_of(message)
        if message["type"].endswith("_snapshot"):  # the state the next update applies to
            assert message["seq"] == last[key], (key, last[key], message)
            continue
        assert key in last, message
        assert message["seq"] == last[key] + 1, (key, last[key], message)
        last[key] = message["seq"]
    return last


def channel_of(message: dict[str, Any]) -> tuple[str, Any]:
    kind = message["type"]
    if kind == "trade_executed":
        return ("trades", message["symbol"])
    if kind == "order_update":
        return ("orders", None)
    if kind.startswith("depth"):
        return ("depth", message["symbol"])
    return ("orderbook", message["symbol"])
