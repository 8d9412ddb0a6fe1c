"""The depth stream: a snapshot plus deltas rebuild the book exactly, checksums included.

A client keeps the top ``depth_levels`` of each side: it applies each update
(quantity ``"0"`` deletes a level), truncates, and checks the CRC32 of its own
book (Kraken's algorithm) against every message.
"""

from __future__ import annotations

import random
import zlib
from decimal import Decimal

import trio
from wsclient import BTC, TIMEOUT, cancel, open_client, open_rest, order_id_of, place

LEVELS = 5


def kraken_checksum(asks: dict[str, str], bids: dict[str, str], levels: int) -> int:
    """CRC32 of the top levels, asks best first then bids best first, each price and
    quantity with the decimal point and the leading zeros removed, concatenated."""
    def part(text: str) -> str:
        return text.replace(".", "").lstrip("0")

    best_asks = sorted(asks.items(), key=lambda level: Decimal(level[0]))[:levels]
    best_bids = sorted(bids.items(), key=lambda level: -Decimal(level[0]))[:levels]
    return zlib.crc32("".join(part(p) + part(q) for p, q in best_asks + best_bids).encode())


class ClientBook:
    def __init__(self, levels: int) -> None:
        self.levels = levels
        self.bids: dict[str, str] = {}
        self.asks: dict[str, str] = {}
        self.seq = 0

    def load(self, snapshot) -> None:
        self.bids = dict(map(tuple, snapshot["bids"]))
        self.asks = dict(map(tuple, snapshot["asks"]))
        self.seq = snapshot["seq"]
        assert snapshot["checksum"] == self.checksum()

    def apply(self, update) -> None:
        assert update["seq"] == self.seq + 1, (update["seq"], self.seq)
        self.seq = update["seq"]
        for side, book in (("bids", self.bids), ("asks", self.asks)):
            for price, quantity in update[side]:
                if Decimal(quantity) == 0:
                    book.pop(price, None)
                else:
                    book[price] = quantity
        self.bids = dict(self.view()["bids"])
        self.asks = dict(self.view()["asks"])
        assert update["checksum"] == self.checksum(), f"checksum mismatch at seq {self.seq}"

    def view(self):
        asks = sorted(self.asks.items(), key=lambda level: Decimal(level[0]))[:self.levels]
        bids = sorted(self.bids.items(), key=lambda level: -Decimal(level[0]))[:self.levels]
        return {"bids": [list(level) for level in bids], "asks": [list(level) for level in asks]}

    def checksum(self) -> int:
        return kraken_checksum(self.asks, self.bids, self.levels)


async def rest_book(gateway, levels: int):
    async with open_rest(gateway) as http:
        with trio.fail_after(TIMEOUT):
            response = await http.get(f"/api/v1/markets/BTC-USDT/orderbook?depth={levels}")
    assert response.status_code == 200
    return response.json()


async def random_flow(gateway, rng: random.Random, commands: int) -> None:
    """Seeded orders around 50000 (many levels, some crossing) and cancels."""
    open_orders: list[tuple[str, int]] = []
    for _ in range(commands):
        if open_orders and rng.random() < 0.3:
            user, order_id = open_orders.pop(rng.randrange(len(open_orders)))
            await cancel(gateway, user, order_id)
            continue
        side = rng.choice(["buy", "sell"])
        offset = rng.randint(-4, 12)  # mostly resting, sometimes crossing
        price = 50000 - offset if side == "buy" else 50000 + offset
        quantity = f"{rng.randint(1, 40) / 1000:.3f}"
        user = rng.choice(["alice", "bob", "carol"])
        events = await place(gateway, user, side, f"{price}.00", quantity)
        open_orders.append((user, order_id_of(events)))


async def test_snapshot_and_updates_rebuild_the_book(start_gateway):
    gateway = await start_gateway(websocket={"depth_levels": LEVELS})
    rng = random.Random(20251123)
    await random_flow(gateway, rng, 40)  # a book exists before the client joins
    async with open_client(gateway) as client:
        reply = await client.request(action="subscribe", stream="depth", symbol=BTC, id=1)
        book = ClientBook(LEVELS)
        snapshot = await client.receive()
        assert snapshot["type"] == "depth_snapshot"
        assert snapshot["seq"] == reply["seq"]
        assert len(snapshot["bids"]) <= LEVELS
        assert len(snapshot["asks"]) <= LEVELS
        book.load(snapshot)
        assert book.view() == {k: v for k, v in (await rest_book(gateway, LEVELS)).items()
                               if k in ("bids", "asks")}

        for _round in range(4):
            await random_flow(gateway, rng, 60)
            expected = await rest_book(gateway, LEVELS)
            with trio.fail_after(TIMEOUT):
                while book.seq < expected["seq"]:
                    update = await client.receive()
                    assert update["type"] == "depth_update"
                    assert update["symbol"] == BTC
                    book.apply(update)
            assert book.seq == expected["seq"]
            assert book.view() == {"bids": expected["bids"], "asks": expected["asks"]}


async def test_a_level_pushed_out_of_the_window_is_sent_as_zero(start_gateway):
    gateway = await start_gateway(websocket={"depth_levels": 2})
    await place(gateway, "alice", "buy", "49998.00", "0.001")
    await place(gateway, "alice", "buy", "49997.00", "0.001")
    async with open_client(gateway) as client:
        await client.subscribe("depth", BTC)
        snapshot = await client.receive()
        assert snapshot["bids"] == [["49998.00", "0.00100"], ["49997.00", "0.00100"]]
        await place(gateway, "alice", "buy", "49999.00", "0.002")
        update = await client.receive()
        assert update["bids"] == [["49999.00", "0.00200"], ["49997.00", "0"]]
        assert update["asks"] == []
        # A change outside the window sends nothing; the next one inside does.
        await place(gateway, "alice", "buy", "49000.00", "0.001")
        await place(gateway, "bob", "sell", "51000.00", "0.001")
        update = await client.receive()
        assert (update["seq"], update["asks"], update["bids"]) == (
            snapshot["seq"] + 2, [["51000.00", "0.00100"]], [])


async def test_checksum_of_an_empty_book_and_a_known_book(gateway):
    async with open_client(gateway) as client:
        await client.subscribe("depth", BTC)
        empty = await client.receive()
        assert (empty["bids"], empty["asks"]) == ([], [])
        assert empty["checksum"] == zlib.crc32(b"")
        await place(gateway, "alice", "buy", "49999.90", "1.25")
        await place(gateway, "bob", "sell", "50000.10", "0.5")
        await client.receive()
        update = await client.receive()
    # asks first: "50000.10" -> "5000010", "0.50000" -> "50000"; then the bid.
    assert update["checksum"] == zlib.crc32(b"5000010" + b"50000" + b"4999990" + b"125000")


async def test_depth_channel_seq_is_shared_with_rest(gateway):
    await place(gateway, "alice", "buy", "49999.00", "0.001")
    await place(gateway, "alice", "buy", "49998.00", "0.001")
    assert (await rest_book(gateway, 10))["seq"] == 2
    async with open_client(gateway) as client:
        reply = await client.subscribe("depth", BTC)
        assert reply["seq"] == 2
        assert (await client.receive())["seq"] == 2


async def test_a_level_that_leaves_the_window_is_sent_with_quantity_0_as_documented(gateway):
    """docs/protocol.md: 'with quantity "0" for a level that left the window'."""
    order_id = order_id_of(await place(gateway, "alice", "buy", "49999.00", "0.001"))
    async with open_client(gateway) as client:
        await client.subscribe("depth", BTC)
        await client.receive()
        await cancel(gateway, "alice", order_id)
        update = await client.receive()
    assert update["bids"] == [["49999.00", "0"]]
