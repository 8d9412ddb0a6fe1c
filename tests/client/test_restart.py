"""The client across real server restarts: ``trade-engine serve`` subprocesses, same ports.

1. The server is killed (SIGKILL, a crash) and started again on the same data
   directory: the client reconnects by itself and resumes every subscription
   from the history the server refilled from its journal; no message is
   missed or repeated, and the book goes on without a snapshot.
2. The server is stopped (SIGTERM) and started on a *new* data directory: the
   history is gone (a new epoch), so the client subscribes afresh and says so:
   a ``Resynced(reason="resume_unavailable")`` in the iterator, and a book
   that starts again from the new server's snapshot.

Both servers share one JWT secret (``TRADE_ENGINE_AUTH__JWT_SECRET``), so the
client's token stays valid; every subprocess is killed in ``finally``.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path

import attrs
import httpx
import pytest
import trio

from gateway import issue_token
from gateway.client import Reconnect, Resynced, TradeExecuted, connect

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

STARTUP_TIMEOUT = 20
BANNER = re.compile(r"trade-engine: REST on http://127\.0\.0\.1:(\d+)/api/v1, "
                    r"WebSocket on ws://127\.0\.0\.1:(\d+)/ws")
SECRET = secrets.token_urlsafe(32)
BTC = "BTC/USDT"


def cli() -> list[str]:
    script = Path(sys.executable).with_name("trade-engine")
    return [str(script)] if script.exists() else [sys.executable, "-m", "gateway._cli"]


@attrs.define
class Server:
    process: trio.Process
    rest_port: int
    ws_port: int


@asynccontextmanager
async def serve(tmp_path: Path, data_dir: Path, rest_port: int = 0, ws_port: int = 0
                ) -> AsyncIterator[Server]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADE_ENGINE_")}
    env |= {"XDG_DATA_HOME": str(tmp_path / "xdg"), "PYTHONUNBUFFERED": "1",
            "TRADE_ENGINE_AUTH__JWT_SECRET": SECRET}
    with (tmp_path / "serve.stderr").open("ab") as stderr:
        process = await trio.lowlevel.open_process(
            [*cli(), "serve", "--data-dir", str(data_dir), "--rest-port", str(rest_port),
             "--ws-port", str(ws_port)], stdout=subprocess.PIPE, stderr=stderr, env=env)
    try:
        assert process.stdout is not None
        output = b""
        with trio.fail_after(STARTUP_TIMEOUT):
            while (match := BANNER.search(output.decode(errors="replace"))) is None:
                chunk = await process.stdout.receive_some()
                assert chunk, f"serve exited: {output!r}\n{(tmp_path / 'serve.stderr').read_text()}"
                output += chunk
        yield Server(process, int(match.group(1)), int(match.group(2)))
    finally:
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            await process.wait()
        if process.stdout is not None:
            await process.stdout.aclose()


async def cross(http: httpx.AsyncClient, maker: str, taker: str, price: str) -> None:
    """One trade at ``price``: the maker's ask, then the taker's bid."""
    for token, side in ((maker, "sell"), (taker, "buy")):
        response = await http.post("/api/v1/orders", headers={"Authorization": f"Bearer {token}"},
                                   json={"symbol": BTC, "side": side, "price": price,
                                         "quantity": "0.002"})
        assert response.status_code == 201, response.text


async def rest_levels(http: httpx.AsyncClient) -> tuple[int, list[tuple[Decimal, Decimal]],
                                                        list[tuple[Decimal, Decimal]]]:
    body = (await http.get("/api/v1/markets/BTC-USDT/orderbook")).json()
    return (body["seq"], [(Decimal(p), Decimal(q)) for p, q in body["bids"]],
            [(Decimal(p), Decimal(q)) for p, q in body["asks"]])


async def test_the_client_resumes_across_a_crash_and_resyncs_after_a_new_data_dir(tmp_path):
    alice = issue_token(SECRET, "alice", ttl=600)
    bob = issue_token(SECRET, "bob", ttl=600)
    reconnect = Reconnect(initial_delay=0.05, max_delay=0.3)
    with trio.fail_after(90):
        async with serve(tmp_path, tmp_path / "one") as first:
            rest, ws = first.rest_port, first.ws_port
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{rest}", timeout=10) as http, \
                    connect(f"ws://127.0.0.1:{ws}", alice, reconnect=reconnect) as client, \
                    client.subscribe("trades", BTC) as trades, client.book(BTC) as book:
                await cross(http, alice, bob, "50000.00")
                await http.post("/api/v1/orders", headers={"Authorization": f"Bearer {bob}"},
                                json={"symbol": BTC, "side": "buy", "price": "49000.00",
                                      "quantity": "0.5"})  # a resting bid for the book
                before = await trades.__anext__()
                assert isinstance(before, TradeExecuted)

                # 1. a crash, and the same data directory on the same ports
                first.process.kill()
                await first.process.wait()
                while client.connected:
                    await trio.sleep(0.01)
                async with serve(tmp_path, tmp_path / "one", rest, ws) as second:
                    await client.wait_connected()
                    await cross(http, alice, bob, "50001.00")
                    after = await trades.__anext__()
                    assert isinstance(after, TradeExecuted), after  # no Resynced: resumed
                    assert (after.seq, after.price) == (before.seq + 1, Decimal("50001.00"))
                    seq, bids, asks = await rest_levels(http)
                    while book.seq != seq:
                        await book.wait_changed()
                    assert (book.bids, book.asks) == (bids, asks)
                    assert book.best_bid == (Decimal("49000.00"), Decimal("0.50000"))
                    changes = book.changes()
                    # 2. a clean stop, and a new data directory: the history is gone
                    second.process.send_signal(signal.SIGTERM)
                    assert await second.process.wait() == 0
                async with serve(tmp_path, tmp_path / "two", rest, ws):
                    notice = await trades.__anext__()
                    assert isinstance(notice, Resynced), notice
                    assert (notice.reason, notice.last_seq) == ("resume_unavailable", after.seq)
                    change = await changes.__anext__()
                    assert change.resynced is not None
                    assert change.resynced.reason == "resume_unavailable"
                    assert (book.bids, book.asks, book.synced) == ([], [], True)
                    await cross(http, alice, bob, "50002.00")
                    fresh = await trades.__anext__()
                    assert isinstance(fresh, TradeExecuted)
                    assert (fresh.seq, fresh.price) == (notice.seq + 1, Decimal("50002.00"))
            assert client.reconnects == 2
