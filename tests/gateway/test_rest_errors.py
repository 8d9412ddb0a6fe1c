"""REST error answers: every error is ``{"error": {"code", "message", "field"}}``.

Bad input is 400 with a stable code (the engine's reason code when the engine
refused), a missing or bad token 401, an unknown id 404 and an oversized body
413. Each case goes over a real socket to a gateway on port 0.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
import trio

from gateway import issue_token
from gateway._auth import load_or_create_secret

TIMEOUT = 10
ORDER = {"symbol": "BTC/USDT", "side": "BUY", "price": "50000.00", "quantity": "0.01"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    """The error object, after checking the status and the envelope's exact shape."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"code", "message", "field"}
    assert isinstance(error["code"], str)
    assert isinstance(error["message"], str)
    assert error["message"]
    assert error["field"] is None or isinstance(error["field"], str)
    return error


async def post_order(http, token: str, body: Any = None, **changes: Any) -> httpx.Response:
    if body is None:
        body = {**ORDER, **changes}
        body = {k: v for k, v in body.items() if v is not ...}
    with trio.fail_after(TIMEOUT):
        return await http.post("/api/v1/orders", content=json.dumps(body),
                               headers=bearer(token) | {"content-type": "application/json"})


# ------------------------------------------------------------------ body shape


@pytest.mark.parametrize(
    "raw", [b"", b"{", b"{'symbol': 'BTC/USDT'}", b"not json", b"\xff\xfe", b'{"a":1}x'])
async def test_malformed_json_is_400_invalid_json(http, token, raw):
    with trio.fail_after(TIMEOUT):
        response = await http.post("/api/v1/orders", content=raw,
                                   headers=bearer(token("alice")))
    assert error_of(response, 400)["code"] == "invalid_json"


@pytest.mark.parametrize("body", [[], [ORDER], "BTC", 42, None, True], ids=repr)
async def test_non_object_body_is_400(http, token, body):
    with trio.fail_after(TIMEOUT):
        response = await http.post("/api/v1/orders", content=json.dumps(body),
                                   headers=bearer(token("alice")))
    assert error_of(response, 400)["code"] == "invalid_json"


@pytest.mark.parametrize("field", ["symbol", "side", "quantity", "price"])
async def test_missing_field_names_it(http, token, field):
    response = await post_order(http, token("alice"), **{field: ...})
    error = error_of(response, 400)
    assert error["code"] == "missing_field"
    assert error["field"] == field


async def test_market_order_needs_no_price(http, token):
    response = await post_order(http, token("alice"), type="market", price=...)
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("field", ["user_id", "order_id", "Price", "leverage"])
async def test_unknown_field_names_it(http, token, field):
    response = await post_order(http, token("alice"), **{field: "x"})
    error = error_of(response, 400)
    assert error["code"] == "unknown_field"
    assert error["field"] == field


async def test_amend_body_must_be_an_object_with_known_fields(http, token):
    alice = token("alice")
    placed = await post_order(http, alice)
    oid = placed.json()["order_id"]
    with trio.fail_after(TIMEOUT):
        not_json = await http.patch(f"/api/v1/orders/{oid}", content=b"{",
                                    headers=bearer(alice))
        a_list = await http.patch(f"/api/v1/orders/{oid}", json=["1"], headers=bearer(alice))
        bad_price = await http.patch(f"/api/v1/orders/{oid}", json={"price": 1.5},
                                     headers=bearer(alice))
    assert error_of(not_json, 400)["code"] == "invalid_json"
    assert error_of(a_list, 400)["code"] == "invalid_json"
    error = error_of(bad_price, 400)
    assert error["code"] == "invalid_price"
    assert error["field"] == "price"


# -------------------------------------------------------------- amounts


BAD_AMOUNTS = [1.5, 50000, "abc", "1e5", "NaN", "Infinity", "-1", "0", "0.00", " 1", "1,5",
               "+1", "0x10", "1.", ".5", "", True, [], {}]


@pytest.mark.parametrize("field", ["price", "quantity"])
async def test_bad_amount_is_invalid_with_its_field(http, token, field):
    # one gateway for every value: a failure names the value in the assertion message
    alice = token("alice")
    for value in BAD_AMOUNTS:
        response = await post_order(http, alice, **{field: value})
        assert response.status_code == 400, (value, response.text)
        assert response.json()["error"]["code"] == f"invalid_{field}", value
        assert response.json()["error"]["field"] == field, value
        error_of(response, 400)


@pytest.mark.parametrize(
    "price",
    ["92233720368547758.08", "1" * 27, "1" * 28, "9" * 30, "9" * 30 + ".99"],
)
async def test_huge_price_is_invalid_price_not_a_server_error(http, token, price):
    # Beyond 2**63-1 ticks the price is refused; past Decimal's 28-digit context the
    # division in MarketSpec.parse_price must not escape as a 500.
    error = error_of(await post_order(http, token("alice"), price=price), 400)
    assert error["code"] == "invalid_price"
    assert error["field"] == "price"


@pytest.mark.parametrize("quantity", ["1" * 26, "9" * 30])
async def test_huge_quantity_is_invalid_quantity_not_a_server_error(http, token, quantity):
    error = error_of(await post_order(http, token("alice"), quantity=quantity), 400)
    assert error["code"] == "invalid_quantity"
    assert error["field"] == "quantity"


@pytest.mark.parametrize("price", ["50000.001", "0.001", "50000.015"])
async def test_off_tick_price(http, token, price):
    error = error_of(await post_order(http, token("alice"), price=price), 400)
    assert error["code"] == "price_off_tick"
    assert error["field"] == "price"


@pytest.mark.parametrize("quantity", ["0.000001", "0.010005"])
async def test_off_lot_quantity(http, token, quantity):
    error = error_of(await post_order(http, token("alice"), quantity=quantity), 400)
    assert error["code"] == "quantity_off_lot"
    assert error["field"] == "quantity"


async def test_below_min_notional(http, token):
    # 100.00 * 0.01 = 1 USDT < 5 USDT
    error = error_of(await post_order(http, token("alice"), price="100.00"), 400)
    assert error["code"] == "below_min_notional"
    assert error["field"] == "quantity"


@pytest.mark.parametrize("symbol", ["DOGE/USDT", "BTCUSDT", "", 42, None])
async def test_unknown_symbol(http, token, symbol):
    error = error_of(await post_order(http, token("alice"), symbol=symbol), 400)
    assert error["code"] in {"unknown_symbol", "missing_field"}
    assert error["field"] == "symbol"
    if symbol is not None:
        assert error["code"] == "unknown_symbol"


@pytest.mark.parametrize(
    ("field", "value"),
    [("side", "LONG"), ("side", 1), ("type", "stop"), ("time_in_force", "day"),
     ("self_trade_prevention", "maybe"), ("post_only", "yes"), ("client_order_id", 7)],
)
async def test_bad_enum_fields(http, token, field, value):
    error = error_of(await post_order(http, token("alice"), **{field: value}), 400)
    assert error["code"] == f"invalid_{field}"
    assert error["field"] == field


# ------------------------------------------------------ engine rejections


async def test_post_only_that_would_cross(http, token):
    await post_order(http, token("alice"), side="SELL", price="50000.00")
    error = error_of(
        await post_order(http, token("bob"), price="50000.00", post_only=True), 400)
    assert error["code"] == "post_only_would_cross"


async def test_post_only_market_order_is_invalid(http, token):
    error = error_of(await post_order(http, token("bob"), type="MARKET", price=...,
                                      post_only=True), 400)
    assert error["code"] == "invalid_post_only"
    assert error["field"] == "post_only"


async def test_fok_not_fillable(http, token):
    await post_order(http, token("alice"), side="SELL", price="50000.00", quantity="0.01")
    error = error_of(await post_order(http, token("bob"), price="50000.00", quantity="0.02",
                                      time_in_force="FOK"), 400)
    assert error["code"] == "fok_not_fillable"


async def test_duplicate_client_order_id(http, token):
    alice = token("alice")
    assert (await post_order(http, alice, client_order_id="c-1")).status_code == 201
    error = error_of(await post_order(http, alice, client_order_id="c-1"), 400)
    assert error["code"] == "duplicate_client_order_id"
    assert error["field"] == "client_order_id"
    # another user may reuse it
    assert (await post_order(http, token("bob"), client_order_id="c-1")).status_code == 201


async def test_market_order_with_a_price_is_refused(http, token):
    error = error_of(await post_order(http, token("bob"), type="market"), 400)
    assert error["code"] == "invalid_price"
    assert error["field"] == "price"


async def test_rejections_change_nothing(http, token):
    alice = token("alice")
    error_of(await post_order(http, alice, price="abc"), 400)
    error_of(await post_order(http, alice, price="100.00"), 400)
    with trio.fail_after(TIMEOUT):
        orders = await http.get("/api/v1/orders", headers=bearer(alice))
        book = await http.get("/api/v1/markets/BTC-USDT/orderbook")
    assert orders.json() == {"orders": []}
    assert book.json()["bids"] == []


# ------------------------------------------------------------------ auth


ENDPOINTS = [("POST", "/api/v1/orders"), ("GET", "/api/v1/orders"),
             ("GET", "/api/v1/orders/1"), ("PATCH", "/api/v1/orders/1"),
             ("DELETE", "/api/v1/orders/1"), ("DELETE", "/api/v1/orders")]


async def test_every_private_endpoint_needs_a_token(http):
    with trio.fail_after(TIMEOUT):
        for method, path in ENDPOINTS:
            response = await http.request(
                method, path, json=ORDER if method in ("POST", "PATCH") else None)
            assert error_of(response, 401)["code"] == "unauthorized", (method, path)


@pytest.mark.parametrize(
    "authorization",
    ["", "Bearer", "Basic dXNlcjpwYXNz", "Bearer not-a-jwt", "Bearer a.b.c", "Token x"],
)
async def test_invalid_authorization_header_is_401(http, token, authorization):
    with trio.fail_after(TIMEOUT):
        for method, path in ENDPOINTS:
            response = await http.request(
                method, path, headers={"Authorization": authorization},
                json=ORDER if method in ("POST", "PATCH") else None)
            assert error_of(response, 401)["code"] == "unauthorized", (method, path)


async def test_expired_token_is_401(http, tmp_path):
    secret = load_or_create_secret(tmp_path / "data")
    expired = issue_token(secret, "alice", ttl=60, now=time.time() - 3600)
    response = await post_order(http, expired)
    error = error_of(response, 401)
    assert error["code"] == "unauthorized"
    assert "expired" in error["message"]


async def test_token_signed_with_another_secret_is_401(http):
    forged = issue_token("some-other-secret-of-sufficient-length-0123456789", "alice", ttl=60)
    error = error_of(await post_order(http, forged), 401)
    assert error["code"] == "unauthorized"


async def test_lowercase_bearer_scheme_is_accepted(http, token):
    with trio.fail_after(TIMEOUT):
        response = await http.get("/api/v1/orders",
                                  headers={"Authorization": f"bearer {token('alice')}"})
    assert response.status_code == 200


# ---------------------------------------------------------------- 404/405/413


async def test_unknown_route_and_wrong_method(http, token):
    with trio.fail_after(TIMEOUT):
        missing = await http.get("/api/v1/nope")
        wrong = await http.put("/api/v1/markets")
        # With a valid token: whether the path or the id is refused, no order is "abc".
        text_id = await http.get("/api/v1/orders/abc", headers=bearer(token("alice")))
    assert error_of(missing, 404)["code"] == "not_found"
    assert error_of(wrong, 405)["code"] == "method_not_allowed"
    assert text_id.status_code == 404


async def test_body_over_max_request_body_is_413(start_gateway, token):
    gateway = await start_gateway(max_request_body=1024)
    body = {**ORDER, "client_order_id": "x" * 2000}
    async with httpx.AsyncClient(base_url=gateway.endpoints.rest_url, timeout=10) as http:
        with trio.fail_after(TIMEOUT):
            big = await http.post("/api/v1/orders", json=body, headers=bearer(token("alice")))
            small = await http.post("/api/v1/orders", json=ORDER,
                                    headers=bearer(token("alice")))
    error = error_of(big, 413)
    assert error["code"] == "body_too_large"
    assert small.status_code == 201


async def test_chunked_body_over_max_request_body_is_413(start_gateway, token):
    gateway = await start_gateway(max_request_body=1024)
    payload = json.dumps({**ORDER, "client_order_id": "x" * 4000}).encode()

    async def chunks():
        for i in range(0, len(payload), 500):
            yield payload[i:i + 500]

    async with httpx.AsyncClient(base_url=gateway.endpoints.rest_url, timeout=10) as http:
        with trio.fail_after(TIMEOUT):
            response = await http.post("/api/v1/orders", content=chunks(),
                                       headers=bearer(token("alice")))
    assert error_of(response, 413)["code"] == "body_too_large"
