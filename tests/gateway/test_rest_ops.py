"""Operations endpoints: ``/healthz``, ``/stats`` (JSON) and ``/metrics`` (Prometheus text)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import open_websocket_url

TIMEOUT = 10
STREAMS = {"orders", "trades", "orderbook", "depth"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def place(http, token: str, **fields: Any) -> dict[str, Any]:
    body = {"symbol": "BTC/USDT", "side": "BUY", "price": "50000.00", "quantity": "0.01"}
    body.update(fields)
    response = await http.post("/api/v1/orders", json=body, headers=bearer(token))
    assert response.status_code == 201, response.text
    return response.json()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus exposition, keyed by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def wait_for(predicate, http, path: str) -> Any:
    """Poll a JSON endpoint until ``predicate(body)`` holds (the caller bounds the time)."""
    while True:
        body = (await http.get(path)).json()
        if predicate(body):
            return body
        await trio.sleep(0.01)


async def test_healthz_reports_last_seq(http, token):
    with trio.fail_after(TIMEOUT):
        before = await http.get("/healthz")
        await place(http, token("alice"))
        after = await http.get("/healthz")
    assert before.status_code == 200
    assert before.json()["status"] == "ok"
    assert before.json()["last_seq"] == 0
    assert after.json()["status"] == "ok"
    assert after.json()["last_seq"] == 1


async def test_healthz_needs_no_token_and_counts_engine_rejections(http, token):
    with trio.fail_after(TIMEOUT):
        await place(http, token("alice"))
        # below min notional: refused by the engine, which still consumed a sequence number
        refused = await http.post(
            "/api/v1/orders", headers=bearer(token("alice")),
            json={"symbol": "BTC/USDT", "side": "BUY", "price": "1.00", "quantity": "0.01"})
        health = await http.get("/healthz")
    assert refused.status_code == 400
    assert health.json()["last_seq"] == 2


async def test_stats_on_a_fresh_gateway(http):
    with trio.fail_after(TIMEOUT):
        response = await http.get("/stats")
    assert response.status_code == 200
    stats = response.json()
    for key in ("connections", "connections_total", "messages_dropped",
                "slow_consumer_disconnects", "heartbeat_timeouts", "protocol_errors",
                "handshakes_rejected", "commands", "commands_rejected", "busy_rejections",
                "messages_sent_total"):
        assert stats[key] == 0, key
    assert stats["subscriptions"] == dict.fromkeys(STREAMS, 0)
    assert stats["messages_sent"] == {}


async def test_stats_count_connections_subscriptions_and_messages(gateway, http, token):
    ws_url = gateway.endpoints.ws_url
    alice = token("alice")
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(f"{ws_url}/ws/orders?token={alice}") as orders, \
                open_websocket_url(f"{ws_url}/ws/trades") as trades, \
                open_websocket_url(f"{ws_url}/ws") as general:
            for ws in (orders, trades):
                assert json.loads(await ws.get_message())["type"] == "subscribed"
            await general.send_message(json.dumps(
                {"action": "subscribe", "stream": "depth", "symbol": "BTC-USDT", "id": 1}))
            assert json.loads(await general.get_message())["type"] == "subscribed"
            assert json.loads(await general.get_message())["type"] == "depth_snapshot"
            await general.send_message(json.dumps(
                {"action": "subscribe", "stream": "orderbook", "symbol": "BTC-USDT", "id": 2}))
            assert json.loads(await general.get_message())["type"] == "subscribed"
            assert json.loads(await general.get_message())["type"] == "orderbook_snapshot"
            await general.send_message("not json")
            assert json.loads(await general.get_message())["type"] == "error"

            stats = (await http.get("/stats")).json()
            assert stats["connections"] == 3
            assert stats["connections_total"] == 3
            assert stats["subscriptions"] == {"orders": 1, "trades": 1, "orderbook": 1,
                                              "depth": 1}
            assert stats["protocol_errors"] == 1

            await place(http, token("bob"), side="SELL")
            await place(http, alice)  # crosses: trade, fills, depth and top of book move
            for ws, kind in ((orders, "order_update"), (trades, "trade_executed")):
                assert json.loads(await ws.get_message())["type"] == kind
            stats = await wait_for(
                lambda s: {"orders", "trades", "depth", "orderbook"} <= set(s["messages_sent"]),
                http, "/stats")
            assert stats["messages_sent_total"] == sum(stats["messages_sent"].values())
            assert stats["commands"] == 2
            assert stats["commands_rejected"] == 0

        stats = await wait_for(lambda s: s["connections"] == 0, http, "/stats")
    assert stats["connections_total"] == 3
    assert stats["subscriptions"] == dict.fromkeys(STREAMS, 0)


async def test_metrics_is_prometheus_text_and_counters_move(http, token):
    with trio.fail_after(TIMEOUT):
        before = await http.get("/metrics")
        await place(http, token("alice"), side="SELL")
        await place(http, token("bob"))
        await http.post("/api/v1/orders", headers=bearer(token("bob")), json={
            "symbol": "BTC/USDT", "side": "BUY", "price": "1.00", "quantity": "0.01"})  # refused
        after = await http.get("/metrics")
    assert before.status_code == 200
    assert before.headers["content-type"].startswith("text/plain")
    first, second = samples(before.text), samples(after.text)
    families = {f.name: f.type for f in text_string_to_metric_families(after.text)}
    assert families["trade_engine_commands"] == "counter"
    assert families["trade_engine_ws_connections"] == "gauge"
    assert families["trade_engine_ws_subscriptions"] == "gauge"
    for name in ("trade_engine_ws_connections_opened", "trade_engine_ws_messages_dropped",
                 "trade_engine_ws_slow_consumer_disconnects", "trade_engine_busy_rejections"):
        assert families[name] == "counter"
    assert first[("trade_engine_commands_total", ())] == 0
    assert second[("trade_engine_commands_total", ())] == 3
    assert second[("trade_engine_commands_rejected_total", ())] == 1
    assert second[("trade_engine_ws_connections", ())] == 0
    for stream in STREAMS:
        assert second[("trade_engine_ws_subscriptions", (("stream", stream),))] == 0


async def test_metrics_follow_websocket_connections(gateway, http):
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(f"{gateway.endpoints.ws_url}/ws/trades") as ws:
            await ws.get_message()
            during = samples((await http.get("/metrics")).text)
    assert during[("trade_engine_ws_connections", ())] == 1
    assert during[("trade_engine_ws_connections_opened_total", ())] == 1
    assert during[("trade_engine_ws_subscriptions", (("stream", "trades"),))] == 1


async def test_two_gateways_do_not_share_metrics(start_gateway, token, tmp_path):
    first = await start_gateway()
    second = await start_gateway(data_dir=tmp_path / "second")
    async with httpx.AsyncClient(base_url=first.endpoints.rest_url, timeout=10) as one, \
            httpx.AsyncClient(base_url=second.endpoints.rest_url, timeout=10) as two:
        with trio.fail_after(TIMEOUT):
            await place(one, token("alice"))
            one_metrics = samples((await one.get("/metrics")).text)
            two_metrics = samples((await two.get("/metrics")).text)
    assert one_metrics[("trade_engine_commands_total", ())] == 1
    assert two_metrics[("trade_engine_commands_total", ())] == 0
