"""Subscriptions and the local book against a live gateway (port 0, in this process).

* A seeded random order flow through REST: the client's book equals
  ``GET /orderbook`` at every checkpoint, at the same seq.
* A proxy alters one depth update in flight: the checksum catches it, the
  book resynchronises from a fresh snapshot and the iterator says so.
* A proxy cuts the connection: the client reconnects and resumes every
  subscription from history, without a gap, a duplicate or a snapshot.
* A proxy goes silent: the heartbeat notices and replaces the connection.
* A reader slower than the stream: its subscription pauses and resumes from
  history, nothing lost.
"""

from __future__ import annotations

import logging
import random
from decimal import Decimal
from typing import Any

import httpx
import pytest
import trio
from proxy import Proxy

from gateway import Gateway, JournalSettings
from gateway.client import (
    Book,
    ConnectFailed,
    ConnectionLost,
    DepthSnapshot,
    DepthUpdate,
    HandshakeRejected,
    OrderUpdate,
    Reconnect,
    Resynced,
    SubscriptionError,
    TradeExecuted,
    connect,
)

TIMEOUT = 20
BTC = "BTC/USDT"
FAST = Reconnect(initial_delay=0.05, max_delay=0.2)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def rest_book(http: httpx.AsyncClient) -> dict[str, Any]:
    response = await http.get("/api/v1/markets/BTC-USDT/orderbook", params={"depth": 10})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def levels(rows: list[list[str]]) -> list[tuple[Decimal, Decimal]]:
    return [(Decimal(price), Decimal(quantity)) for price, quantity in rows]


async def assert_same_book(book: Book, http: httpx.AsyncClient) -> int:
    """Wait until the local book reaches REST's seq, then compare; the seq compared."""
    expected = await rest_book(http)
    while book.seq != expected["seq"] or not book.synced:
        assert book.seq is None or book.seq <= expected["seq"], (book.seq, expected["seq"])
        await book.wait_changed()
    assert book.bids == levels(expected["bids"])
    assert book.asks == levels(expected["asks"])
    return int(expected["seq"])


async def random_flow(http: httpx.AsyncClient, tokens: list[str], rng: random.Random,
                      count: int) -> None:
    """Limit orders around 50000 (some crossing), market orders and cancels, through REST."""
    open_orders: list[tuple[str, int]] = []
    for _ in range(count):
        token = rng.choice(tokens)
        roll = rng.random()
        if roll < 0.2 and open_orders:
            owner, order_id = open_orders.pop(rng.randrange(len(open_orders)))
            await http.delete(f"/api/v1/orders/{order_id}", headers=bearer(owner))
            continue
        side = rng.choice(["buy", "sell"])
        quantity = f"{rng.randint(1, 50) / 1000:.3f}"
        body: dict[str, Any] = {"symbol": BTC, "side": side, "quantity": quantity}
        if roll < 0.3:
            body["type"] = "market"
        else:
            body["price"] = f"{50000 + rng.randint(-15, 15)}.00"
        response = await http.post("/api/v1/orders", json=body, headers=bearer(token))
        assert response.status_code == 201, response.text
        order = response.json()
        if order["status"] in ("OPEN", "PARTIALLY_FILLED"):
            open_orders.append((token, order["order_id"]))


async def test_the_book_equals_rest_after_a_random_order_flow(gateway: Gateway, token, http):
    rng = random.Random(20261130)
    tokens = [token(user) for user in ("alice", "bob", "carol")]
    compared: list[int] = []
    with trio.fail_after(60):
        async with connect(gateway.endpoints.ws_url) as client, client.book("btc-usdt") as book, \
                client.subscribe("depth", "ETH/USDT") as eth:
            assert book.symbol == BTC
            assert (book.bids, book.asks, book.spread) == ([], [], None)
            for _ in range(8):
                await random_flow(http, tokens, rng, 40)
                compared.append(await assert_same_book(book, http))
            best_bid, best_ask = book.best_bid, book.best_ask
            assert best_bid is not None
            assert best_ask is not None
            assert book.spread == best_ask[0] - best_bid[0] > 0
            assert eth.buffered == 1  # its snapshot; nothing traded there
            assert isinstance(await eth.__anext__(), DepthSnapshot)
    assert compared == sorted(compared)
    assert compared[-1] > 100  # the flow really moved the book


async def test_a_checksum_mismatch_resyncs_the_book(gateway: Gateway, token, http, nursery,
                                                    caplog: pytest.LogCaptureFixture):
    proxy = Proxy(gateway.endpoints.ws_port)
    await nursery.start(proxy.serve)
    altered: list[str] = []

    def alter(text: str) -> str | None:
        # the first depth update that sets a level: one more lot, as if a byte flipped
        if altered or '"depth_update"' not in text or '"0.01000"' not in text:
            return None
        altered.append(text)
        return text.replace('"0.01000"', '"0.01001"', 1)

    proxy.alter = alter
    alice = token("alice")
    items: list[Any] = []
    with trio.fail_after(TIMEOUT):
        async with connect(proxy.url, compression=False) as client, \
                client.subscribe("depth", BTC) as depth:
            items.append(await depth.__anext__())  # the empty snapshot
            for price in ("49990.00", "49991.00", "49992.00"):
                response = await http.post("/api/v1/orders", headers=bearer(alice), json={
                    "symbol": BTC, "side": "buy", "price": price, "quantity": "0.01"})
                assert response.status_code == 201
            while not (isinstance(items[-1], DepthSnapshot) and len(items) > 1):
                items.append(await depth.__anext__())
            assert depth.book is not None
            await assert_same_book(depth.book, http)
    assert altered, "the proxy altered nothing"
    kinds = [type(item).__name__ for item in items]
    assert kinds[0] == "DepthSnapshot"
    resynced = [item for item in items if isinstance(item, Resynced)]
    assert [r.reason for r in resynced] == ["checksum_mismatch"], kinds
    assert kinds[-2:] == ["Resynced", "DepthSnapshot"]
    assert "depth checksum mismatch" in caplog.text
    assert proxy.accepted == 1  # resynchronised on the same connection


async def test_after_a_cut_every_subscription_resumes_without_a_gap(
        gateway: Gateway, token, http, nursery):
    proxy = Proxy(gateway.endpoints.ws_port)
    await nursery.start(proxy.serve)
    alice, bob = token("alice"), token("bob")

    async def trade(price: str) -> None:
        for user, side in ((alice, "sell"), (bob, "buy")):
            response = await http.post("/api/v1/orders", headers=bearer(user), json={
                "symbol": BTC, "side": side, "price": price, "quantity": "0.002"})
            assert response.status_code == 201

    with trio.fail_after(TIMEOUT):
        async with connect(proxy.url, alice, reconnect=FAST) as client, \
                client.subscribe("trades", BTC) as trades, \
                client.subscribe("orders") as orders, \
                client.subscribe("depth", BTC) as depth:
            assert isinstance(await depth.__anext__(), DepthSnapshot)
            await trade("50000.00")
            first = await trades.__anext__()
            assert isinstance(first, TradeExecuted)
            await proxy.cut()
            while client.connected:
                await trio.sleep(0.005)
            await trade("50001.00")  # while the client is away
            await trade("50002.00")
            await client.wait_connected()
            seen = [await trades.__anext__() for _ in range(2)]
            assert [(t.seq, t.price) for t in seen] == [
                (first.seq + 1, Decimal("50001.00")), (first.seq + 2, Decimal("50002.00"))]
            updates = [await orders.__anext__() for _ in range(6)]
            assert all(isinstance(u, OrderUpdate) for u in updates)
            assert [u.seq for u in updates] == list(range(1, 7))
            assert depth.book is not None
            await assert_same_book(depth.book, http)
            while depth.buffered:
                item = await depth.__anext__()
                assert isinstance(item, DepthUpdate), item  # no Resynced, no new snapshot
            assert client.reconnects == 1
            assert proxy.accepted == 2


async def test_a_silent_connection_is_found_dead_and_replaced(gateway: Gateway, http, nursery,
                                                             token):
    proxy = Proxy(gateway.endpoints.ws_port)
    await nursery.start(proxy.serve)
    with trio.fail_after(TIMEOUT):
        async with connect(proxy.url, reconnect=FAST, heartbeat_interval=0.2,
                           heartbeat_timeout=0.3) as client, \
                client.subscribe("trades", BTC) as trades:
            proxy.freeze()  # nothing from the server arrives any more; no FIN either
            while client.connected:
                await trio.sleep(0.01)
            await client.wait_connected()
            alice, bob = token("alice"), token("bob")
            for user, side in ((alice, "sell"), (bob, "buy")):
                await http.post("/api/v1/orders", headers=bearer(user), json={
                    "symbol": BTC, "side": side, "price": "50000.00", "quantity": "0.002"})
            assert isinstance(await trades.__anext__(), TradeExecuted)
            assert proxy.accepted == 2


async def test_a_slow_reader_is_paused_and_resumed_from_history(gateway: Gateway, token, http,
                                                                caplog):
    alice, bob = token("alice"), token("bob")
    with trio.fail_after(TIMEOUT):
        async with connect(gateway.endpoints.ws_url) as client, \
                client.subscribe("trades", BTC, buffer_size=3) as trades:
            for index in range(10):
                for user, side in ((alice, "sell"), (bob, "buy")):
                    await http.post("/api/v1/orders", headers=bearer(user), json={
                        "symbol": BTC, "side": side, "price": f"{50000 + index}.00",
                        "quantity": "0.002"})
            await client.ping()  # every trade has reached the client by now
            assert trades.buffered == 3
            received = [await trades.__anext__() for _ in range(10)]
    assert [t.seq for t in received] == list(range(1, 11))
    assert [t.price for t in received] == [Decimal(f"{50000 + i}.00") for i in range(10)]
    assert "buffer is full; pausing the subscription at seq 3" in caplog.text


async def test_refusals_are_typed(gateway: Gateway, token, tmp_path):
    url = gateway.endpoints.ws_url
    with trio.fail_after(TIMEOUT):
        async with connect(url) as client:
            with pytest.raises(SubscriptionError) as unknown:
                async with client.subscribe("depth", "DOGE/USDT"):
                    pass
            assert unknown.value.code == "unknown_symbol"
            assert "the markets are BTC/USDT, ETH/USDT" in unknown.value.message
            with pytest.raises(SubscriptionError) as unauthorized:
                async with client.subscribe("orders"):
                    pass
            assert unauthorized.value.code == "unauthorized"
            async with client.subscribe("trades", BTC):  # the connection is fine
                with pytest.raises(ValueError, match="cannot share a connection"):
                    async with client.subscribe("trades"):
                        pass
        with pytest.raises(HandshakeRejected) as rejected:
            async with connect(url, token("alice", ttl=-5)):
                pass
        assert rejected.value.status == 401
        assert "token expired" in str(rejected.value)
        assert "token=***" in str(rejected.value)
        with trio.socket.socket() as sock:
            await sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        with pytest.raises(ConnectFailed, match="connection refused; is the server running"):
            async with connect(f"ws://127.0.0.1:{port}"):
                pass
        with pytest.raises(ValueError, match="is not a WebSocket URL"):
            async with connect(gateway.endpoints.rest_url):
                pass


async def test_an_expired_token_ends_the_client(gateway: Gateway, token, caplog):
    caplog.set_level(logging.WARNING)

    async def follow_orders() -> None:
        async with connect(gateway.endpoints.ws_url, token("alice", ttl=1.0)) as client, \
                client.subscribe("orders") as orders:
            async for _ in orders:
                pass

    with trio.fail_after(TIMEOUT), pytest.raises(ConnectionLost) as lost:
        await follow_orders()
    assert lost.value.code == 4003
    assert "not reconnecting" in caplog.text


async def test_an_idle_connection_stays_up_on_heartbeats(start_gateway, idle_clock):
    gateway = await start_gateway(journal=JournalSettings(enabled=False))
    with trio.fail_after(TIMEOUT):
        async with connect(gateway.endpoints.ws_url, heartbeat_interval=1,
                           heartbeat_timeout=2) as client:
            await trio.sleep(15)  # ten pings' worth of silence, each answered by a pong
            assert (client.connected, client.reconnects) == (True, 0)
