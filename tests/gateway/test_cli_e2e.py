"""End to end: ``trade-engine serve`` as a real subprocess, driven over REST and WebSocket.

The server is started with ``--rest-port 0 --ws-port 0`` and the test reads the
bound ports from the line it prints. Tokens come from ``trade-engine token``
(another subprocess, same data directory). The server is stopped with SIGTERM
and must say goodbye to every client (``shutdown`` then close code 1001) and
exit 0 within its grace period. Every subprocess is killed in ``finally``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection
from wsclient import open_ws

from gateway import issue_token
from gateway._auth import load_or_create_secret

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

STARTUP_TIMEOUT = 20
TIMEOUT = 10
GRACE_PERIOD = 5.0  # the default shutdown_grace_period
BANNER = re.compile(
    r"trade-engine: REST on (http://127\.0\.0\.1:(\d+))/api/v1, "
    r"WebSocket on (ws://127\.0\.0\.1:(\d+))/ws")


def cli() -> list[str]:
    """The installed console script when it sits next to this interpreter, else ``-m``."""
    script = Path(sys.executable).with_name("trade-engine")
    return [str(script)] if script.exists() else [sys.executable, "-m", "gateway._cli"]


def environment(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADE_ENGINE_")}
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg")  # never the developer's real data dir
    env["PYTHONUNBUFFERED"] = "1"
    return env


class LineReader:
    """Lines from a subprocess pipe, kept so a failure can show everything read."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = b""
        self.lines: list[str] = []

    async def readline(self) -> str | None:
        while b"\n" not in self._buffer:
            chunk = await self._stream.receive_some()
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        text = line.decode()
        self.lines.append(text)
        return text

    async def rest(self) -> list[str]:
        while await self.readline() is not None:
            pass
        return self.lines


@attrs.define
class Server:
    process: trio.Process
    stdout: LineReader
    rest_url: str
    ws_url: str
    data_dir: Path
    stderr_file: Path

    def stderr(self) -> str:
        return self.stderr_file.read_text(errors="replace")


@asynccontextmanager
async def running_server(tmp_path: Path, *extra: str) -> AsyncIterator[Server]:
    data_dir = tmp_path / "data"
    stderr_file = tmp_path / "serve.stderr"
    with stderr_file.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            [*cli(), "serve", "--data-dir", str(data_dir), "--rest-port", "0",
             "--ws-port", "0", *extra],
            stdout=subprocess.PIPE, stderr=stderr, env=environment(tmp_path),
        )
    try:
        assert process.stdout is not None
        reader = LineReader(process.stdout)
        with trio.fail_after(STARTUP_TIMEOUT):
            while True:
                line = await reader.readline()
                assert line is not None, (
                    f"serve exited early: {reader.lines}\n{stderr_file.read_text()}")
                match = BANNER.fullmatch(line)
                if match:
                    break
        assert int(match.group(2)) != 0
        assert int(match.group(4)) != 0
        yield Server(process, reader, match.group(1), match.group(3), data_dir, stderr_file)
    finally:
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True), trio.move_on_after(TIMEOUT):
            await process.wait()
        if process.stdout is not None:
            await process.stdout.aclose()


async def cli_token(tmp_path: Path, data_dir: Path, user: str, *extra: str) -> str:
    with trio.fail_after(STARTUP_TIMEOUT):
        result = await trio.run_process(
            [*cli(), "token", "--user", user, "--data-dir", str(data_dir), *extra],
            capture_stdout=True, capture_stderr=True, env=environment(tmp_path),
        )
    token = result.stdout.decode().strip()
    assert token.count(".") == 2, result
    return token


async def next_json(ws: WebSocketConnection) -> dict[str, Any]:
    return json.loads(await ws.get_message())


async def next_of_type(ws: WebSocketConnection, kind: str) -> dict[str, Any]:
    while True:
        message = await next_json(ws)
        if message["type"] == kind:
            return message


async def until_closed(ws: WebSocketConnection) -> tuple[list[dict[str, Any]], int]:
    """Every message left on the connection, and the close code the server sent.

    The clients come from ``wsclient.open_ws``, which closes their TCP stream on exit
    (trio-websocket 0.12's own client would leave it open after a close the server
    started).
    """
    messages = []
    while True:
        try:
            messages.append(await next_json(ws))
        except ConnectionClosed as closed:
            return messages, closed.reason.code


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_serve_streams_trades_and_shuts_down_on_sigterm(tmp_path):
    async with running_server(tmp_path) as server:
        secret_file = server.data_dir / "jwt-secret"
        assert secret_file.stat().st_mode & 0o777 == 0o600
        alice = await cli_token(tmp_path, server.data_dir, "alice")
        # one CLI token is enough to prove the CLI and the server share a secret; the
        # others are signed here, with the secret the server created
        secret = load_or_create_secret(server.data_dir)
        bob = issue_token(secret, "bob", ttl=60)
        expired = issue_token(secret, "alice", ttl=-10)
        ws = server.ws_url

        with trio.fail_after(TIMEOUT):
            async with open_ws(f"{ws}/ws/orders?token={alice}") as orders, \
                    open_ws(f"{ws}/ws/trades") as trades, \
                    open_ws(f"{ws}/ws/markets/BTC-USDT") as market, \
                    open_ws(f"{ws}/ws") as general, \
                    httpx.AsyncClient(base_url=server.rest_url, timeout=TIMEOUT) as http:
                assert (await next_json(orders))["type"] == "subscribed"
                assert (await next_json(trades))["type"] == "subscribed"
                subscribed = await next_json(market)
                assert subscribed["type"] == "subscribed"
                assert subscribed["symbol"] == "BTC/USDT"
                empty = await next_json(market)  # the top of book at once: nothing rests yet
                assert (empty["type"], empty["best_bid"], empty["best_ask"], empty["seq"]) == (
                    "orderbook_snapshot", None, None, subscribed["seq"])
                await general.send_message(json.dumps(
                    {"action": "subscribe", "stream": "depth", "symbol": "BTC-USDT", "id": 7}))
                reply = await next_json(general)
                assert (reply["type"], reply["id"]) == ("subscribed", 7)
                snapshot = await next_json(general)
                assert snapshot["type"] == "depth_snapshot"
                assert (snapshot["bids"], snapshot["asks"]) == ([], [])

                health = await http.get("/healthz")
                assert (health.json()["status"], health.json()["last_seq"]) == ("ok", 0)
                assert (await http.get("/stats")).json()["connections"] == 4
                # the banner's next line links the trading page, served there
                page_line = f"trade-engine: trading page at {server.rest_url}/"
                assert await server.stdout.readline() == page_line
                page = await http.get("/")
                assert page.headers["content-type"] == "text/html; charset=utf-8"

                sell = await http.post("/api/v1/orders", headers=bearer(alice), json={
                    "symbol": "BTC-USDT", "side": "SELL", "price": "50000.00",
                    "quantity": "0.01", "client_order_id": "e2e-1"})
                assert sell.status_code == 201, sell.text
                buy = await http.post("/api/v1/orders", headers=bearer(bob), json={
                    "symbol": "BTC/USDT", "side": "BUY", "price": "50000.00",
                    "quantity": "0.01"})
                assert buy.status_code == 201, buy.text
                assert buy.json()["status"] == "FILLED"

                created = await next_json(orders)
                assert created["type"] == "order_update"
                assert (created["action"], created["status"]) == ("created", "OPEN")
                assert created["order_id"] == sell.json()["order_id"]
                assert created["client_order_id"] == "e2e-1"
                filled = await next_json(orders)
                assert (filled["action"], filled["status"]) == ("filled", "FILLED")
                assert filled["fill_price"] == "50000.00"
                assert filled["liquidity"] == "maker"
                assert filled["seq"] == created["seq"] + 1

                trade = await next_json(trades)
                assert trade["type"] == "trade_executed"
                assert (trade["symbol"], trade["price"], trade["quantity"]) == (
                    "BTC/USDT", "50000.00", "0.01000")
                assert trade["taker_side"] == "BUY"
                assert "buyer_id" not in trade

                top = await next_json(market)
                assert top["type"] == "orderbook_update"
                assert (top["best_ask"], top["best_bid"]) == ("50000.00", None)
                top = await next_json(market)
                assert (top["best_ask"], top["best_bid"]) == (None, None)

                depth = await next_json(general)
                assert depth["type"] == "depth_update"
                assert depth["asks"] == [["50000.00", "0.01000"]]
                assert depth["seq"] == snapshot["seq"] + 1
                depth = await next_json(general)
                assert [level[0] for level in depth["asks"]] == ["50000.00"]
                assert float(depth["asks"][0][1]) == 0

                # the CLI's tokens are the server's: an expired or tampered one is not
                for bad in (expired, alice[:-4] + "AAAA"):
                    response = await http.get("/api/v1/orders", headers=bearer(bad))
                    assert response.status_code == 401

                server.process.send_signal(signal.SIGTERM)
                with trio.fail_after(GRACE_PERIOD + 2):
                    for client in (orders, trades, market, general):
                        messages, code = await until_closed(client)
                        assert messages == [{"type": "shutdown",
                                             "reason": "server shutting down"}]
                        assert code == 1001
                    assert await server.process.wait() == 0
        output = await server.stdout.rest()
    assert "trade-engine: SIGTERM, shutting down" in output
    assert any("get a token with: trade-engine token" in line for line in output)


async def test_token_before_first_serve_with_a_config_file_then_sigint(tmp_path):
    config = tmp_path / "gateway.toml"
    config.write_text(XAU_MARKET, encoding="utf-8")
    data_dir = tmp_path / "data"
    # `token` before any `serve` creates the secret that `serve` then uses
    carol = await cli_token(tmp_path, data_dir, "carol", "--config", str(config), "--ttl", "120")
    assert (data_dir / "jwt-secret").stat().st_mode & 0o777 == 0o600
    async with running_server(tmp_path, "--config", str(config)) as server:
        async with httpx.AsyncClient(base_url=server.rest_url, timeout=TIMEOUT) as http:
            with trio.fail_after(TIMEOUT):
                markets = (await http.get("/api/v1/markets")).json()["markets"]
                placed = await http.post("/api/v1/orders", headers=bearer(carol), json={
                    "symbol": "XAU-USD", "side": "BUY", "price": "2000.5", "quantity": "1"})
                off_tick = await http.post("/api/v1/orders", headers=bearer(carol), json={
                    "symbol": "XAU-USD", "side": "BUY", "price": "2000.25", "quantity": "1"})
        server.process.send_signal(signal.SIGINT)
        with trio.fail_after(GRACE_PERIOD):
            assert await server.process.wait() == 0
        assert "trade-engine: SIGINT, shutting down" in await server.stdout.rest()
    assert [m["symbol"] for m in markets] == ["XAU/USD"]
    assert placed.status_code == 201, placed.text
    assert placed.json()["user_id"] == "carol"
    assert placed.json()["price"] == "2000.5"
    assert off_tick.json()["error"]["code"] == "price_off_tick"


XAU_MARKET = """\
[websocket]
ping_interval = 30

[[markets]]
symbol = "XAU/USD"
base = "XAU"
quote = "USD"
tick_size = "0.5"
lot_size = "1"
min_quantity = "1"
min_notional = "1"
maker_fee_rate = "0"
taker_fee_rate = "0.001"
"""


async def test_configuration_errors_exit_2_naming_the_key(tmp_path):
    # The loader's rules are in test_config.py; here, the command line reports them.
    bad = tmp_path / "bad.toml"
    bad.write_text("[websocket]\nping_intervall = 5\n", encoding="utf-8")
    cases = [
        (["serve", "--config", str(bad)], {}, "ping_intervall"),
        (["token", "--user", "a"], {"TRADE_ENGINE_WEBSOCKET__PING_INTERVAL": "-1"},
         "ping_interval"),
    ]
    results: dict[int, subprocess.CompletedProcess[bytes]] = {}

    async def run(index: int, args: list[str], env: dict[str, str]) -> None:
        results[index] = await trio.run_process(
            [*cli(), *args, "--data-dir", str(tmp_path / f"data{index}")],
            check=False, capture_stdout=True, capture_stderr=True,
            env=environment(tmp_path) | env,
        )

    with trio.fail_after(STARTUP_TIMEOUT):
        async with trio.open_nursery() as nursery:
            for index, (args, env, _) in enumerate(cases):
                nursery.start_soon(run, index, args, env)
    for index, (args, env, key) in enumerate(cases):
        result = results[index]
        stderr = result.stderr.decode()
        assert result.returncode == 2, (args, env, stderr)
        assert key in stderr, (args, env, stderr)
        assert stderr.startswith("trade-engine: ")
        assert "Traceback" not in stderr
        assert result.stdout == b""
    assert not (tmp_path / "data0").exists()  # refused before touching the data dir
