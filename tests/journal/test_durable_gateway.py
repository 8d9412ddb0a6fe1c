"""Durability through the whole gateway: ``gateway.serve`` with a real journal, over REST.

Each test runs its gateways in a nursery of its own (``running``), so it can stop
one (cancel its nursery: the engine task closes the journal) and start the next
on the same data directory, as a restart does. The journal is fsynced here
(``batch`` or ``always``), unlike the default fixture's ``off``.

Disk errors are injected at the two documented seams only: ``gateway._journal._fsync``
and ``os.write`` (for the journal's file descriptors only), raising the
``OSError`` a full or failing disk raises.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

import gateway._journal
from gateway import Config, Fsync, Gateway, JournalSettings, serve
from gateway._config import LimitSettings
from gateway._journal import segments, snapshots

TIMEOUT = 20
BTC = "BTC-USDT"
RECOVERED = re.compile(
    r"recovered from (?P<dir>.+): snapshot at seq (?P<snapshot>\d+), (?P<replayed>\d+) "
    r"commands replayed, last seq (?P<last>\d+), state hash (?P<hash>[0-9a-f]{64})")


def config(tmp_path: Path, fsync: Fsync, **journal: Any) -> Config:
    # No REST rate limit: the reads that compare states are many, and not under test.
    return Config(rest_port=0, ws_port=0, data_dir=tmp_path / "data",
                  journal=JournalSettings(fsync=fsync, **journal),
                  limits=LimitSettings(rest_requests_per_second=1e6, rest_burst=1_000_000))


@asynccontextmanager
async def running(cfg: Config) -> AsyncIterator[tuple[Gateway, httpx.AsyncClient]]:
    """A gateway in a nursery of its own, and a client; leaving stops the gateway."""
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            gw: Gateway = await nursery.start(serve, cfg)
            try:
                async with httpx.AsyncClient(
                        base_url=gw.endpoints.rest_url, timeout=TIMEOUT) as client:
                    yield gw, client
            finally:
                nursery.cancel_scope.cancel()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def recoveries(caplog: pytest.LogCaptureFixture) -> list[re.Match[str]]:
    return [m for r in caplog.records if (m := RECOVERED.fullmatch(r.getMessage()))]


async def place(client: httpx.AsyncClient, token: str, side: str, price: str,
                quantity: str = "0.01000", symbol: str = BTC) -> httpx.Response:
    return await client.post("/api/v1/orders", headers=bearer(token), json={
        "symbol": symbol, "side": side, "price": price, "quantity": quantity})


async def trading_session(client: httpx.AsyncClient, token: Callable[[str], str]) -> list[int]:
    """Orders that rest, trade, get cancelled and amended; the ids of every order placed."""
    ids = []
    users = {name: token(name) for name in ("alice", "bob", "carol")}
    for i in range(8):
        for name, side, price in (("alice", "SELL", 50_010 + i * 5),
                                  ("bob", "BUY", 49_990 - i * 5)):
            response = await place(client, users[name], side, f"{price}.00")
            assert response.status_code == 201, response.text
            ids.append(response.json()["order_id"])
    taker = await place(client, users["carol"], "BUY", "50020.00", "0.03500")  # crosses 3
    assert taker.status_code == 201, taker.text
    ids.append(taker.json()["order_id"])
    cancelled = await client.delete(f"/api/v1/orders/{ids[-2]}", headers=bearer(users["bob"]))
    assert cancelled.status_code == 200, cancelled.text
    amended = await client.patch(f"/api/v1/orders/{ids[-3]}", headers=bearer(users["alice"]),
                                 json={"quantity": "0.00500"})
    assert amended.status_code == 200, amended.text
    return ids


async def observe(client: httpx.AsyncClient, token: Callable[[str], str],
                  ids: list[int]) -> dict[str, Any]:
    """What a client reads about orders and trades, for before/after comparisons.

    The REST order book is left out: it has a test of its own below.
    """
    seen: dict[str, Any] = {}
    for order_id in ids:
        for name in ("alice", "bob", "carol"):
            response = await client.get(f"/api/v1/orders/{order_id}", headers=bearer(token(name)))
            if response.status_code == 200:
                seen[f"order {order_id}"] = response.json()
                break
        else:
            raise AssertionError(f"order {order_id} is gone")
    for name in ("alice", "bob", "carol"):
        seen[f"open {name}"] = (await client.get(
            "/api/v1/orders", headers=bearer(token(name)))).json()
    seen["trades"] = (await client.get(f"/api/v1/markets/{BTC}/trades")).json()
    return seen


# ---------------------------------------------------------------- restarts


@pytest.mark.parametrize("fsync", [Fsync.BATCH, Fsync.ALWAYS])
async def test_acknowledged_orders_survive_a_restart(tmp_path, token, caplog, fsync):
    cfg = config(tmp_path, fsync)
    caplog.set_level(logging.INFO, logger="trade_engine.gateway")
    async with running(cfg) as (gw, client):
        ids = await trading_session(client, token)
        before = await observe(client, token, ids)
        last, state_hash = gw.engine.last_seq, gw.engine.state_hash()
    assert last == len(ids) + 2  # every order, the cancel and the amend

    async with running(cfg) as (gw, client):
        assert gw.engine.last_seq == last
        assert gw.engine.state_hash() == state_hash
        assert await observe(client, token, ids) == before
        health = (await client.get("/healthz")).json()
        assert health == {"status": "ok", "order_entry": True, "last_seq": last}
        after = await place(client, token("dave"), "BUY", "40000.00")
        assert after.status_code == 201, after.text
        assert after.json()["order_id"] == last + 1  # numbering goes on where it stopped
        state_hash_2 = gw.engine.state_hash()
    async with running(cfg) as (gw, client):  # and what the restarted server wrote survives
        assert gw.engine.state_hash() == state_hash_2

    first, second, third = (m.groupdict() for m in recoveries(caplog))
    assert first == {"dir": str(cfg.journal_directory), "snapshot": "0", "replayed": "0",
                     "last": "0", "hash": first["hash"]}
    assert second == {"dir": str(cfg.journal_directory), "snapshot": "0",
                      "replayed": str(last), "last": str(last), "hash": state_hash}
    assert (third["replayed"], third["last"], third["hash"]) == (
        str(last + 1), str(last + 1), state_hash_2)


async def test_the_order_book_survives_a_restart(tmp_path, token, ws_connect):
    """REST ``/orderbook`` and the WebSocket depth snapshot show the recovered book."""
    cfg = config(tmp_path, Fsync.BATCH)
    async with running(cfg) as (gw, client):
        await trading_session(client, token)
        book = (await client.get(f"/api/v1/markets/{BTC}/orderbook")).json()
        assert book["bids"]
        assert book["asks"]
    async with running(cfg) as (gw, client):
        depth = gw.engine.depth("BTC/USDT")
        assert len(depth.bids) == len(book["bids"])  # the engine did recover the book
        after = (await client.get(f"/api/v1/markets/{BTC}/orderbook")).json()
        assert (after["bids"], after["asks"]) == (book["bids"], book["asks"])
        async with ws_connect(f"{gw.endpoints.ws_url}/ws") as ws:
            await ws.send_message(json.dumps(
                {"action": "subscribe", "stream": "depth", "symbol": BTC, "id": 1}))
            assert (await next_json(ws))["type"] == "subscribed"
            snapshot = await next_json(ws)
        assert (snapshot["bids"], snapshot["asks"]) == (book["bids"], book["asks"])


async def test_snapshots_prune_segments_and_a_restart_uses_snapshot_plus_tail(
        tmp_path, token, caplog):
    cfg = config(tmp_path, Fsync.BATCH, snapshot_every=5, segment_bytes=256)
    directory = cfg.journal_directory
    caplog.set_level(logging.INFO, logger="trade_engine.gateway")
    async with running(cfg) as (gw, client):
        ids = await trading_session(client, token)
        ids += await trading_session(client, token)
        last = gw.engine.last_seq
    # Stopping waits for a snapshot being written (worker threads are not abandoned).
    [snapshot] = snapshots(directory)  # older snapshots were deleted
    snapshot_seq = int(snapshot.name[9:29])
    assert last - 5 <= snapshot_seq <= last
    files = segments(directory)
    firsts = [int(p.name[8:28]) for p in files]
    assert firsts[0] > 1, "the segments the snapshot covers are pruned"
    assert all(following > snapshot_seq + 1 for following in firsts[1:]), (
        firsts, snapshot_seq)
    assert [r.getMessage() for r in caplog.records if "snapshot written" in r.getMessage()]

    # A second run, with no more snapshots, leaves a tail after the snapshot.
    quiet = config(tmp_path, Fsync.BATCH, segment_bytes=256)
    async with running(quiet) as (gw, client):
        assert gw.engine.last_seq == last
        ids += await trading_session(client, token)
        before = await observe(client, token, ids)
        last, state_hash = gw.engine.last_seq, gw.engine.state_hash()
    assert snapshots(directory) == [snapshot]

    async with running(quiet) as (gw, client):
        assert gw.engine.state_hash() == state_hash
        assert await observe(client, token, ids) == before
    final = recoveries(caplog)[-1].groupdict()
    assert (final["snapshot"], final["replayed"], final["last"], final["hash"]) == (
        str(snapshot_seq), str(last - snapshot_seq), str(last), state_hash)


# ---------------------------------------------------------------- disk errors


def enospc(*_args: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def failing_journal_writes(directory: Path, code: int) -> Callable[[int, Any], int]:
    """``os.write`` that raises ``code`` for files inside ``directory`` only."""
    real_write = os.write
    inside = str(directory.resolve()) + os.sep

    def write(fd: int, data: Any) -> int:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if target.startswith(inside):
            raise OSError(code, os.strerror(code))
        return real_write(fd, data)

    return write


async def next_json(ws: Any) -> dict[str, Any]:
    return json.loads(await ws.get_message())


async def assert_silent(ws: Any, seconds: float = 0.3) -> None:
    with trio.move_on_after(seconds):
        message = await ws.get_message()
        raise AssertionError(f"unexpected message: {message}")


@pytest.mark.parametrize("seam", ["fsync", "write"])
async def test_a_disk_error_stops_order_entry_but_not_reads_or_streams(
        tmp_path, token, caplog, ws_connect, monkeypatch, seam):
    cfg = config(tmp_path, Fsync.BATCH)
    alice, bob = token("alice"), token("bob")
    async with running(cfg) as (gw, client):
        ws_url = gw.endpoints.ws_url
        resting = await place(client, alice, "SELL", "50000.00")
        assert resting.status_code == 201
        assert (await place(client, bob, "BUY", "49000.00")).status_code == 201
        before = await observe(client, token, [1, 2])
        state_hash = gw.engine.state_hash()

        async with ws_connect(f"{ws_url}/ws/orders?token={alice}") as orders, \
                ws_connect(f"{ws_url}/ws/trades") as trades, \
                ws_connect(f"{ws_url}/ws") as general:
            assert (await next_json(orders))["type"] == "subscribed"
            assert (await next_json(trades))["type"] == "subscribed"

            if seam == "fsync":
                monkeypatch.setattr(gateway._journal, "_fsync", enospc)
            else:
                monkeypatch.setattr(
                    os, "write", failing_journal_writes(cfg.journal_directory, errno.EIO))
            caplog.set_level(logging.INFO)

            # A burst that would trade against alice's order: none of it may be acknowledged.
            answers: list[httpx.Response] = []

            async def buy() -> None:
                answers.append(await place(client, bob, "BUY", "50000.00"))

            async with trio.open_nursery() as nursery:
                for _ in range(10):
                    nursery.start_soon(buy)
            assert [a.status_code for a in answers] == [503] * 10, [a.text for a in answers]
            for answer in answers:
                error = answer.json()["error"]
                assert error["code"] == "journal_unavailable"
                assert "order entry is stopped until a restart" in error["message"]
            expected = "No space left on device" if seam == "fsync" else "Input/output error"
            assert expected in answers[0].json()["error"]["message"]

            # Every command is refused now, not only new orders.
            cancel = await client.delete("/api/v1/orders/1", headers=bearer(alice))
            assert (cancel.status_code, cancel.json()["error"]["code"]) == (
                503, "journal_unavailable")
            amend = await client.patch("/api/v1/orders/1", headers=bearer(alice),
                                       json={"quantity": "0.00500"})
            assert amend.status_code == 503
            cancel_all = await client.delete("/api/v1/orders", headers=bearer(bob))
            assert cancel_all.status_code == 503

            health = (await client.get("/healthz")).json()
            assert health["status"] == "degraded"
            assert health["order_entry"] is False
            assert expected in health["error"]
            assert health["last_seq"] == 2

            # Reads are unchanged: nothing refused is visible anywhere.
            assert await observe(client, token, [1, 2]) == before
            assert (await client.get("/api/v1/orders/3", headers=bearer(bob))).status_code == 404
            assert gw.engine.last_seq == 2
            assert gw.engine.state_hash() == state_hash
            assert (await client.get("/stats")).status_code == 200
            await assert_silent(orders)
            await assert_silent(trades)

            # Streams keep working: a new subscription on an open connection, and a new
            # connection, get their snapshot of the unchanged book.
            await general.send_message(json.dumps(
                {"action": "subscribe", "stream": "depth", "symbol": BTC, "id": 1}))
            assert (await next_json(general))["type"] == "subscribed"
            depth = await next_json(general)
            assert depth["type"] == "depth_snapshot"
            assert depth["asks"] == [["50000.00", "0.01000"]]
            assert depth["bids"] == [["49000.00", "0.01000"]]
            async with ws_connect(f"{ws_url}/ws/markets/{BTC}") as market:
                assert (await next_json(market))["type"] == "subscribed"

        critical = [r for r in caplog.records if r.levelno == logging.CRITICAL]
        # One line stops order entry; the journal may add one when the broken
        # disk also refuses to cut the refused batch back out of the segment.
        stopped = [r for r in critical if r.name == "trade_engine.gateway"]
        assert len(stopped) == 1
        assert all(r.name in ("trade_engine.gateway", "trade_engine.journal") for r in critical)
        critical = stopped
        assert "journal write failed, order entry stopped" in critical[0].getMessage()
        assert expected in critical[0].getMessage()
    monkeypatch.undo()

    if seam == "write":
        # Nothing reached the file, so a restart recovers exactly the acknowledged state
        # and takes orders again.
        async with running(cfg) as (gw, client):
            assert gw.engine.state_hash() == state_hash
            assert await observe(client, token, [1, 2]) == before
            again = await place(client, bob, "BUY", "50000.00")
            assert again.status_code == 201, again.text
            assert again.json()["order_id"] == 3
            assert again.json()["status"] == "FILLED"
