"""REST order entry over a real socket: place, query, amend, cancel, cancel-all.

Every test talks to a gateway started on port 0 through ``httpx``; nothing
under test is mocked. Amounts travel as decimal strings.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import trio

TIMEOUT = 10
ISO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
ORDER_FIELDS = {
    "order_id", "client_order_id", "user_id", "symbol", "side", "type", "time_in_force",
    "post_only", "self_trade_prevention", "price", "quantity", "filled_quantity",
    "remaining_quantity", "status", "created_at", "updated_at",
}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def place(http, token: str, **fields: Any) -> dict[str, Any]:
    body = {"symbol": "BTC/USDT", "side": "BUY", "price": "50000.00", "quantity": "0.01"}
    body.update(fields)
    body = {k: v for k, v in body.items() if v is not None}
    response = await http.post("/api/v1/orders", json=body, headers=bearer(token))
    assert response.status_code == 201, response.text
    return response.json()


async def test_place_limit_order_returns_201_with_the_full_order(http, token):
    with trio.fail_after(TIMEOUT):
        response = await http.post(
            "/api/v1/orders",
            json={"symbol": "BTC/USDT", "side": "BUY", "price": "50000.01",
                  "quantity": "0.5", "client_order_id": "my-1"},
            headers=bearer(token("alice")),
        )
    assert response.status_code == 201
    assert response.headers["content-type"].startswith("application/json")
    order = response.json()
    assert set(order) == ORDER_FIELDS
    assert isinstance(order["order_id"], int)
    assert order["order_id"] > 0
    assert order["client_order_id"] == "my-1"
    assert order["user_id"] == "alice"
    assert order["symbol"] == "BTC/USDT"
    assert order["side"] == "BUY"
    assert order["type"].upper() == "LIMIT"
    assert order["time_in_force"].upper() == "GTC"
    assert order["post_only"] is False
    assert order["self_trade_prevention"].lower() == "none"
    assert order["price"] == "50000.01"
    assert order["quantity"] == "0.50000"
    assert order["filled_quantity"] == "0.00000"
    assert order["remaining_quantity"] == "0.50000"
    assert order["status"] == "OPEN"
    assert ISO_TIME.fullmatch(order["created_at"])
    assert ISO_TIME.fullmatch(order["updated_at"])


async def test_symbol_side_and_enums_are_case_insensitive(http, token):
    with trio.fail_after(TIMEOUT):
        order = await place(http, token("alice"), symbol="btc-usdt", side="sell",
                            price="60000", time_in_force="gtc", post_only=True)
    assert order["symbol"] == "BTC/USDT"
    assert order["side"] == "SELL"
    assert order["post_only"] is True
    assert order["price"] == "60000.00"


async def test_order_ids_are_distinct(http, token):
    alice = token("alice")
    with trio.fail_after(TIMEOUT):
        ids = [(await place(http, alice, price=f"{40000 + i}"))["order_id"] for i in range(3)]
    assert len(set(ids)) == 3


async def test_crossing_orders_of_two_users_fill(http, token):
    alice, bob = token("alice"), token("bob")
    with trio.fail_after(TIMEOUT):
        maker = await place(http, alice, side="SELL", price="50000.00", quantity="0.03")
        taker = await place(http, bob, side="BUY", price="50100.00", quantity="0.01")
        assert taker["status"] == "FILLED"
        assert taker["filled_quantity"] == "0.01000"
        assert taker["remaining_quantity"] == "0.00000"
        maker_now = (await http.get(f"/api/v1/orders/{maker['order_id']}",
                                    headers=bearer(alice))).json()
        assert maker_now["status"] == "PARTIALLY_FILLED"
        assert maker_now["filled_quantity"] == "0.01000"
        assert maker_now["remaining_quantity"] == "0.02000"

        rest = await place(http, bob, side="BUY", price="50000.00", quantity="0.05")
        assert rest["status"] == "PARTIALLY_FILLED"
        assert rest["filled_quantity"] == "0.02000"
        assert rest["remaining_quantity"] == "0.03000"
        maker_done = (await http.get(f"/api/v1/orders/{maker['order_id']}",
                                     headers=bearer(alice))).json()
    assert maker_done["status"] == "FILLED"
    assert maker_done["remaining_quantity"] == "0.00000"


async def test_market_order_fills_against_the_book(http, token):
    alice, bob = token("alice"), token("bob")
    with trio.fail_after(TIMEOUT):
        await place(http, alice, side="SELL", price="50000.00", quantity="0.02")
        order = await place(http, bob, type="market", side="BUY", price=None, quantity="0.01")
    assert order["type"].upper() == "MARKET"
    assert order["price"] is None
    assert order["status"] == "FILLED"
    assert order["filled_quantity"] == "0.01000"


async def test_market_order_on_an_empty_book_is_cancelled_unfilled(http, token):
    with trio.fail_after(TIMEOUT):
        order = await place(http, token("bob"), type="MARKET", price=None, quantity="0.01")
    assert order["status"] == "CANCELLED"
    assert order["filled_quantity"] == "0.00000"


async def test_ioc_remainder_is_cancelled(http, token):
    alice, bob = token("alice"), token("bob")
    with trio.fail_after(TIMEOUT):
        await place(http, alice, side="SELL", price="50000.00", quantity="0.01")
        order = await place(http, bob, price="50000.00", quantity="0.03", time_in_force="IOC")
    assert order["status"] == "CANCELLED"
    assert order["filled_quantity"] == "0.01000"


async def test_get_order_by_id(http, token):
    alice = token("alice")
    with trio.fail_after(TIMEOUT):
        placed = await place(http, alice)
        response = await http.get(f"/api/v1/orders/{placed['order_id']}", headers=bearer(alice))
    assert response.status_code == 200
    assert response.json() == placed


async def test_another_users_order_is_404(http, token):
    with trio.fail_after(TIMEOUT):
        placed = await place(http, token("alice"))
        bob = bearer(token("bob"))
        oid = placed["order_id"]
        responses = [
            await http.get(f"/api/v1/orders/{oid}", headers=bob),
            await http.patch(f"/api/v1/orders/{oid}", json={"price": "1"}, headers=bob),
            await http.delete(f"/api/v1/orders/{oid}", headers=bob),
        ]
    for response in responses:
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "order_not_found"
    # and it is still open for its owner
    with trio.fail_after(TIMEOUT):
        mine = await http.get(f"/api/v1/orders/{oid}", headers=bearer(token("alice")))
    assert mine.json()["status"] == "OPEN"


@pytest.mark.parametrize("order_id", ["999999", str(2**63 - 1), str(2**70)])
async def test_unknown_order_id_is_404(http, token, order_id):
    headers = bearer(token("alice"))
    with trio.fail_after(TIMEOUT):
        responses = [
            await http.get(f"/api/v1/orders/{order_id}", headers=headers),
            await http.patch(f"/api/v1/orders/{order_id}", json={"price": "1.00"},
                             headers=headers),
            await http.delete(f"/api/v1/orders/{order_id}", headers=headers),
        ]
    for response in responses:
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == "order_not_found"


async def test_cancel_with_an_order_id_past_64_bits_leaves_the_server_up(http, token):
    # The id reaches the engine (and its journal) only on DELETE; it must answer 404
    # like any unknown id, and the gateway must keep serving.
    alice = bearer(token("alice"))
    with trio.fail_after(TIMEOUT):
        response = await http.delete(f"/api/v1/orders/{2**64}", headers=alice)
        assert response.status_code == 404
        health = await http.get("/healthz")
        assert health.json()["status"] == "ok"
        placed = await place(http, token("alice"))
    assert placed["status"] == "OPEN"


async def test_list_open_orders_by_symbol_and_status(http, token):
    alice, bob = token("alice"), token("bob")
    with trio.fail_after(TIMEOUT):
        btc = await place(http, alice, side="SELL", price="50000.00", quantity="0.02")
        eth = await place(http, alice, symbol="ETH/USDT", side="BUY", price="3000.00",
                          quantity="0.1")
        filled = await place(http, alice, price="1000.00", quantity="0.01")
        await place(http, bob, side="SELL", price="1000.00", quantity="0.01")  # fills `filled`
        await place(http, bob, side="BUY", price="50000.00", quantity="0.01")  # half of `btc`
        await place(http, bob, side="BUY", price="100.00", quantity="1")  # bob's own

        async def ids(**params: str) -> list[int]:
            response = await http.get("/api/v1/orders", params=params, headers=bearer(alice))
            assert response.status_code == 200, response.text
            return [o["order_id"] for o in response.json()["orders"]]

        assert sorted(await ids()) == sorted([btc["order_id"], eth["order_id"]])
        assert await ids(symbol="BTC/USDT") == [btc["order_id"]]
        assert await ids(symbol="ETH-USDT") == [eth["order_id"]]
        assert await ids(status="PARTIALLY_FILLED") == [btc["order_id"]]
        assert await ids(status="OPEN") == [eth["order_id"]]
        assert await ids(symbol="BTC/USDT", status="OPEN") == []
        assert filled["order_id"] not in await ids()


async def test_list_orders_rejects_a_closed_status_and_unknown_symbol(http, token):
    headers = bearer(token("alice"))
    with trio.fail_after(TIMEOUT):
        bad_status = await http.get("/api/v1/orders", params={"status": "FILLED"},
                                    headers=headers)
        bad_symbol = await http.get("/api/v1/orders", params={"symbol": "DOGE/USDT"},
                                    headers=headers)
    assert bad_status.status_code == 400
    assert bad_status.json()["error"]["field"] == "status"
    assert bad_symbol.status_code == 400
    assert bad_symbol.json()["error"] == {
        "code": "unknown_symbol", "message": bad_symbol.json()["error"]["message"],
        "field": "symbol"}


async def test_amend_price_and_quantity(http, token):
    alice = token("alice")
    with trio.fail_after(TIMEOUT):
        placed = await place(http, alice, price="50000.00", quantity="0.01")
        oid = placed["order_id"]
        response = await http.patch(f"/api/v1/orders/{oid}", json={"price": "49000.50"},
                                    headers=bearer(alice))
        assert response.status_code == 200, response.text
        assert response.json()["price"] == "49000.50"
        assert response.json()["quantity"] == "0.01000"
        response = await http.patch(f"/api/v1/orders/{oid}", json={"quantity": "0.004"},
                                    headers=bearer(alice))
        assert response.status_code == 200, response.text
        assert response.json()["quantity"] == "0.00400"
        response = await http.patch(f"/api/v1/orders/{oid}",
                                    json={"price": "48000", "quantity": "0.02"},
                                    headers=bearer(alice))
        assert response.status_code == 200, response.text
        amended = response.json()
        fetched = (await http.get(f"/api/v1/orders/{oid}", headers=bearer(alice))).json()
    assert amended["order_id"] == oid
    assert amended["price"] == "48000.00"
    assert amended["quantity"] == "0.02000"
    assert amended["remaining_quantity"] == "0.02000"
    assert amended["status"] == "OPEN"
    assert fetched == amended


async def test_amend_that_crosses_trades(http, token):
    alice, bob = token("alice"), token("bob")
    with trio.fail_after(TIMEOUT):
        await place(http, alice, side="SELL", price="50000.00", quantity="0.01")
        bid = await place(http, bob, price="49000.00", quantity="0.01")
        response = await http.patch(f"/api/v1/orders/{bid['order_id']}",
                                    json={"price": "50000.00"}, headers=bearer(bob))
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "FILLED"


async def test_amend_rejections(http, token):
    alice = token("alice")
    with trio.fail_after(TIMEOUT):
        oid = (await place(http, alice))["order_id"]
        nothing = await http.patch(f"/api/v1/orders/{oid}", json={}, headers=bearer(alice))
        off_tick = await http.patch(f"/api/v1/orders/{oid}", json={"price": "1.001"},
                                    headers=bearer(alice))
        unknown = await http.patch(f"/api/v1/orders/{oid}", json={"side": "SELL"},
                                   headers=bearer(alice))
    assert nothing.status_code == 400
    assert nothing.json()["error"]["code"] == "nothing_to_amend"
    assert off_tick.status_code == 400
    assert off_tick.json()["error"] == {
        "code": "price_off_tick", "message": off_tick.json()["error"]["message"],
        "field": "price"}
    assert unknown.status_code == 400
    assert unknown.json()["error"]["code"] == "unknown_field"
    assert unknown.json()["error"]["field"] == "side"


async def test_cancel_order(http, token):
    alice = token("alice")
    with trio.fail_after(TIMEOUT):
        placed = await place(http, alice)
        oid = placed["order_id"]
        response = await http.delete(f"/api/v1/orders/{oid}", headers=bearer(alice))
        assert response.status_code == 200, response.text
        cancelled = response.json()
        assert cancelled["order_id"] == oid
        assert cancelled["status"] == "CANCELLED"
        assert cancelled["remaining_quantity"] == "0.00000"
        fetched = (await http.get(f"/api/v1/orders/{oid}", headers=bearer(alice))).json()
        assert fetched["status"] == "CANCELLED"
        listed = (await http.get("/api/v1/orders", headers=bearer(alice))).json()
        assert listed == {"orders": []}
        again = await http.delete(f"/api/v1/orders/{oid}", headers=bearer(alice))
    assert again.status_code == 400
    assert again.json()["error"]["code"] == "order_not_open"


async def test_cancel_all_returns_the_cancelled_ids(http, token):
    alice, bob = token("alice"), token("bob")
    with trio.fail_after(TIMEOUT):
        btc = [(await place(http, alice, price=f"{40000 + i}.00"))["order_id"] for i in range(3)]
        eth = (await place(http, alice, symbol="ETH/USDT", price="3000.00",
                           quantity="0.1"))["order_id"]
        bobs = (await place(http, bob, price="40000.00"))["order_id"]

        response = await http.delete("/api/v1/orders", params={"symbol": "BTC-USDT"},
                                     headers=bearer(alice))
        assert response.status_code == 200, response.text
        assert sorted(response.json()["cancelled"]) == sorted(btc)
        assert response.json()["count"] == 3
        left = (await http.get("/api/v1/orders", headers=bearer(alice))).json()["orders"]
        assert [o["order_id"] for o in left] == [eth]

        everything = await http.delete("/api/v1/orders", headers=bearer(alice))
        assert everything.status_code == 200
        assert everything.json() == {"cancelled": [eth], "count": 1}
        nothing = await http.delete("/api/v1/orders", headers=bearer(alice))
        assert nothing.status_code == 200
        assert nothing.json() == {"cancelled": [], "count": 0}
        bob_order = (await http.get(f"/api/v1/orders/{bobs}", headers=bearer(bob))).json()
    assert bob_order["status"] == "OPEN"
