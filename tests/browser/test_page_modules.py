"""The page's pure JavaScript modules, run in the browser against Python references.

``book.js`` must compute the checksum of docs/protocol.md exactly (Python's
``zlib.crc32`` over the same text), whatever the prices and quantities look
like, and ``decimal.js`` must do exact decimal arithmetic (``decimal.Decimal``).
"""

from __future__ import annotations

import random
import zlib
from decimal import Decimal

import trio
from pageflow import has_data

TIMEOUT = 30


def reference_checksum(bids: list[list[str]], asks: list[list[str]], depth: int) -> int:
    """docs/protocol.md's algorithm, as written there."""

    def part(text: str) -> str:
        return text.replace(".", "").lstrip("0")

    levels = sorted(asks, key=lambda level: Decimal(level[0]))[:depth] + sorted(
        bids, key=lambda level: -Decimal(level[0]))[:depth]
    return zlib.crc32("".join(part(p) + part(q) for p, q in levels).encode())


def random_book(rng: random.Random) -> tuple[list[list[str]], list[list[str]]]:
    places = rng.choice([0, 2, 4])
    step = Decimal(1).scaleb(-places)
    middle = rng.choice([Decimal("0.5"), Decimal(3), Decimal(50000), Decimal(1234567)])
    lot = Decimal("0.00001")

    def quantity() -> str:
        return str((rng.randint(1, 10**6) * lot).quantize(lot))

    def prices(sign: int) -> set[Decimal]:
        return {(middle + sign * step * rng.randint(0, 40)).quantize(step)
                for _ in range(rng.randint(0, 14))}

    asks = [[str(p), quantity()] for p in prices(1) if p > middle]
    bids = [[str(p), quantity()] for p in prices(-1) if 0 < p <= middle]
    return bids, asks


async def test_the_checksum_and_the_decimals_agree_with_python(gateway, page):
    rng = random.Random(7)
    books = [random_book(rng) for _ in range(200)]
    pairs = [[f"{rng.randint(0, 10**6)}.{rng.randint(0, 99):02d}", str(rng.randint(0, 10**4))]
             for _ in range(50)] + [["0.10", "0.1"], ["5", "0.00001"], ["49999.99", "50000.01"]]
    with trio.fail_after(TIMEOUT):
        await page.open(gateway.endpoints.rest_url + "/")
        await page.wait(has_data("status", "state", "open"), "the page loaded")
        base = await page.script(
            "return document.querySelector('script[type=module]').src.replace(/app\\.js$/, '')")
        results = await page.run(page.driver.execute_async_script, """
            const [base, books, pairs, done] = arguments;
            const modules = [import(base + "book.js"), import(base + "decimal.js")];
            Promise.all(modules).then(([book, dec]) => {
              const sums = books.map(([bids, asks]) => {
                const local = new book.DepthBook(10);
                local.load({symbol: "X", seq: 1, bids, asks, checksum: -1});
                return [local.checksum(), local.bids.length, local.asks.length];
              });
              const decimals = pairs.map(([a, b]) =>
                [dec.subtract(a, b), dec.add(a, b), dec.compare(a, b)]);
              done({sums, decimals, empty: book.crc32("")});
            }, (error) => done({error: String(error)}));
        """, base, books, pairs)
    assert "error" not in results, results
    assert results["empty"] == 0
    for (bids, asks), (checksum, bid_count, ask_count) in zip(books, results["sums"], strict=True):
        assert checksum == reference_checksum(bids, asks, 10), (bids, asks)
        assert (bid_count, ask_count) == (min(len(bids), 10), min(len(asks), 10))
    for (a, b), (difference, total, order) in zip(pairs, results["decimals"], strict=True):
        assert Decimal(difference) == Decimal(a) - Decimal(b)
        assert Decimal(total) == Decimal(a) + Decimal(b)
        assert order == (Decimal(a) > Decimal(b)) - (Decimal(a) < Decimal(b))
