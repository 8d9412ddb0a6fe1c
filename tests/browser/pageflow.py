"""Helpers for the page's browser tests: orders over REST, and the page's state as the server's.

Everything the tests compare against comes from the server's public REST API
(``/api/v1/markets/{symbol}/orderbook`` and ``/trades``), never from the page's
own JavaScript.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest
import trio
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

BTC = "BTC/USDT"
NONE = "\u2013"
"""What the page shows for a price that does not exist (an en dash)."""
WAIT = 10.0
"""Seconds the page may take to reach any state a test waits for."""


class Page:
    """One test's view of the browser: each call runs in a worker thread."""

    def __init__(self, driver: WebDriver, tmp_path: Path) -> None:
        self.driver = driver
        self.tmp_path = tmp_path
        self.url: str | None = None
        """The server of the last page opened (``http://host:port``)."""

    async def run(self, function: Callable[..., Any], *args: Any) -> Any:
        return await trio.to_thread.run_sync(function, *args)

    async def open(self, url: str) -> None:
        parts = urlsplit(url)
        self.url = f"{parts.scheme}://{parts.netloc}"
        await self.run(self.driver.get, url)

    async def until_disconnected(self) -> None:
        """Wait (2 s at most) until the last page's server counts no WebSocket connection
        (its ``/stats``); return at once when that server is gone."""
        assert self.url is not None
        async with httpx.AsyncClient(base_url=self.url, timeout=2) as http:
            with trio.move_on_after(2):
                while True:
                    try:
                        stats = (await http.get("/stats")).json()
                    except httpx.TransportError:
                        return
                    if stats["connections"] == 0:
                        return
                    await trio.sleep(0.02)

    async def wait(self, condition: Callable[[WebDriver], Any], what: str,
                   timeout: float = WAIT) -> Any:
        """``condition``'s first true value; fails naming ``what`` and the page's console."""
        try:
            return await self.run(WebDriverWait(self.driver, timeout, poll_frequency=0.05).until,
                                  condition)
        except TimeoutException:
            await self.screenshot("timeout")
            console = await self.run(self.driver.get_log, "browser")
            states = {name: await self.text(name) for name in ("status", "account", "notice")}
            pytest.fail(f"the page never showed {what} within {timeout} s; {states}; "
                        f"console: {console}")

    async def element(self, element_id: str) -> WebElement:
        return await self.run(self.driver.find_element, By.ID, element_id)

    async def text(self, element_id: str) -> str:
        return await self.run(lambda: self.driver.find_element(By.ID, element_id).text)

    async def data(self, element_id: str, name: str) -> str | None:
        return await self.run(lambda: self.driver.find_element(By.ID, element_id)
                              .get_attribute(f"data-{name}"))

    async def script(self, source: str, *args: Any) -> Any:
        return await self.run(self.driver.execute_script, source, *args)

    async def rows(self, tbody_id: str, *names: str) -> list[tuple[str | None, ...]]:
        """The ``data-*`` values ``names`` of each row of a table body, in one round trip."""
        return [tuple(row) for row in await self.script(
            "return [...document.getElementById(arguments[0]).rows]"
            ".map(r => arguments[1].map(n => r.dataset[n] ?? null))", tbody_id, list(names))]

    async def paste_token(self, token: str) -> None:
        """Paste ``token`` into the token box and press *Use* (typing it key by key is slow)."""

        def paste() -> None:
            box = self.driver.find_element(By.ID, "token")
            self.driver.execute_script("arguments[0].value = arguments[1]", box, token)
            self.driver.find_element(By.ID, "token-use").click()

        await self.run(paste)

    async def screenshot(self, name: str) -> Path:
        path = self.tmp_path / f"{name}.png"
        png = await self.run(self.driver.get_screenshot_as_png)
        assert png.startswith(b"\x89PNG")
        path.write_bytes(png)
        return path


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def rest_order(http: httpx.AsyncClient, token: str, **order: Any) -> dict[str, Any]:
    answer = await http.post("/api/v1/orders", json={"symbol": BTC, **order}, headers=bearer(token))
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def seed_book(http: httpx.AsyncClient, buyer: str, seller: str, levels: int = 6) -> None:
    """``levels`` bids below 50000 and asks above it, of growing sizes."""
    for i in range(levels):
        await rest_order(http, seller, side="sell", price=f"{50010 + 5 * i}.00",
                         quantity=f"0.{i + 1:02d}500")
        await rest_order(http, buyer, side="buy", price=f"{49990 - 5 * i}.00",
                         quantity=f"0.{i + 2:02d}250")


async def trade_around(http: httpx.AsyncClient, buyer: str, seller: str, count: int = 12) -> None:
    """``count`` small trades at prices around 50000 (a bid, then a market sell into it)."""
    for i in range(count):
        price = 49940 + (i * 37) % 50 + 3 * i
        await rest_order(http, buyer, side="buy", price=f"{price}.00", quantity="0.00150")
        await rest_order(http, seller, side="sell", type="market", quantity="0.00150")


async def rest_book(http: httpx.AsyncClient, levels: int, symbol: str = BTC) -> dict[str, Any]:
    answer = await http.get(f"/api/v1/markets/{quote(symbol, safe='')}/orderbook",
                            params={"depth": levels})
    assert answer.status_code == 200, answer.text
    book: dict[str, Any] = answer.json()
    return book


def book_at(seq: int, symbol: str = BTC):  # type: ignore[no-untyped-def]
    """A wait condition: the page's ladder of ``symbol`` is verified at depth ``seq``."""

    def condition(driver: WebDriver) -> bool:
        table = driver.find_element(By.ID, "book")
        return (table.get_attribute("data-synced") == "true"
                and table.get_attribute("data-symbol") == symbol
                and table.get_attribute("data-seq") == str(seq))

    return condition


async def expect_ladder_matches_rest(
    page: Page, http: httpx.AsyncClient, levels: int, mismatches: int = 0, symbol: str = BTC,
) -> dict[str, Any]:
    """Wait until the page shows the book at REST's seq, then compare every level.

    ``mismatches``: the checksum mismatches the page may have seen so far.
    """
    book = await rest_book(http, levels, symbol)
    await page.wait(book_at(book["seq"], symbol), f"the {symbol} book at seq {book['seq']}")
    asks = await page.rows("asks", "price", "quantity")
    bids = await page.rows("bids", "price", "quantity")
    assert [list(level) for level in reversed(asks)] == book["asks"]  # shown highest first
    assert [list(level) for level in bids] == book["bids"]
    best_bid = book["bids"][0][0] if book["bids"] else NONE
    best_ask = book["asks"][0][0] if book["asks"] else NONE
    assert await page.text("best-bid") == best_bid
    assert await page.text("best-ask") == best_ask
    if book["bids"] and book["asks"]:
        assert Decimal(await page.text("spread")) == Decimal(best_ask) - Decimal(best_bid)
    assert await page.data("book", "mismatches") == str(mismatches)
    return book


def has_data(element_id: str, name: str, value: str):  # type: ignore[no-untyped-def]
    def condition(driver: WebDriver) -> bool:
        return driver.find_element(By.ID, element_id).get_attribute(f"data-{name}") == value

    return condition


def row_with(tbody_id: str, name: str, value: str):  # type: ignore[no-untyped-def]
    """A wait condition: a row of ``tbody_id`` has ``data-name = value`` (returns it)."""

    def condition(driver: WebDriver) -> Any:
        rows = driver.find_elements(By.CSS_SELECTOR, f'#{tbody_id} tr[data-{name}="{value}"]')
        return rows[0] if rows else False

    return condition


def no_row_with(tbody_id: str, name: str, value: str):  # type: ignore[no-untyped-def]
    def condition(driver: WebDriver) -> bool:
        return not driver.find_elements(By.CSS_SELECTOR, f'#{tbody_id} tr[data-{name}="{value}"]')

    return condition
