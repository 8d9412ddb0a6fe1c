"""CORS on the REST API: pages from the allowed origins may call it, others may not read it.

The origins are ``limits.allowed_origins`` (shared with the WebSocket Origin
check); empty allows any origin. Requests go over a raw connection so that the
exact headers are seen, as a browser would see them.
"""

from __future__ import annotations

import json

import pytest
import trio
from rawhttp import RawHttp, RawResponse, request

from gateway import LimitSettings
from gateway._rest._cors import MAX_AGE, CorsPolicy

TIMEOUT = 10
APP = "https://app.example.com"
ORDER = json.dumps({"symbol": "BTC/USDT", "side": "buy", "price": "50000.00",
                    "quantity": "0.01"}).encode()


async def exchange(gateway, head: bytes, body: bytes = b"") -> RawResponse:
    client = await RawHttp.open(gateway.endpoints.rest_port)
    try:
        with trio.fail_after(TIMEOUT):
            await client.send(head + body)
            return await client.response()
    finally:
        await client.aclose()


def preflight(origin: str, method: str = "POST",
              headers: str = "authorization, content-type") -> bytes:
    return request("OPTIONS", "/api/v1/orders", f"Origin: {origin}",
                   f"Access-Control-Request-Method: {method}",
                   f"Access-Control-Request-Headers: {headers}")


@pytest.fixture
async def restricted(start_gateway):
    return await start_gateway(limits=LimitSettings(allowed_origins=(APP,)))


async def test_preflight_from_an_allowed_origin(restricted):
    answer = await exchange(restricted, preflight(APP))
    assert answer.status == 204
    assert answer.headers["access-control-allow-origin"] == APP
    methods = {m.strip() for m in answer.headers["access-control-allow-methods"].split(",")}
    assert {"GET", "POST", "PATCH", "DELETE"} <= methods
    allowed = {h.strip().lower() for h in answer.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed
    assert answer.headers["access-control-max-age"] == str(MAX_AGE)
    assert "origin" in answer.headers["vary"].lower()


async def test_preflight_from_a_refused_origin_gets_no_cors_headers(restricted):
    answer = await exchange(restricted, preflight("https://evil.example"))
    assert answer.status == 403
    assert not [name for name in answer.headers if name.startswith("access-control-")]
    error = answer.json()["error"]
    assert error["code"] == "origin_not_allowed"
    assert "limits.allowed_origins" in error["message"]  # names the fix


async def test_actual_request_from_an_allowed_origin_carries_allow_origin(restricted, token):
    answer = await exchange(restricted, request(
        "POST", "/api/v1/orders", f"Origin: {APP}", f"Authorization: Bearer {token('alice')}",
        "Content-Type: application/json", body=ORDER), ORDER)
    assert answer.status == 201
    assert answer.headers["access-control-allow-origin"] == APP
    assert "origin" in answer.headers["vary"].lower()
    assert "retry-after" in answer.headers["access-control-expose-headers"].lower()


async def test_errors_carry_cors_headers_too(restricted):
    """A page must be able to read why it was refused (401, 404...)."""
    answer = await exchange(restricted, request(
        "POST", "/api/v1/orders", f"Origin: {APP}", body=ORDER), ORDER)
    assert answer.status == 401
    assert answer.headers["access-control-allow-origin"] == APP
    answer = await exchange(restricted, request("GET", "/nowhere", f"Origin: {APP}"))
    assert answer.status == 404
    assert answer.headers["access-control-allow-origin"] == APP


async def test_actual_request_from_a_refused_origin_gets_no_cors_headers(restricted):
    answer = await exchange(restricted, request(
        "GET", "/api/v1/markets", "Origin: https://evil.example"))
    assert answer.status == 200  # answered; the browser keeps it from the page
    assert not [name for name in answer.headers if name.startswith("access-control-")]
    assert "origin" in answer.headers["vary"].lower()


async def test_without_a_list_any_origin_is_allowed(gateway):
    origin = "http://localhost:5173"
    answer = await exchange(gateway, preflight(origin, "DELETE"))
    assert answer.status == 204
    assert answer.headers["access-control-allow-origin"] == origin
    answer = await exchange(gateway, request("GET", "/api/v1/markets", f"Origin: {origin}"))
    assert answer.headers["access-control-allow-origin"] == origin


async def test_same_origin_requests_carry_only_vary(gateway):
    answer = await exchange(gateway, request("GET", "/api/v1/markets"))
    assert answer.status == 200
    assert "origin" in answer.headers["vary"].lower()
    assert "access-control-allow-origin" not in answer.headers


async def test_options_without_cors_request_method_is_not_a_preflight(restricted):
    answer = await exchange(restricted, request("OPTIONS", "/api/v1/markets", f"Origin: {APP}"))
    assert answer.status == 200
    assert "GET" in answer.headers["allow"]


def test_policy_decisions_without_a_network():
    policy = CorsPolicy(["https://a.example"])
    assert policy.allows(b"https://a.example")
    assert not policy.allows(b"https://a.example.evil")
    assert not policy.allows(b"null")
    assert policy.preflight(b"https://b.example") is None
    assert dict(policy.headers(b"https://a.example"))[b"access-control-allow-origin"] \
        == b"https://a.example"
    assert policy.headers(None) == [(b"vary", b"Origin")]
    assert CorsPolicy([]).allows(b"null")
