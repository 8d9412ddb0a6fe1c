"""The page across server restarts: it says it is not connected, reconnects by itself,
resumes its subscriptions where the server still has their history (a restart with the
journal), starts afresh where it has not (a new epoch), and always ends with the server's
book, trades and orders: nothing lost, nothing twice, nothing stale.
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
COUNTERS = """
const {market, account} = window.tradePage;
const subscriptions = [market._depth, market._trades, account._subscription];
return {resumes: subscriptions.map(s => s.resumes), resyncs: subscriptions.map(s => s.resyncs),
        epochs: subscriptions.map(s => s.epoch)};
"""


async def expect_page_equals_server(page, http: httpx.AsyncClient, alice: str) -> None:
    await expect_ladder_matches_rest(page, http, levels=10)
    trades = (await http.get("/api/v1/markets/BTC-USDT/trades")).json()["trades"]
    if trades:
        await page.wait(row_with("tape", "trade-id", str(trades[0]["trade_id"])), "the last trade")
    shown = [int(row[0]) for row in await page.rows("tape", "tradeId")]
    assert shown == [trade["trade_id"] for trade in trades]  # none twice, none lost, none stale
    listed = (await http.get("/api/v1/orders", headers={"Authorization": f"Bearer {alice}"}))
    rows = [int(row[0]) for row in await page.rows("orders", "orderId") if row[0] is not None]
    assert sorted(rows) == sorted(order["order_id"] for order in listed.json()["orders"])


async def restart_and_trade(page, config: Config, alice: str, bob: str) -> None:
    """The page reconnects to a server started on the same ports, which then trades."""
    async with trio.open_nursery() as nursery:
        gateway = await nursery.start(serve, config)
        async with httpx.AsyncClient(base_url=gateway.endpoints.rest_url, timeout=10) as http:
            await page.wait(has_data("status", "state", "open"), "'connected' again")
            await page.wait(has_data("account", "state", "ready"), "the account again")
            placed = await rest_order(http, alice, side="buy", price="49995.00",
                                      quantity="0.00500")
            await rest_order(http, bob, side="sell", type="market", quantity="0.00200")
            await page.wait(row_with("orders", "order-id", str(placed["order_id"])),
                            "alice's new order")
            await expect_page_equals_server(page, http, alice)
        gateway.shutdown()
    await page.wait(has_data("status", "state", "waiting"), "'not connected'")


async def test_the_page_resumes_after_a_restart_and_starts_afresh_on_a_new_epoch(
        tmp_path: Path, token, page):
    config = Config(rest_port=0, ws_port=0, data_dir=tmp_path / "data",
                    journal=JournalSettings(fsync=Fsync.OFF))
    alice, bob = token("alice"), token("bob")
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            gateway = await nursery.start(serve, config)
            url = gateway.endpoints.rest_url
            async with httpx.AsyncClient(base_url=url, timeout=10) as http:
                await seed_book(http, alice, bob, levels=4)
                await rest_order(http, bob, side="sell", type="market", quantity="0.00300")
                await page.open(url + "/")
                await page.paste_token(alice)
                await page.wait(has_data("account", "state", "ready"), "the account ready")
                await expect_page_equals_server(page, http, alice)
            gateway.shutdown()  # clients get {"type": "shutdown"} and 1001
        await page.wait(has_data("status", "state", "waiting"), "'not connected'")
        assert (await page.text("status")).startswith("not connected (1001")
        before = await page.script(COUNTERS)

        # The same data directory: the journal refills the history, the page resumes.
        config = attrs.evolve(config, rest_port=gateway.endpoints.rest_port,
                              ws_port=gateway.endpoints.ws_port)
        await restart_and_trade(page, config, alice, bob)
        resumed = await page.script(COUNTERS)
        assert resumed["resumes"] == [1, 1, 1]
        assert resumed["resyncs"] == [0, 0, 0]
        assert resumed["epochs"] == before["epochs"]
        await page.screenshot("resumed")

        # Without a journal: a new epoch, so the page cannot resume and starts afresh.
        await restart_and_trade(page, attrs.evolve(config, journal=JournalSettings(enabled=False)),
                                alice, bob)
        fresh = await page.script(COUNTERS)
        assert fresh["resumes"] == [1, 1, 1]
        assert fresh["epochs"] != resumed["epochs"]
        await page.screenshot("new-epoch")
