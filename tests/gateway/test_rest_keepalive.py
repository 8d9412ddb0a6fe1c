"""An answer given before the request body arrived never wedges the connection (issue 12).

Each case sends a request's head alone, reads the answer the server gives
without waiting for the body, then sends the body in a second write and a
second request on the same connection, which must be answered. A body the
server will not read (over ``max_request_body``, or chunked) is answered with
``Connection: close``, and then the server closes the connection by itself.
"""

from __future__ import annotations

import json

import pytest
import trio
from rawhttp import RawHttp, RawResponse, request

from gateway import LimitSettings
from gateway._rest._body import DRAIN_TIMEOUT

TIMEOUT = 10
PAUSE = 0.1
ORDER = json.dumps({"symbol": "BTC/USDT", "side": "buy", "price": "50000.00",
                    "quantity": "0.01"}).encode()
BOOK = request("GET", "/api/v1/markets/BTC/USDT/orderbook")


def bearer(token: str) -> str:
    return f"Authorization: Bearer {token}"


async def answer_before_body_then_next(gateway, head: bytes, body: bytes) -> RawResponse:
    """The early answer; asserts the next request on the connection is answered."""
    client = await RawHttp.open(gateway.endpoints.rest_port)
    try:
        with trio.fail_after(TIMEOUT):
            await client.send(head)
            early = await client.response()  # before the body: the server did not wait
            # A client that takes a moment (as one that waits for the answer does):
            # the server has finished its answer before the body arrives.
            await trio.sleep(PAUSE)
            await client.send(body)
            await client.send(BOOK)
            after = await client.response()
    finally:
        await client.aclose()
    assert after.status == 200, after
    assert after.json()["symbol"] == "BTC/USDT"
    assert early.headers.get("connection") != "close"  # kept alive, as announced
    return early


async def test_401_before_the_body_keeps_the_connection(gateway):
    head = request("POST", "/api/v1/orders", "Content-Type: application/json", body=ORDER)
    early = await answer_before_body_then_next(gateway, head, ORDER)
    assert early.status == 401
    assert early.json()["error"]["code"] == "unauthorized"


async def test_401_for_a_bad_token_keeps_the_connection(gateway):
    head = request("POST", "/api/v1/orders", bearer("not-a-token"), body=ORDER)
    early = await answer_before_body_then_next(gateway, head, ORDER)
    assert early.status == 401


async def test_429_before_the_body_keeps_the_connection(start_gateway, token, nursery):
    gateway = await start_gateway(limits=LimitSettings(rest_requests_per_second=0.001,
                                                       rest_burst=1))
    alice = token("alice")
    client = await RawHttp.open(gateway.endpoints.rest_port)
    try:
        with trio.fail_after(TIMEOUT):
            await client.send(request("GET", "/api/v1/orders", bearer(alice)))
            assert (await client.response()).status == 200  # the burst of one is used up
    finally:
        await client.aclose()
    head = request("POST", "/api/v1/orders", bearer(alice), body=ORDER)
    early = await answer_before_body_then_next(gateway, head, ORDER)
    assert early.status == 429
    assert early.json()["error"]["code"] == "rate_limited"
    assert gateway.engine.open_orders("alice") == []


async def test_400_before_the_body_keeps_the_connection(gateway):
    body = b'{"ignored": true}'
    head = request("GET", "/api/v1/markets/BTC/USDT/trades?limit=0", body=body)
    early = await answer_before_body_then_next(gateway, head, body)
    assert early.status == 400
    assert early.json()["error"]["code"] == "invalid_limit"


async def test_404_order_not_found_before_the_body_keeps_the_connection(gateway, token):
    body = b'{"reason": "a body on a DELETE, which nobody reads"}'
    head = request("DELETE", "/api/v1/orders/999999", bearer(token("alice")), body=body)
    early = await answer_before_body_then_next(gateway, head, body)
    assert early.status == 404
    assert early.json()["error"]["code"] == "order_not_found"


@pytest.mark.parametrize(("method", "path", "status", "code"), [
    ("POST", "/api/v1/no-such-thing", 404, "not_found"),
    ("PUT", "/api/v1/orders", 405, "method_not_allowed"),
    # outside /api/v1, quart-trio answers (and cancels the task that sent the answer)
    ("POST", "/no-such-thing", 404, "not_found"),
    ("POST", "/healthz", 405, "method_not_allowed"),
])
async def test_routing_errors_before_the_body_keep_the_connection(
        gateway, method, path, status, code):
    head = request(method, path, "Content-Type: application/json", body=ORDER)
    early = await answer_before_body_then_next(gateway, head, ORDER)
    assert early.status == status
    assert early.json()["error"]["code"] == code


async def test_body_and_next_request_in_one_write_after_an_early_answer(gateway):
    client = await RawHttp.open(gateway.endpoints.rest_port)
    try:
        with trio.fail_after(TIMEOUT):
            await client.send(request("POST", "/api/v1/orders", body=ORDER))
            assert (await client.response()).status == 401
            await trio.sleep(PAUSE)
            await client.send(ORDER + BOOK + BOOK)
            assert (await client.response()).status == 200
            assert (await client.response()).status == 200
    finally:
        await client.aclose()


async def test_declared_body_over_the_limit_is_413_and_the_server_closes(start_gateway, token):
    gateway = await start_gateway(max_request_body=1024)
    client = await RawHttp.open(gateway.endpoints.rest_port)
    try:
        with trio.fail_after(TIMEOUT):
            await client.send(request("POST", "/api/v1/orders", bearer(token("alice")),
                                      length=4096))
            early = await client.response()
            assert early.status == 413
            assert early.headers["connection"] == "close"
            error = early.json()["error"]
            assert error["code"] == "body_too_large"
            assert "4096" in error["message"]
            assert "max_request_body" in error["message"]
            await client.send(b" " * 4096)  # the client sends it anyway: dropped
            assert await client.closed_by_server()
    finally:
        await client.aclose()
    assert gateway.engine.open_orders("alice") == []


async def test_chunked_body_over_the_limit_is_413_and_the_server_closes(start_gateway, token):
    gateway = await start_gateway(max_request_body=1024)
    client = await RawHttp.open(gateway.endpoints.rest_port)
    try:
        with trio.fail_after(TIMEOUT):
            await client.send(request("POST", "/api/v1/orders", bearer(token("alice")),
                                      "Transfer-Encoding: chunked"))
            await client.send(b"800\r\n" + b" " * 0x800 + b"\r\n")
            early = await client.response()
            assert early.status == 413
            assert early.headers["connection"] == "close"
            assert early.json()["error"]["code"] == "body_too_large"
            await client.send(b"10\r\n" + b" " * 16 + b"\r\n0\r\n\r\n")
            assert await client.closed_by_server()
    finally:
        await client.aclose()


async def test_413_then_the_client_keeps_sending_the_server_still_closes(start_gateway):
    """The unwanted body is dropped for a moment (so the 413 is read), not for ever."""
    gateway = await start_gateway(max_request_body=1024)
    client = await RawHttp.open(gateway.endpoints.rest_port)
    try:
        with trio.fail_after(TIMEOUT):
            await client.send(request("POST", "/api/v1/orders", length=10_000_000))
            assert (await client.response()).status == 413
            async with trio.open_nursery() as nursery:
                async def keep_sending() -> None:
                    try:
                        while True:
                            await client.send(b" " * 65536)
                            await trio.sleep(0.05)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass
                nursery.start_soon(keep_sending)
                assert await client.closed_by_server()
                nursery.cancel_scope.cancel()
    finally:
        await client.aclose()


async def test_a_declared_body_that_never_comes_is_waited_for_a_bounded_time(
        gateway, autojump_clock):
    client = await RawHttp.open(gateway.endpoints.rest_port)
    try:
        with trio.fail_after(TIMEOUT + DRAIN_TIMEOUT):
            await client.send(request("POST", "/api/v1/orders", body=ORDER))
            assert (await client.response()).status == 401
            started = trio.current_time()
            assert await client.closed_by_server()  # the body never came
            assert trio.current_time() - started >= DRAIN_TIMEOUT
    finally:
        await client.aclose()


@pytest.mark.parametrize("path", ["/healthz", "/api/v1/markets"])
async def test_an_idle_connection_is_closed_after_the_keep_alive_timeout(
        gateway, autojump_clock, path):
    """hypercorn closes a connection idle for ``keep_alive_timeout`` (5 s) after an answer,
    also one from quart-trio, which cancels the task that would restart that timer."""
    client = await RawHttp.open(gateway.endpoints.rest_port)
    try:
        with trio.fail_after(60):
            await client.send(request("GET", path))
            assert (await client.response()).status == 200
            started = trio.current_time()
            assert await client.closed_by_server()
            assert trio.current_time() - started >= 5
    finally:
        await client.aclose()
