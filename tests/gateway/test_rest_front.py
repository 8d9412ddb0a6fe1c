"""What every REST answer shares: JSON ends with a newline, and a WebSocket on the
REST port is told where the WebSocket port is."""

from __future__ import annotations

import base64
import json

import httpx
import pytest
import trio
from rawhttp import RawHttp, request

TIMEOUT = 10
ORDER = {"symbol": "BTC/USDT", "side": "buy", "price": "50000.00", "quantity": "0.01"}


async def test_every_json_answer_ends_with_a_newline(gateway, http, token):
    alice = {"Authorization": f"Bearer {token('alice')}"}
    with trio.fail_after(TIMEOUT):
        placed = await http.post("/api/v1/orders", json=ORDER, headers=alice)
        order_id = placed.json()["order_id"]
        answers = [
            placed,
            await http.get("/api/v1/markets"),
            await http.get("/api/v1/markets/BTC-USDT/orderbook"),
            await http.get("/api/v1/markets/BTC-USDT/trades"),
            await http.get(f"/api/v1/orders/{order_id}", headers=alice),
            await http.get("/api/v1/orders", headers=alice),
            await http.patch(f"/api/v1/orders/{order_id}", json={"price": "49999.00"},
                             headers=alice),
            await http.delete(f"/api/v1/orders/{order_id}", headers=alice),
            await http.delete("/api/v1/orders", headers=alice),
            await http.get("/healthz"),
            await http.get("/stats"),
            # errors: ours, the engine's, the web framework's, and the front's
            await http.post("/api/v1/orders", json=ORDER),
            await http.post("/api/v1/orders", json={**ORDER, "price": "1.001"}, headers=alice),
            await http.get("/api/v1/orders/424242", headers=alice),
            await http.get("/nowhere"),
            await http.put("/api/v1/orders", headers=alice),
            await http.post("/api/v1/orders", content=b" " * 70_000, headers=alice),
        ]
    statuses = [answer.status_code for answer in answers]
    assert statuses == [201, *[200] * 10, 401, 400, 404, 404, 405, 413]
    for answer in answers:
        assert answer.headers["content-type"] == "application/json", answer.url
        assert answer.content.endswith(b"}\n"), (answer.url, answer.content[-20:])
        json.loads(answer.content)


@pytest.mark.parametrize("path", ["/ws", "/ws/trades", "/ws/orders"])
async def test_websocket_handshake_on_the_rest_port_names_the_websocket_url(gateway, path):
    key = base64.b64encode(b"0123456789abcdef").decode()
    client = await RawHttp.open(gateway.endpoints.rest_port)
    try:
        with trio.fail_after(TIMEOUT):
            await client.send(request(
                "GET", f"{path}?token=secret-token", "Upgrade: websocket",
                "Connection: Upgrade", f"Sec-WebSocket-Key: {key}",
                "Sec-WebSocket-Version: 13"))
            answer = await client.response()
            assert await client.closed_by_server()
    finally:
        await client.aclose()
    assert answer.status == 400
    assert answer.headers["content-type"] == "application/json"
    assert answer.body.endswith(b"\n")
    error = answer.json()["error"]
    assert error["code"] == "wrong_port"
    ws_port = gateway.endpoints.ws_port
    assert f"ws://127.0.0.1:{ws_port}{path}" in error["message"]
    assert str(ws_port) in error["message"]
    assert "secret-token" not in error["message"]  # the query (a token) is not echoed


async def test_websocket_handshake_for_another_path_points_to_ws(gateway):
    """The suggestion is a real WebSocket endpoint, and the host is the one the client used."""
    key = base64.b64encode(b"fedcba9876543210").decode()
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        answer = await http.get(
            f"http://localhost:{gateway.endpoints.rest_port}/api/v1/markets",
            headers={"Upgrade": "websocket", "Connection": "Upgrade",
                     "Sec-WebSocket-Key": key, "Sec-WebSocket-Version": "13"})
    assert answer.status_code == 400
    assert f"ws://localhost:{gateway.endpoints.ws_port}/ws" in answer.json()["error"]["message"]


async def test_405_names_the_allowed_methods_in_allow(http):
    with trio.fail_after(TIMEOUT):
        answer = await http.put("/api/v1/orders/1")
    assert answer.status_code == 405
    assert answer.headers["allow"] == "GET, PATCH, DELETE, HEAD, OPTIONS"
    assert "PATCH" in answer.json()["error"]["message"]


async def test_head_is_get_without_the_body(gateway):
    client = await RawHttp.open(gateway.endpoints.rest_port)
    try:
        with trio.fail_after(TIMEOUT):
            await client.send(request("HEAD", "/api/v1/markets"))
            await client.send(request("GET", "/api/v1/markets"))
            head = await client.response_to_head()
            get = await client.response()
    finally:
        await client.aclose()
    assert head.status == 200
    assert head.headers["content-length"] == get.headers["content-length"]
    assert get.json()["markets"]


@pytest.mark.parametrize("order_id", ["0", "-1", "1.5", "abc", "9" * 25, "9" * 5000])
async def test_an_order_id_no_order_can_have_is_404(http, token, order_id):
    with trio.fail_after(TIMEOUT):
        answer = await http.get(f"/api/v1/orders/{order_id}",
                                headers={"Authorization": f"Bearer {token('alice')}"})
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "order_not_found"
