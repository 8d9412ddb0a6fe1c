"""Public REST market data: markets, the L2 order book and recent trades."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio

TIMEOUT = 10


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def place(http, token: str, **fields: Any) -> dict[str, Any]:
    body = {"symbol": "BTC/USDT", "side": "BUY", "price": "50000.00", "quantity": "0.01"}
    body.update(fields)
    response = await http.post("/api/v1/orders", json=body, headers=bearer(token))
    assert response.status_code == 201, response.text
    return response.json()


async def test_markets_lists_the_default_markets_without_a_token(http):
    with trio.fail_after(TIMEOUT):
        response = await http.get("/api/v1/markets")
    assert response.status_code == 200
    markets = {m["symbol"]: m for m in response.json()["markets"]}
    assert set(markets) == {"BTC/USDT", "ETH/USDT"}
    btc = markets["BTC/USDT"]
    assert btc["base"] == "BTC"
    assert btc["quote"] == "USDT"
    assert btc["tick_size"] == "0.01"
    assert btc["lot_size"] == "0.00001"
    assert btc["min_notional"] == "5"
    assert btc["maker_fee_rate"] == "0.0005"
    assert btc["taker_fee_rate"] == "0.001"
    assert btc["fee_precision"] == 8


async def test_empty_orderbook(http):
    with trio.fail_after(TIMEOUT):
        response = await http.get("/api/v1/markets/BTC-USDT/orderbook")
    assert response.status_code == 200
    assert response.json() == {"symbol": "BTC/USDT", "seq": 0, "bids": [], "asks": []}


@pytest.mark.parametrize("symbol", ["BTC-USDT", "BTC%2FUSDT", "btc-usdt"])
async def test_orderbook_aggregates_levels_best_first(http, token, symbol):
    alice, bob = token("alice"), token("bob")
    with trio.fail_after(TIMEOUT):
        await place(http, alice, price="49999.00", quantity="0.01")
        await place(http, bob, price="49999.00", quantity="0.02")
        await place(http, alice, price="49998.50", quantity="0.5")
        await place(http, alice, price="49000.00", quantity="1")
        await place(http, bob, side="SELL", price="50001.00", quantity="0.3")
        await place(http, bob, side="SELL", price="50000.00", quantity="0.1")
        before = await http.get(f"/api/v1/markets/{symbol}/orderbook")
        limited = await http.get(f"/api/v1/markets/{symbol}/orderbook", params={"depth": "2"})
    assert before.status_code == 200, before.text
    book = before.json()
    assert book["symbol"] == "BTC/USDT"
    assert book["bids"] == [
        ["49999.00", "0.03000"], ["49998.50", "0.50000"], ["49000.00", "1.00000"]]
    assert book["asks"] == [["50000.00", "0.10000"], ["50001.00", "0.30000"]]
    assert isinstance(book["seq"], int)
    assert book["seq"] > 0
    assert limited.json()["bids"] == book["bids"][:2]
    assert limited.json()["asks"] == book["asks"]
    assert limited.json()["seq"] == book["seq"]


async def test_orderbook_seq_moves_with_the_book(http, token):
    alice = token("alice")
    with trio.fail_after(TIMEOUT):
        await place(http, alice, price="100.00", quantity="1")
        first = (await http.get("/api/v1/markets/BTC-USDT/orderbook")).json()
        await place(http, alice, price="101.00", quantity="1")
        second = (await http.get("/api/v1/markets/BTC-USDT/orderbook")).json()
        eth = (await http.get("/api/v1/markets/ETH-USDT/orderbook")).json()
    assert second["seq"] > first["seq"]
    assert eth == {"symbol": "ETH/USDT", "seq": 0, "bids": [], "asks": []}


async def test_orderbook_reflects_a_fill_and_a_cancel(http, token):
    alice, bob = token("alice"), token("bob")
    with trio.fail_after(TIMEOUT):
        ask = await place(http, alice, side="SELL", price="50000.00", quantity="0.05")
        await place(http, alice, side="SELL", price="50010.00", quantity="0.05")
        await place(http, bob, price="50000.00", quantity="0.02")
        partly = (await http.get("/api/v1/markets/BTC-USDT/orderbook")).json()
        await http.delete(f"/api/v1/orders/{ask['order_id']}", headers=bearer(alice))
        after = (await http.get("/api/v1/markets/BTC-USDT/orderbook")).json()
    assert partly["asks"] == [["50000.00", "0.03000"], ["50010.00", "0.05000"]]
    assert partly["bids"] == []
    assert after["asks"] == [["50010.00", "0.05000"]]


async def test_trades_newest_first_without_user_ids(http, token):
    alice, bob = token("alice"), token("bob")
    with trio.fail_after(TIMEOUT):
        await place(http, alice, side="SELL", price="50000.00", quantity="0.01")
        await place(http, alice, side="SELL", price="50001.00", quantity="0.01")
        await place(http, alice, side="SELL", price="50002.00", quantity="0.01")
        await place(http, bob, price="50002.00", quantity="0.03")
        response = await http.get("/api/v1/markets/BTC-USDT/trades")
        limited = await http.get("/api/v1/markets/BTC%2FUSDT/trades", params={"limit": "2"})
        eth = await http.get("/api/v1/markets/ETH-USDT/trades")
    assert response.status_code == 200
    trades = response.json()["trades"]
    assert [t["price"] for t in trades] == ["50002.00", "50001.00", "50000.00"]
    ids = [t["trade_id"] for t in trades]
    assert ids == sorted(ids, reverse=True)
    for trade in trades:
        assert trade["symbol"] == "BTC/USDT"
        assert trade["quantity"] == "0.01000"
        assert trade["taker_side"] == "BUY"
        assert trade["fee_asset"] == "USDT"
        assert "buyer_id" not in trade
        assert "seller_id" not in trade
    # maker (seller) pays 0.05%, taker (buyer) 0.1% of 500.02 USDT
    assert trades[0]["seller_fee"] == "0.25001000"
    assert trades[0]["buyer_fee"] == "0.50002000"
    assert limited.json()["trades"] == trades[:2]
    assert eth.json() == {"trades": []}


async def test_trades_carry_user_ids_when_configured(start_gateway, token):
    gateway = await start_gateway(public_trade_user_ids=True)
    async with httpx.AsyncClient(base_url=gateway.endpoints.rest_url, timeout=10) as http:
        with trio.fail_after(TIMEOUT):
            await place(http, token("alice"), side="SELL", price="50000.00", quantity="0.01")
            await place(http, token("bob"), price="50000.00", quantity="0.01")
            response = await http.get("/api/v1/markets/BTC-USDT/trades")
    [trade] = response.json()["trades"]
    assert trade["buyer_id"] == "bob"
    assert trade["seller_id"] == "alice"


@pytest.mark.parametrize("path", ["orderbook", "trades"])
async def test_unknown_market_is_404(http, path):
    with trio.fail_after(TIMEOUT):
        response = await http.get(f"/api/v1/markets/DOGE-USDT/{path}")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_symbol"


@pytest.mark.parametrize(("path", "name"), [("orderbook", "depth"), ("trades", "limit")])
async def test_invalid_depth_or_limit_is_400(http, path, name):
    for value in ["0", "-1", "abc", "1.5", "", "1001", "99999999999999999999", " 5", "0x10"]:
        with trio.fail_after(TIMEOUT):
            response = await http.get(f"/api/v1/markets/BTC-USDT/{path}", params={name: value})
        assert response.status_code == 400, (value, response.text)
        assert response.json()["error"]["code"] == f"invalid_{name}", value
        assert response.json()["error"]["field"] == name, value


@pytest.mark.parametrize(("path", "name"), [("orderbook", "depth"), ("trades", "limit")])
async def test_depth_and_limit_bounds_are_inclusive(http, path, name):
    with trio.fail_after(TIMEOUT):
        for value in ("1", "1000", "007"):
            response = await http.get(f"/api/v1/markets/BTC-USDT/{path}", params={name: value})
            assert response.status_code == 200, (value, response.text)


@pytest.mark.parametrize(("path", "name"), [("orderbook", "depth"), ("trades", "limit")])
async def test_non_ascii_digits_in_depth_or_limit_are_400(http, path, name):
    # "²".isdigit() is true but int("²") raises: the query must still answer 400, not 500.
    with trio.fail_after(TIMEOUT):
        response = await http.get(f"/api/v1/markets/BTC-USDT/{path}", params={name: "²"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == f"invalid_{name}"
