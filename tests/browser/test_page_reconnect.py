"""The page across a server restart: it says it is not connected, reconnects by itself,
resumes its subscriptions where the server still has their history, and ends with the
server's book, trades and orders (nothing lost, nothing twice).
"""

from __future__ import annotations

from pathlib import Path

import attrs
import httpx
import trio
from pageflow import (
    expect_ladder_matches_rest,
    has_data,
    rest_order,
    row_with,
    seed_book,
)

from gateway import Config, Fsync, JournalSettings, serve

TIMEOUT = 30


async def test_the_page_reconnects_after_a_restart_and_catches_up(tmp_path: Path, token, page):
    config = Config(rest_port=0, ws_port=0, data_dir=tmp_path / "data",
                    journal=JournalSettings(fsync=Fsync.OFF))
    alice, bob = token("alice"), token("bob")
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as first:
            gateway = await first.start(serve, config)
            url = gateway.endpoints.rest_url
            async with httpx.AsyncClient(base_url=url, timeout=10) as http:
                await seed_book(http, alice, bob, levels=4)
                await rest_order(http, bob, side="sell", type="market", quantity="0.00300")
                await page.open(url + "/")
                await page.paste_token(alice)
                await page.wait(has_data("account", "state", "ready"), "the account ready")
                await expect_ladder_matches_rest(page, http, levels=10)
            gateway.shutdown()  # clients get {"type": "shutdown"} and 1001
        await page.wait(has_data("status", "state", "waiting"), "'not connected'")
        assert (await page.text("status")).startswith("not connected (1001")

        config = attrs.evolve(config, rest_port=gateway.endpoints.rest_port,
                              ws_port=gateway.endpoints.ws_port)
        async with trio.open_nursery() as second:
            await second.start(serve, config)
            async with httpx.AsyncClient(base_url=url, timeout=10) as http:
                await page.wait(has_data("status", "state", "open"), "'connected' again")
                await page.wait(has_data("account", "state", "ready"), "the account again")
                placed = await rest_order(http, alice, side="buy", price="49995.00",
                                          quantity="0.00500")
                await rest_order(http, bob, side="sell", type="market", quantity="0.00200")
                await expect_ladder_matches_rest(page, http, levels=10)
                trades = (await http.get("/api/v1/markets/BTC-USDT/trades")).json()["trades"]
                await page.wait(row_with("tape", "trade-id", str(trades[0]["trade_id"])),
                                "the new trade")
                shown = [int(row[0]) for row in await page.rows("tape", "tradeId")]
                assert shown == [trade["trade_id"] for trade in trades]  # none twice, none lost
                await page.wait(row_with("orders", "order-id", str(placed["order_id"])),
                                "alice's new order")
                listed = (await http.get("/api/v1/orders",
                                         headers={"Authorization": f"Bearer {alice}"})).json()
                rows = [int(row[0]) for row in await page.rows("orders", "orderId")]
                assert sorted(rows) == sorted(o["order_id"] for o in listed["orders"])
                await page.screenshot("reconnected")
            second.cancel_scope.cancel()
