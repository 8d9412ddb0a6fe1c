"""The page's market view in a real browser: it connects, keeps the book exact, prints trades.

The server is a real gateway in the test's nursery; orders go in over REST, and
what the page shows is compared with what the REST API says.
"""

from __future__ import annotations

import random

import httpx
import trio
from pageflow import (
    BTC,
    book_at,
    expect_ladder_matches_rest,
    has_data,
    rest_book,
    rest_order,
    row_with,
    seed_book,
)
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select

from gateway import JournalSettings

TIMEOUT = 30
ETH = "ETH/USDT"


async def test_the_page_connects_shows_the_book_and_prints_a_trade(gateway, http, token, page):
    alice, bob = token("alice"), token("bob")
    with trio.fail_after(TIMEOUT):
        await seed_book(http, alice, bob)
        await page.open(gateway.endpoints.rest_url + "/")
        await page.wait(has_data("status", "state", "open"), "status 'connected'")
        assert await page.text("status") == "connected"
        assert await page.run(lambda: page.driver.find_element(By.ID, "market")
                              .get_attribute("value")) == BTC
        await expect_ladder_matches_rest(page, http, levels=10)

        await rest_order(http, bob, side="sell", type="market", quantity="0.00400")
        answer = await http.get("/api/v1/markets/BTC-USDT/trades", params={"limit": 1})
        [trade] = answer.json()["trades"]
        row = await page.wait(row_with("tape", "trade-id", str(trade["trade_id"])),
                              f"trade {trade['trade_id']} on the tape")
        cells = await page.run(lambda: [td.text for td in row.find_elements(By.TAG_NAME, "td")])
        assert cells[1:] == [trade["price"], trade["quantity"], "sell"]
        assert await page.text("last-price") == f"last {trade['price']}"
        assert await page.data("chart", "points") == "1"
        await expect_ladder_matches_rest(page, http, levels=10)  # the trade took a bid
        await page.screenshot("trade")

        # another market: its own book, and an empty tape
        await rest_order(http, alice, symbol=ETH, side="buy", price="3000.00", quantity="0.0100")
        await page.run(lambda: Select(page.driver.find_element(By.ID, "market"))
                       .select_by_value(ETH))
        await expect_ladder_matches_rest(page, http, levels=10, symbol=ETH)
        assert await page.rows("tape", "tradeId") == []
        assert (await page.script("return location.hash")) == "#ETH-USDT"
    console = await page.run(page.driver.get_log, "browser")
    assert [entry for entry in console if entry["level"] == "SEVERE"] == []


async def test_the_ladder_stays_equal_to_the_rest_book_through_random_order_flow(
        start_gateway, token, page):
    # A window of 5 levels, so that levels are pushed out of it and come back.
    gateway = await start_gateway(websocket={"depth_levels": 5},
                                  journal=JournalSettings(enabled=False))
    users = [token("alice"), token("bob"), token("carol")]
    rng = random.Random(14)
    with trio.fail_after(TIMEOUT):
        async with httpx.AsyncClient(base_url=gateway.endpoints.rest_url, timeout=10) as http:
            await page.open(gateway.endpoints.rest_url + "/")
            await page.wait(has_data("book", "synced", "true"), "the depth snapshot")
            open_orders: list[tuple[str, int]] = []
            for _ in range(60):
                who = rng.choice(users)
                roll = rng.random()
                if roll < 0.15 and open_orders:
                    owner, order_id = open_orders.pop(rng.randrange(len(open_orders)))
                    await http.delete(f"/api/v1/orders/{order_id}",
                                      headers={"Authorization": f"Bearer {owner}"})
                elif roll < 0.25:
                    await rest_order(http, who, side=rng.choice(["buy", "sell"]), type="market",
                                     quantity=f"0.00{rng.randint(1, 9)}00")
                else:
                    side = rng.choice(["buy", "sell"])
                    price = 50000 + (rng.randint(1, 12) if side == "sell" else -rng.randint(0, 11))
                    quantity = f"0.00{rng.randint(1, 9)}{rng.randint(0, 9)}0"
                    placed = await rest_order(http, who, side=side, price=f"{price}.00",
                                              quantity=quantity)
                    open_orders.append((who, placed["order_id"]))
            book = await expect_ladder_matches_rest(page, http, levels=5)
    assert len(book["bids"]) == 5 or len(book["asks"]) == 5  # the window was full
    assert await page.data("book", "resyncs") == "0"
    assert int(await page.data("book", "checksums") or 0) > 10


async def test_a_checksum_mismatch_or_a_gap_resubscribes_and_the_book_comes_back(
        gateway, http, token, page):
    alice, bob = token("alice"), token("bob")
    with trio.fail_after(TIMEOUT):
        await seed_book(http, alice, bob, levels=3)
        await page.open(gateway.endpoints.rest_url + "/")
        await expect_ladder_matches_rest(page, http, levels=10)
        # A depth update the server never sent: right seq, wrong level, wrong checksum.
        await page.script(
            "const s = window.tradePage.market._depth; s._receive({type: 'depth_update', "
            "symbol: s.symbol, seq: s.seq + 1, bids: [['1.00', '1.00000']], asks: [], "
            "checksum: 12345})")
        await page.wait(has_data("book", "resyncs", "1"), "a resubscription")
        assert await page.data("book", "mismatches") == "1"
        book = await rest_book(http, 10)
        await page.wait(book_at(book["seq"]), "the book again")
        assert ["1.00", "1.00000"] not in await page.rows("bids", "price", "quantity")
        await rest_order(http, alice, side="buy", price="49000.00", quantity="0.01000")
        await expect_ladder_matches_rest(page, http, levels=10, mismatches=1)

        # A gap: a message two ahead of the last one.
        await page.script(
            "const s = window.tradePage.market._depth; s._receive({type: 'depth_update', "
            "symbol: s.symbol, seq: s.seq + 2, bids: [], asks: [], checksum: 0})")
        await page.wait(has_data("book", "resyncs", "2"), "a resubscription after the gap")
        await rest_order(http, bob, side="sell", price="50100.00", quantity="0.01000")
        await expect_ladder_matches_rest(page, http, levels=10, mismatches=1)  # a gap is none
