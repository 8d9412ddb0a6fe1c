"""Every WebSocket limit end to end, with small configured limits.

Each limit is checked for its documented answer (HTTP status and error code at
the handshake, an error reply or a close code on an open connection) and for
its counter in ``/stats`` and ``/metrics``. Other IPs come from 127.0.0.2,
which Linux routes over loopback like 127.0.0.1. The rate limits run on
``idle_clock`` with the journal off: their buckets see exactly the time the test
sleeps, never the time the machine took.
"""

from __future__ import annotations

import json
import logging
import time

import jwt
import pytest
import trio
from trio_websocket import ConnectionClosed
from wsclient import TIMEOUT, Client, stats, wait_for_stats, ws_url

from gateway import AuthSettings, JournalSettings, LimitSettings, issue_token
from gateway._auth import load_or_create_secret

OTHER_IP = "127.0.0.2"
NO_JOURNAL = JournalSettings(enabled=False)  # no thread: idle_clock's jumps stay exact
SECRET = "abuse-tests-secret-" + "x" * 40


async def closed_code(ws) -> int:
    """Read until the server closes; the close code."""
    with trio.fail_after(TIMEOUT):
        while True:
            try:
                await ws.get_message()
            except ConnectionClosed as exc:
                return exc.reason.code


def refused(status: int, body: bytes) -> tuple[int, str]:
    return status, json.loads(body)["error"]["code"]


# ------------------------------------------------------------ handshake limits


async def test_connections_per_ip(start_gateway, ws_connect, upgrade, metric):
    gateway = await start_gateway(limits=LimitSettings(max_connections_per_ip=3))
    async with ws_connect(ws_url(gateway)) as a, ws_connect(ws_url(gateway)) as b:
        async with ws_connect(ws_url(gateway)) as c:
            for ws in (a, b, c):
                await Client(ws).ping()
            status, _, body = await upgrade(gateway)
            assert refused(status, body) == (429, "too_many_connections")
            status, _, _ = await upgrade(gateway, source=OTHER_IP)
            assert status == 101  # another address is not affected
        await wait_for_stats(gateway, lambda s: s["connections"] == 2)
        status, _, _ = await upgrade(gateway)  # a slot was freed
        assert status == 101
    report = await stats(gateway)
    assert report["connections_refused"] == {"too_many_connections": 1}
    assert await metric(
        gateway, 'trade_engine_ws_connections_refused_total{reason="too_many_connections"}'
    ) == 1


async def test_connections_per_user(start_gateway, token, ws_connect, upgrade, metric):
    gateway = await start_gateway(limits=LimitSettings(max_connections_per_user=2))
    alice = token("alice")
    async with ws_connect(ws_url(gateway, "/ws/orders", alice)) as one:
        async with ws_connect(ws_url(gateway, "/ws", alice)) as two:
            for ws in (one, two):
                await Client(ws).ping()
            for path in ("/ws/orders", "/ws", "/ws/trades"):
                status, _, body = await upgrade(gateway, f"{path}?token={alice}")
                assert refused(status, body) == (429, "too_many_connections"), path
            status, _, body = await upgrade(gateway, f"/ws/orders?token={token('bob')}")
            assert status == 101, body
            status, _, _ = await upgrade(gateway, "/ws")  # anonymous: no user limit
            assert status == 101
        await wait_for_stats(gateway, lambda s: s["connections"] == 1)
        status, _, _ = await upgrade(gateway, f"/ws/orders?token={alice}")
        assert status == 101
    assert (await stats(gateway))["connections_refused"] == {"too_many_connections": 3}
    assert await metric(
        gateway, 'trade_engine_ws_connections_refused_total{reason="too_many_connections"}'
    ) == 3


async def test_new_connections_per_second_per_ip(start_gateway, upgrade, metric, idle_clock):
    gateway = await start_gateway(limits=LimitSettings(
        connections_per_second_per_ip=2.0, connection_burst_per_ip=3), journal=NO_JOURNAL)
    for _ in range(3):
        status, _, _ = await upgrade(gateway)
        assert status == 101
    status, headers, body = await upgrade(gateway)
    assert refused(status, body) == (429, "rate_limited")
    assert headers["retry-after"] == "1"
    assert headers["content-type"] == "application/json"
    status, _, _ = await upgrade(gateway, source=OTHER_IP)
    assert status == 101  # the bucket is per IP
    await trio.sleep(float(headers["retry-after"]))
    status, _, _ = await upgrade(gateway)
    assert status == 101
    report = await stats(gateway)
    assert report["connections_refused"] == {"rate_limited": 1}
    assert report["handshakes_rejected"] == 1
    assert await metric(
        gateway, 'trade_engine_ws_connections_refused_total{reason="rate_limited"}') == 1


async def test_allowed_origins(start_gateway, upgrade, metric, caplog):
    caplog.set_level(logging.INFO, logger="trade_engine.gateway")
    origins = ("https://app.example", "https://admin.example")
    gateway = await start_gateway(limits=LimitSettings(allowed_origins=origins))
    assert any("Origin allowed: https://app.example, https://admin.example" in r.getMessage()
               for r in caplog.records)
    for headers in ({"Origin": "https://evil.example"}, {}, {"Origin": "https://app.example.evil"}):
        status, _, body = await upgrade(gateway, headers=headers)
        assert refused(status, body) == (403, "origin_not_allowed"), headers
    for origin in origins:
        status, _, _ = await upgrade(gateway, headers={"Origin": origin})
        assert status == 101
    assert (await stats(gateway))["connections_refused"] == {"origin_not_allowed": 3}
    assert await metric(
        gateway, 'trade_engine_ws_connections_refused_total{reason="origin_not_allowed"}') == 3


async def test_any_origin_by_default_is_logged_at_start(start_gateway, upgrade, caplog):
    caplog.set_level(logging.INFO, logger="trade_engine.gateway")
    gateway = await start_gateway()
    lines = [r.getMessage() for r in caplog.records if r.name == "trade_engine.gateway"]
    assert any("any origin is accepted" in line for line in lines), lines
    status, _, _ = await upgrade(gateway, headers={"Origin": "https://anything.example"})
    assert status == 101


# ------------------------------------------------------------ tokens


async def test_token_expiry_closes_an_open_private_stream_with_4003(
    gateway, token, ws_connect, upgrade, metric
):
    short = token("alice", ttl=1.5)
    expires_at = jwt.decode(short, options={"verify_signature": False})["exp"]
    async with ws_connect(ws_url(gateway, "/ws/orders", short)) as ws:
        subscribed = json.loads(await ws.get_message())
        assert subscribed["type"] == "subscribed"
        assert await closed_code(ws) == 4003
        assert time.time() >= expires_at - 0.05  # closed at exp, not before
    report = await wait_for_stats(gateway, lambda s: s["connections"] == 0)
    assert report["token_expirations"] == 1
    assert await metric(gateway, "trade_engine_ws_token_expirations_total") == 1
    status, _, body = await upgrade(gateway, f"/ws/orders?token={short}")
    assert refused(status, body) == (401, "unauthorized")


async def test_token_not_yet_valid_is_401(gateway, tmp_path, upgrade, http):
    now = int(time.time())
    early = jwt.encode({"sub": "alice", "exp": now + 3600, "nbf": now + 600},
                       load_or_create_secret(tmp_path / "data"), algorithm="HS256")
    status, _, body = await upgrade(gateway, f"/ws/orders?token={early}")
    assert refused(status, body) == (401, "unauthorized")
    response = await http.get("/api/v1/orders", headers={"Authorization": f"Bearer {early}"})
    assert response.status_code == 401


async def test_issuer_and_audience_when_configured(start_gateway, upgrade):
    gateway = await start_gateway(
        auth=AuthSettings(jwt_secret=SECRET, issuer="te-issuer", audience="te-clients"))
    good = issue_token(SECRET, "alice", ttl=600, issuer="te-issuer", audience="te-clients")
    status, _, _ = await upgrade(gateway, f"/ws/orders?token={good}")
    assert status == 101
    for bad in (
        issue_token(SECRET, "alice", ttl=600, issuer="someone-else", audience="te-clients"),
        issue_token(SECRET, "alice", ttl=600, issuer="te-issuer", audience="other"),
        issue_token(SECRET, "alice", ttl=600, audience="te-clients"),  # no iss
        issue_token(SECRET, "alice", ttl=600, issuer="te-issuer"),  # no aud
        issue_token("another-secret-" + "y" * 40, "alice", ttl=600, issuer="te-issuer",
                    audience="te-clients"),
    ):
        status, _, body = await upgrade(gateway, f"/ws/orders?token={bad}")
        assert refused(status, body) == (401, "unauthorized")


# ------------------------------------------------------------ open connections


async def test_message_rate_errors_then_4029(start_gateway, ws_connect, metric):
    gateway = await start_gateway(limits=LimitSettings(messages_per_second=0.1, message_burst=5))
    async with ws_connect(ws_url(gateway)) as ws:
        client = Client(ws)
        for i in range(5):
            assert (await client.request(action="ping", id=i))["type"] == "pong"
        for i in range(5):  # refused, answered, and the connection stays open
            await client.send({"action": "subscribe", "stream": "trades", "id": f"s{i}"})
            error = await client.receive()
            assert (error["type"], error["code"]) == ("error", "rate_limited")
        assert (await stats(gateway))["subscriptions"]["trades"] == 0  # ignored, not applied
        await client.send({"action": "ping", "id": "one-too-many"})
        assert await closed_code(ws) == 4029
    report = await wait_for_stats(gateway, lambda s: s["connections"] == 0)
    assert report["messages_rate_limited"] == 6
    assert report["rate_limit_disconnects"] == 1
    assert await metric(gateway, "trade_engine_ws_messages_rate_limited_total") == 6
    assert await metric(gateway, "trade_engine_ws_rate_limit_disconnects_total") == 1


async def test_a_client_that_slows_down_recovers(start_gateway, ws_connect, idle_clock):
    """Three messages at once are one too many; 0.15 s later two more may go.

    On ``idle_clock`` the three take no time at all: in real time they had to
    make two round trips within 50 ms, before the bucket refilled a token.
    """
    gateway = await start_gateway(limits=LimitSettings(messages_per_second=20, message_burst=2),
                                  journal=NO_JOURNAL)
    async with ws_connect(ws_url(gateway)) as ws:
        client = Client(ws)
        for _ in range(3):
            for _ in range(2):
                await client.ping()
            await client.send({"action": "ping", "id": "over"})
            assert (await client.receive())["code"] == "rate_limited"
            await trio.sleep(0.15)  # 3 tokens' worth at 20/s; the bucket holds 2
        await client.ping()
    report = await wait_for_stats(gateway, lambda s: s["connections"] == 0)
    assert (report["messages_rate_limited"], report["rate_limit_disconnects"]) == (3, 0)


async def test_subscriptions_per_connection(start_gateway, ws_connect):
    gateway = await start_gateway(websocket={"max_subscriptions": 2})
    async with ws_connect(ws_url(gateway, "/ws/trades")) as ws:  # auto-subscribed: one
        client = Client(ws)
        assert (await client.receive())["type"] == "subscribed"
        await client.subscribe("orderbook", "BTC/USDT")
        error = await client.request(action="subscribe", stream="depth", symbol="ETH/USDT", id=7)
        assert error == {"type": "error", "id": 7, "code": "too_many_subscriptions",
                         "message": "at most 2 subscriptions per connection", "field": None}
        await client.unsubscribe("trades")
        await client.subscribe("depth", "ETH/USDT")
        report = await stats(gateway)
        assert report["subscriptions"] == {"orders": 0, "trades": 0, "orderbook": 1, "depth": 1}
        assert report["protocol_errors"] == 1  # no counter of its own


@pytest.mark.parametrize("binary", [False, True])
async def test_message_size_error_then_1009(start_gateway, ws_connect, binary):
    gateway = await start_gateway(websocket={"max_message_size": 1000})

    def sized(size: int) -> str | bytes:
        text = '{"action": "ping", "id": 1}'
        text += " " * (size - len(text))
        return text.encode() if binary else text

    async with ws_connect(ws_url(gateway)) as ws:
        client = Client(ws)
        await client.send(sized(1000))
        assert (await client.receive()) == {"type": "pong", "id": 1}
        for size in (1001, 4000):
            await client.send(sized(size))
            error = await client.receive()
            assert (error["type"], error["code"]) == ("error", "message_too_large"), size
        await client.ping()  # still connected
        await client.send(sized(4001))
        assert await closed_code(ws) == 1009
    report = await wait_for_stats(gateway, lambda s: s["connections"] == 0)
    assert report["protocol_errors"] == 2  # the two message_too_large errors; 1009 is not counted


async def test_message_size_counts_bytes_not_characters(start_gateway, ws_connect):
    """``max_message_size`` is documented in bytes: 600 three-byte characters are 1800 bytes."""
    gateway = await start_gateway(websocket={"max_message_size": 1000})
    async with ws_connect(ws_url(gateway)) as ws:
        client = Client(ws)
        await client.send('{"action": "ping", "id": "' + "€" * 600 + '"}')
        error = await client.receive()
        assert (error["type"], error["code"]) == ("error", "message_too_large"), error
        await client.send('{"action": "ping", "id": "' + "😀" * 1100 + '"}')  # 4400 bytes
        assert await closed_code(ws) == 1009
