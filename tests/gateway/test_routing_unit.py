"""The hub's subscription registry: who listens to which channel, with what framing.

No trio and no sockets: subscribers are plain objects. (Numbering and where events
go: ``test_streams_unit.py``.)
"""

from __future__ import annotations

from gateway._protocol import Channel, Stream
from gateway._routing import Routing

BTC = "BTC/USDT"

class Client:
    """A subscriber as the registry sees one (the hub alone calls offer and close_soon)."""

    def __init__(self, bits: int = 0) -> None:
        self.deflate_window_bits = bits

    def offer(self, frames: bytes, count: int = 1) -> bool:
        raise AssertionError("routing never sends")

    def close_soon(self, code: int, reason: str) -> None:
        raise AssertionError("routing never closes")


# ---------------------------------------------------------------- registry


def test_a_channel_exists_while_it_has_subscribers():
    routing, one, two = Routing(), Client(), Client(15)
    channel: Channel = (Stream.TRADES, BTC)
    routing.add(one, channel)
    routing.add(two, channel)
    assert routing.subscribers[channel] == {one: 0, two: 15}
    routing.remove(one, channel)
    assert routing.subscribers[channel] == {two: 15}
    routing.remove(two, channel)
    assert channel not in routing.subscribers


def test_removing_an_unknown_subscriber_or_channel_is_harmless():
    routing, one = Routing(), Client()
    routing.remove(one, (Stream.TRADES, BTC))
    routing.add(one, (Stream.TRADES, BTC))
    routing.remove(Client(), (Stream.TRADES, BTC))
    assert routing.subscribers == {(Stream.TRADES, BTC): {one: 0}}


def test_counts_are_per_stream_and_name_every_stream():
    routing = Routing()
    routing.add(Client(), (Stream.TRADES, BTC))
    routing.add(Client(), (Stream.TRADES, None))
    routing.add(Client(), (Stream.ORDERS, "alice"))
    assert routing.counts() == {"orders": 1, "trades": 2, "orderbook": 0, "depth": 0}
