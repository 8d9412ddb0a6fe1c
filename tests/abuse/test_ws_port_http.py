"""A plain HTTP request on the WebSocket port gets a JSON error naming the REST URL.

Someone's REST client pointed at the wrong port, or a browser tab, must learn
where REST is: 400 ``websocket_only``, in the shape of every handshake refusal,
then the connection is closed. A request body sent after the head is read and
dropped, so the answer is not lost to a reset.
"""

from __future__ import annotations

import json

import httpx
import pytest
import trio
from wsclient import TIMEOUT

from gateway import Gateway


async def answer_to(gateway: Gateway, *parts: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``parts`` one write each; the answer's status, headers and body, read until
    the server closes (a reset fails the test)."""
    received = b""
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream(gateway.endpoints.host, gateway.endpoints.ws_port)
        try:
            for part in parts:
                await stream.send_all(part)
            while data := await stream.receive_some(65536):
                received += data
        finally:
            await stream.aclose()
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip()
               for name, _, value in (line.partition(":") for line in lines)}
    assert int(headers["content-length"]) == len(body)
    return int(status_line.split(" ")[1]), headers, body


def get(path: str, host: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: */*\r\n\r\n".encode()


async def test_a_rest_request_is_pointed_to_the_rest_port(gateway):
    ends = gateway.endpoints
    status, headers, body = await answer_to(
        gateway, get("/api/v1/markets", f"{ends.host}:{ends.ws_port}"))
    assert status == 400
    assert headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert error["code"] == "websocket_only"
    assert f"{ends.rest_url}/api/v1/markets" in error["message"]
    assert f"port {ends.ws_port} serves WebSocket streams only" in error["message"]


async def test_httpx_on_the_wrong_port_reads_the_answer(gateway):
    ends = gateway.endpoints
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        response = await http.post(f"http://{ends.host}:{ends.ws_port}/api/v1/orders",
                                   json={"symbol": "BTC/USDT", "side": "buy"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "websocket_only"
    assert f"try {ends.rest_url}/api/v1/orders" in response.json()["error"]["message"]


async def test_a_body_sent_after_the_head_does_not_lose_the_answer(gateway):
    head = (b"POST /api/v1/orders HTTP/1.1\r\nHost: example.com:8081\r\n"
            b"Content-Type: application/json\r\nContent-Length: 40000\r\n\r\n")
    status, _, body = await answer_to(gateway, head, b"x" * 20000, b"y" * 20000)
    assert status == 400
    message = json.loads(body)["error"]["message"]
    rest_port = gateway.endpoints.rest_port
    assert f"try http://example.com:{rest_port}/api/v1/orders" in message  # the Host's name


@pytest.mark.parametrize(("host", "shown"), [
    ("", "127.0.0.1"),
    ("evil\" onload=x", "127.0.0.1"),
    ("[::1]:8081", "[::1]"),
    ("Exchange.Example:1", "Exchange.Example"),
])
async def test_the_url_uses_the_host_the_client_asked_for(gateway, host, shown):
    _, _, body = await answer_to(gateway, get("/healthz", host))
    assert f"http://{shown}:{gateway.endpoints.rest_port}/healthz" in json.loads(
        body)["error"]["message"]


async def test_the_websocket_path_without_upgrade_names_both(gateway):
    ends = gateway.endpoints
    _, _, body = await answer_to(gateway, get("/ws/trades", f"{ends.host}:{ends.ws_port}"))
    message = json.loads(body)["error"]["message"]
    assert f"ws://{ends.host}:{ends.ws_port}/ws" in message
    assert f"the REST API is at {ends.rest_url}/api/v1" in message
    assert "try" not in message
