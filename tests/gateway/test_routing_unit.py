"""The hub's routing on real engine events: registry, per-channel seq, where events go.

No trio and no sockets: subscribers are plain objects, events come from a real
:class:`engine.Engine`.
"""

from __future__ import annotations

from engine import (
    BookLevelChanged,
    CancelOrder,
    Engine,
    Event,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    PlaceOrder,
    Side,
    TopOfBookChanged,
    TradeExecuted,
)
from gateway._protocol import Channel, Stream
from gateway._routing import Routing, by_symbol, split

BTC, ETH = "BTC/USDT", "ETH/USDT"


class Client:
    """A subscriber as the registry sees one (the hub alone calls offer and close_soon)."""

    def __init__(self, bits: int = 0) -> None:
        self.deflate_window_bits = bits

    def offer(self, frames: bytes, count: int = 1) -> bool:
        raise AssertionError("routing never sends")

    def close_soon(self, code: int, reason: str) -> None:
        raise AssertionError("routing never closes")


class Flow:
    """A fresh engine; each call applies one command and returns its events."""

    def __init__(self) -> None:
        self.engine = Engine()
        self.seq = 0

    def place(self, user: str, side: Side, quantity: int = 100, symbol: str = BTC,
              price: int = 5_000_000) -> list[Event]:
        self.seq += 1
        return self.engine.apply(PlaceOrder(
            order_id=self.seq, user_id=user, symbol=symbol, side=side, price=price,
            quantity=quantity), seq=self.seq, ts=self.seq)

    def cancel(self, user: str, order_id: int) -> list[Event]:
        self.seq += 1
        return self.engine.apply(CancelOrder(order_id=order_id, user_id=user),
                                 seq=self.seq, ts=self.seq)


# ------------------------------------------------------------------- split


def test_split_sorts_a_trade_batch_by_stream_in_event_order():
    flow = Flow()
    flow.place("maker", Side.SELL)
    events = flow.place("taker", Side.BUY)
    batches = split(events)
    assert [type(e) for e in events] == [OrderAccepted, TradeExecuted, OrderFilled, OrderFilled,
                                         BookLevelChanged, TopOfBookChanged]
    assert batches.orders == [events[0], events[2], events[3]]
    assert batches.trades == [events[1]]
    assert batches.levels == [events[4]]
    assert batches.tops == [events[5]]
    assert batches.streams == [Stream.ORDERS, Stream.TRADES, Stream.DEPTH, Stream.ORDERBOOK]


def test_split_lists_the_streams_by_first_event_across_commands():
    flow = Flow()
    resting = flow.place("maker", Side.SELL)
    cancel = flow.cancel("maker", resting[0].order_id)  # orders, depth, orderbook
    flow.place("maker", Side.SELL, price=5_000_100)
    trade = flow.place("taker", Side.BUY, price=5_000_100)  # ... then trades
    batches = split(cancel + trade)
    assert batches.streams == [Stream.ORDERS, Stream.DEPTH, Stream.ORDERBOOK, Stream.TRADES]
    assert [type(e) for e in batches.orders][:2] == [OrderCancelled, OrderAccepted]


def test_split_of_nothing_is_empty():
    batches = split([])
    assert batches.streams == []
    assert (batches.orders, batches.trades, batches.levels, batches.tops) == ([], [], [], [])


def test_by_symbol_keeps_each_symbols_changes_in_order():
    flow = Flow()
    levels = [e for e in flow.place("a", Side.SELL) + flow.place("a", Side.BUY, symbol=ETH,
                                                                    price=300_000)
              + flow.place("a", Side.SELL, price=5_000_100)
              if isinstance(e, BookLevelChanged)]
    grouped = by_symbol(levels)
    assert list(grouped) == [BTC, ETH]
    assert grouped[BTC] == [levels[0], levels[2]]
    assert grouped[ETH] == [levels[1]]


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


# ------------------------------------------------------------- routes, seq


def test_order_events_go_to_their_users_channel_only():
    flow, routing = Flow(), Routing()
    routing.add(Client(), (Stream.ORDERS, "maker"))
    flow.place("maker", Side.SELL)
    events = flow.place("taker", Side.BUY)
    routes = routing.orders(split(events).orders)
    assert [(channel, seq, type(e)) for channel, seq, e in routes] == [
        ((Stream.ORDERS, "maker"), 1, OrderFilled)]


def test_a_trade_goes_to_its_symbol_and_to_all_symbols_each_with_its_own_seq():
    flow, routing = Flow(), Routing()
    routing.add(Client(), (Stream.TRADES, BTC))
    routing.add(Client(), (Stream.TRADES, None))
    routing.add(Client(), (Stream.TRADES, ETH))
    trades: list[TradeExecuted] = []
    for _ in range(2):
        flow.place("maker", Side.SELL)
        trades += split(flow.place("taker", Side.BUY)).trades
    routes = routing.trades(trades)
    assert [(channel, seq) for channel, seq, _ in routes] == [
        ((Stream.TRADES, BTC), 1), ((Stream.TRADES, None), 1),
        ((Stream.TRADES, BTC), 2), ((Stream.TRADES, None), 2)]
    assert [e for _, _, e in routes] == [trades[0], trades[0], trades[1], trades[1]]


def test_no_route_to_a_channel_nobody_reads_and_no_seq_spent_on_it():
    flow, routing = Flow(), Routing()
    flow.place("maker", Side.SELL)
    batches = split(flow.place("taker", Side.BUY))
    assert routing.trades(batches.trades) == []
    assert routing.orders(batches.orders) == []
    assert routing.orderbook(batches.tops) == []
    assert routing.depth_channel(BTC) is None
    routing.add(Client(), (Stream.TRADES, BTC))
    assert routing.seq((Stream.TRADES, BTC)) == 0  # the unheard trade did not count


def test_seq_runs_on_while_a_channel_has_subscribers_and_restarts_once_forgotten():
    flow, routing, first, second = Flow(), Routing(), Client(), Client()
    channel: Channel = (Stream.ORDERBOOK, BTC)
    routing.add(first, channel)
    tops = split(flow.place("maker", Side.SELL)).tops
    assert [seq for _, seq, _ in routing.orderbook(tops)] == [1]
    routing.add(second, channel)  # joins the running count
    assert routing.seq(channel) == 1
    routing.remove(first, channel)
    assert routing.seq(channel) == 1
    routing.remove(second, channel)  # the channel is forgotten
    routing.add(first, channel)
    assert routing.seq(channel) == 0


def test_top_of_book_goes_to_its_symbols_channel():
    flow, routing = Flow(), Routing()
    routing.add(Client(), (Stream.ORDERBOOK, ETH))
    tops = split(flow.place("a", Side.SELL) + flow.place("a", Side.SELL, symbol=ETH,
                                                        price=300_000)).tops
    routes = routing.orderbook(tops)
    assert [(channel, seq, e.symbol) for channel, seq, e in routes] == [
        ((Stream.ORDERBOOK, ETH), 1, ETH)]


def test_a_depth_channel_is_routed_only_while_subscribed_and_keeps_no_seq_here():
    routing, client = Routing(), Client()
    channel: Channel = (Stream.DEPTH, BTC)
    routing.add(client, channel)
    assert routing.depth_channel(BTC) == channel
    assert routing.depth_channel(ETH) is None
    routing.remove(client, channel)
    assert routing.depth_channel(BTC) is None
