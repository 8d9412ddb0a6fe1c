"""The page's account panel in a real browser: token, order form, my orders, errors.

Orders placed from the form are checked over REST (``GET /api/v1/orders/{id}``);
errors shown are compared with the REST API's own message for the same input.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import trio
from pageflow import (
    BTC,
    bearer,
    expect_ladder_matches_rest,
    has_data,
    no_row_with,
    rest_order,
    row_with,
    seed_book,
    trade_around,
)
from selenium.webdriver.common.by import By

TIMEOUT = 30
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "page.png"
"""Rewritten from a test run when TRADE_ENGINE_DOCS_SCREENSHOT=1."""


async def fill(page, **fields: str) -> None:
    def typing() -> None:
        for name, value in fields.items():
            element = page.driver.find_element(By.ID, f"o-{name}")
            element.clear()
            element.send_keys(value)

    await page.run(typing)


async def click(page, selector: str) -> None:
    await page.run(lambda: page.driver.find_element(By.CSS_SELECTOR, selector).click())


async def test_an_order_from_the_form_appears_in_my_orders_and_is_cancelled_there(
        gateway, http, token, page):
    alice, bob = token("alice"), token("bob")
    with trio.fail_after(TIMEOUT):
        await trade_around(http, bob, alice)  # bob's bids, alice's market sells: a chart
        await seed_book(http, alice, bob)
        resting = await rest_order(http, alice, side="buy", price="49900.00", quantity="0.02000")
        await rest_order(http, bob, side="sell", type="market", quantity="0.05000")  # trades
        await page.open(gateway.endpoints.rest_url + "/")
        await page.wait(has_data("status", "state", "open"), "status 'connected'")
        assert await page.text("account") == "no token: the order form needs one"
        assert not await page.run(lambda: page.driver.find_element(By.ID, "o-submit").is_enabled())

        await page.paste_token(alice)
        await page.wait(has_data("account", "state", "ready"), "the account ready")
        assert (await page.text("account")).startswith("signed in as alice")
        # alice's orders from before, listed over REST and kept live by the stream
        await page.wait(row_with("orders", "order-id", str(resting["order_id"])),
                        "alice's resting order")
        stored = await page.script(
            "return [sessionStorage.getItem('trade-engine.token'), localStorage.length, "
            "location.href]")
        assert stored[0] == alice
        assert stored[1] == 0
        assert alice not in stored[2]

        await fill(page, price="49999.00", quantity="0.01000")
        await click(page, "#o-submit")
        await page.wait(has_data("notice", "kind", "ok"), "the order placed")
        notice = await page.text("notice")
        assert notice.startswith("placed order ")
        order_id = int(notice.split()[2].rstrip(":"))
        row = await page.wait(row_with("orders", "order-id", str(order_id)), "the order listed")
        cells = await page.run(lambda: [td.text for td in row.find_elements(By.TAG_NAME, "td")])
        assert cells[:7] == [str(order_id), BTC, "buy", "49999.00", "0.01000", "0.00000", "open"]
        answer = await http.get(f"/api/v1/orders/{order_id}", headers=bearer(alice))
        assert (answer.json()["status"], answer.json()["price"]) == ("OPEN", "49999.00")
        await expect_ladder_matches_rest(page, http, levels=10)  # its level is on the ladder
        path = await page.screenshot("page")
        if os.environ.get("TRADE_ENGINE_DOCS_SCREENSHOT") == "1":
            shutil.copyfile(path, DOCS_SCREENSHOT)

        # a fill from bob shows in my orders, from the orders stream
        await rest_order(http, bob, side="sell", type="market", quantity="0.00400")
        await page.wait(lambda d: "0.00400" in d.find_element(
            By.CSS_SELECTOR, f'#orders tr[data-order-id="{order_id}"]').text, "the fill")

        await click(page, f'#orders tr[data-order-id="{order_id}"] button.cancel')
        await page.wait(no_row_with("orders", "order-id", str(order_id)), "the order gone")
        await page.wait(has_data("notice", "kind", "ok"), "the cancel confirmed")
        assert await page.text("notice") == f"cancelled order {order_id} (cancelled)"
        answer = await http.get(f"/api/v1/orders/{order_id}", headers=bearer(alice))
        assert answer.json()["status"] == "CANCELLED"
        assert answer.json()["filled_quantity"] == "0.00400"

        # the token survives a reload of the tab (sessionStorage), and "Forget" drops it
        await page.run(page.driver.refresh)
        await page.wait(has_data("account", "state", "ready"), "the account ready again")
        await click(page, "#token-forget")
        await page.wait(has_data("account", "state", "none"), "the token forgotten")
        assert await page.script("return sessionStorage.length") == 0


async def test_the_servers_own_error_message_is_shown(gateway, http, token, page):
    alice = token("alice")
    bad = {"symbol": BTC, "side": "sell", "type": "limit", "price": "50000.001",
           "quantity": "0.01000", "time_in_force": "gtc"}
    with trio.fail_after(TIMEOUT):
        refused = (await http.post("/api/v1/orders", json=bad, headers=bearer(alice))).json()
        await page.open(gateway.endpoints.rest_url + "/")
        await page.paste_token(alice)
        await page.wait(has_data("account", "state", "ready"), "the account ready")
        await click(page, "#o-sell")
        await fill(page, price=bad["price"], quantity=bad["quantity"])
        await click(page, "#o-submit")
        await page.wait(has_data("notice", "kind", "error"), "the error")
        error = refused["error"]
        assert await page.text("notice") == (
            f"{error['code']}: {error['message']} (field {error['field']})")
        assert error["code"] == "price_off_tick"
        assert await page.run(lambda: page.driver.find_element(By.ID, "o-price")
                              .get_attribute("aria-invalid")) == "true"
        await page.screenshot("error")


async def test_an_expired_token_is_told_apart_in_the_servers_words(gateway, http, token, page):
    expired = token("alice", ttl=-10)
    with trio.fail_after(TIMEOUT):
        refused = (await http.get("/api/v1/orders", headers=bearer(expired))).json()
        await page.open(gateway.endpoints.rest_url + "/")
        await page.paste_token(expired)
        await page.wait(has_data("account", "state", "expired"), "the token expired")
        assert await page.text("account") == f"token expired: {refused['error']['message']}"
        assert "trade-engine token --user alice" in refused["error"]["message"]
        assert await page.run(lambda: not page.driver.find_element(By.ID, "o-submit").is_enabled())

        # A token that expires while connected (in 2 to 3 s: `exp` is in whole seconds):
        # the server closes with 4003.
        await page.paste_token(token("alice", ttl=3))
        await page.wait(has_data("account", "state", "ready"), "the account ready")
        await page.wait(has_data("account", "state", "expired"), "the token expired (4003)")
        assert "(4003 token expired)" in await page.text("account")
        assert await page.data("status", "state") == "open"  # market data goes on
