"""Connections: the opening handshake, routing, authentication and cleanup.

Seed scenarios: ConnectAndDisconnect, MultipleClientsSimultaneous,
ClientDisconnectCleanup, ErrorOnInvalidUpgrade, MissingUserID, GetStats.
"""

from __future__ import annotations

import httpx
import pytest
import trio
from wsclient import TIMEOUT, RawClient, open_client, rejected_handshake, stats, wait_for_stats


async def test_connect_ping_and_disconnect(gateway):
    async with open_client(gateway) as client:
        assert (await client.request(action="ping", id=1)) == {"type": "pong", "id": 1}
        assert (await stats(gateway))["connections"] == 1
    after = await wait_for_stats(gateway, lambda s: s["connections"] == 0)
    assert after["connections_total"] == 1


async def test_client_close_is_a_normal_closure(gateway):
    async with open_client(gateway) as client:
        await client.ping()
        with trio.fail_after(TIMEOUT):
            await client.ws.aclose(1000, "bye")
        assert client.ws.closed is not None
        assert client.ws.closed.code == 1000


async def test_many_clients_connect_simultaneously(gateway):
    count = 50
    connected, checked = trio.Event(), trio.Event()
    ready = 0

    async def one(i: int) -> None:
        nonlocal ready
        async with open_client(gateway) as client:
            assert (await client.request(action="ping", id=i))["id"] == i
            ready += 1
            if ready == count:
                connected.set()
            with trio.fail_after(TIMEOUT):
                await checked.wait()
            assert (await client.request(action="ping", id=i))["id"] == i

    async def check_when_all_connected() -> None:
        with trio.fail_after(TIMEOUT):
            await connected.wait()
        assert (await stats(gateway))["connections"] == count
        checked.set()

    async with trio.open_nursery() as nursery:
        for i in range(count):
            nursery.start_soon(one, i)
        nursery.start_soon(check_when_all_connected)
    final = await wait_for_stats(gateway, lambda s: s["connections"] == 0)
    assert final["connections_total"] == count


async def test_disconnect_removes_connection_and_every_subscription(gateway, token):
    async with open_client(gateway, token=token("alice")) as client:
        await client.subscribe("orders")
        await client.subscribe("trades")
        await client.subscribe("trades", "BTC/USDT")
        await client.subscribe("orderbook", "BTC/USDT")
        await client.subscribe("depth", "ETH/USDT")
        during = await stats(gateway)
        assert during["connections"] == 1
        assert during["subscriptions"] == {"orders": 1, "trades": 2, "orderbook": 1, "depth": 1}
    after = await wait_for_stats(gateway, lambda s: s["connections"] == 0)
    assert after["subscriptions"] == {"orders": 0, "trades": 0, "orderbook": 0, "depth": 0}


async def test_abrupt_tcp_close_is_cleaned_up_too(gateway):
    raw = await RawClient.connect(gateway, "/ws/trades")
    await wait_for_stats(gateway, lambda s: s["subscriptions"]["trades"] == 1)
    await raw.aclose()  # no closing handshake: the peer just vanishes
    after = await wait_for_stats(gateway, lambda s: s["connections"] == 0)
    assert after["subscriptions"]["trades"] == 0


async def test_plain_http_get_without_upgrade_gets_an_http_error(gateway):
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        with trio.fail_after(TIMEOUT):
            response = await http.get(gateway.endpoints.ws_url.replace("ws://", "http://") + "/ws")
    assert 400 <= response.status_code < 500
    # ...and the listener still serves WebSocket clients afterwards.
    async with open_client(gateway) as client:
        await client.ping()


@pytest.mark.parametrize("path", ["/", "/nope", "/ws/unknown", "/api/v1/orders", "/wsx"])
async def test_unknown_path_is_rejected_with_404(gateway, path):
    status, body = await rejected_handshake(gateway, path)
    assert status == 404
    assert body is not None
    assert body["error"]["code"] == "not_found"


@pytest.mark.parametrize("path", ["/ws/markets/DOGE-USDT", "/ws/trades?symbol=DOGE/USDT"])
async def test_unknown_symbol_in_the_path_is_rejected_with_404(gateway, path):
    status, body = await rejected_handshake(gateway, path)
    assert status == 404
    assert body is not None
    assert body["error"]["code"] == "unknown_symbol"


@pytest.mark.parametrize("token_value", [None, "", "not-a-jwt", "forged"])
async def test_orders_endpoint_without_a_valid_token_is_refused_with_401(
    gateway, token, token_value
):
    if token_value == "forged":
        good = token("alice")
        token_value = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    path = "/ws/orders" if token_value is None else "/ws/orders?token=" + token_value
    status, body = await rejected_handshake(gateway, path)
    assert status == 401
    assert body is not None
    assert body["error"]["code"] == "unauthorized"
    assert (await stats(gateway))["handshakes_rejected"] == 1


async def test_expired_token_is_refused_with_401(gateway, token):
    status, _ = await rejected_handshake(gateway, "/ws/orders", token("alice", ttl=-60))
    assert status == 401


async def test_bad_token_on_a_public_endpoint_is_refused_too(gateway):
    status, _ = await rejected_handshake(gateway, "/ws/trades", "garbage")
    assert status == 401


async def test_valid_token_opens_the_orders_endpoint(gateway, token):
    async with open_client(gateway, "/ws/orders", token("alice")) as client:
        await client.ping()
        assert (await stats(gateway))["subscriptions"]["orders"] == 1


async def test_rejected_handshakes_do_not_disturb_connected_clients(gateway):
    async with open_client(gateway) as client:
        for _ in range(5):
            assert (await rejected_handshake(gateway, "/ws/orders"))[0] == 401
        await client.ping()
    assert (await stats(gateway))["handshakes_rejected"] == 5


async def test_stats_report_the_documented_fields(gateway):
    async with open_client(gateway, "/ws/markets/BTC-USDT") as client:
        await client.ping()
        report = await stats(gateway)
    assert report["connections"] == 1
    assert report["connections_total"] == 1
    assert report["subscriptions"] == {"orders": 0, "trades": 0, "orderbook": 1, "depth": 0}
    for counter in ("messages_dropped", "slow_consumer_disconnects", "heartbeat_timeouts",
                    "protocol_errors", "handshakes_rejected"):
        assert report[counter] == 0, counter
