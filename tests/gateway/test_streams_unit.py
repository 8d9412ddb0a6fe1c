"""Stream numbering and resume history, on real engine events (no trio, no sockets).

The rules under test: every channel is numbered always, per command, whatever
the batching; the numbering survives export/restore exactly; history answers a
resume with every message after a seq, or refuses when one is gone.
"""

from __future__ import annotations

import random

import pytest

from engine import (
    CancelAllOrders,
    CancelOrder,
    Engine,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    PlaceOrder,
    Side,
    TopOfBookChanged,
    TradeExecuted,
)
from gateway._history import SWEEP_EVERY, History
from gateway._messages import DepthDiff
from gateway._protocol import Channel, Stream
from gateway._streams import Numbered, StreamState, decode_export, encode_export

BTC, ETH = "BTC/USDT", "ETH/USDT"
SECOND = 1_000_000_000


class Flow:
    """A fresh engine and stream state; each call applies one command and numbers it."""

    def __init__(self, levels: int = 10) -> None:
        self.engine = Engine()
        self.streams = StreamState(self.engine.markets, levels, "e1")
        self.seq = 0

    def apply(self, command, out: Numbered | None = None) -> Numbered:
        self.seq += 1
        events = self.engine.apply(command, seq=self.seq, ts=self.seq * SECOND)
        out = Numbered() if out is None else out
        self.streams.number(events, out)
        return out

    def place(self, user: str, side: Side, quantity: int = 100, symbol: str = BTC,
              price: int = 5_000_000, out: Numbered | None = None) -> Numbered:
        return self.apply(PlaceOrder(order_id=self.seq + 1, user_id=user, symbol=symbol,
                                     side=side, price=price, quantity=quantity), out)


def seqs(items) -> list[tuple[Channel, int, type]]:
    return [(channel, seq, type(payload)) for channel, seq, payload in items]


# ---------------------------------------------------------------- numbering


def test_every_channel_is_numbered_whether_or_not_anyone_listens():
    flow = Flow()
    flow.place("maker", Side.SELL)
    out = flow.place("taker", Side.BUY)
    assert seqs(out.orders) == [((Stream.ORDERS, "taker"), 1, OrderAccepted),
                                ((Stream.ORDERS, "maker"), 2, OrderFilled),
                                ((Stream.ORDERS, "taker"), 2, OrderFilled)]
    assert seqs(out.trades) == [((Stream.TRADES, BTC), 1, TradeExecuted),
                                ((Stream.TRADES, None), 1, TradeExecuted)]
    assert seqs(out.orderbook) == [((Stream.ORDERBOOK, BTC), 2, TopOfBookChanged)]
    assert seqs(out.depth) == [((Stream.DEPTH, BTC), 2, DepthDiff)]
    assert flow.streams.seq((Stream.ORDERS, "maker")) == 2
    assert flow.streams.seq((Stream.TRADES, ETH)) == 0


def test_the_all_symbols_trade_channel_counts_every_market():
    flow = Flow()
    for symbol, price in ((BTC, 5_000_000), (ETH, 300_000), (BTC, 5_000_000)):
        flow.place("maker", Side.SELL, symbol=symbol, price=price)
        out = flow.place("taker", Side.BUY, symbol=symbol, price=price)
    assert [(c, s) for c, s, _ in out.trades] == [((Stream.TRADES, BTC), 2),
                                                  ((Stream.TRADES, None), 3)]


def test_a_depth_message_covers_one_command_and_only_window_changes_count():
    flow = Flow(levels=1)
    assert len(flow.place("a", Side.BUY, price=5_000_000).depth) == 1
    assert flow.place("a", Side.BUY, price=4_999_900).depth == []  # below the one-level window
    out = flow.place("a", Side.BUY, price=5_000_100)
    [(channel, seq, diff)] = out.depth
    assert (channel, seq) == ((Stream.DEPTH, BTC), 2)
    assert isinstance(diff, DepthDiff)
    assert diff.bid_window == ((5_000_100, 100),)
    assert sorted(diff.bids) == [(5_000_000, 0), (5_000_100, 100)]


def test_a_cancel_all_across_markets_gives_one_depth_message_per_market():
    flow = Flow()
    flow.place("a", Side.BUY)
    flow.place("a", Side.BUY, symbol=ETH, price=300_000)
    out = flow.apply(CancelAllOrders(user_id="a"))
    assert [(c, s) for c, s, _ in out.depth] == [((Stream.DEPTH, BTC), 2),
                                                 ((Stream.DEPTH, ETH), 2)]
    assert [type(p) for _, _, p in out.orders] == [OrderCancelled, OrderCancelled]


def test_numbering_does_not_depend_on_how_commands_are_batched():
    rng = random.Random(3)
    commands = []
    for i in range(400):
        if i and rng.random() < 0.2:
            commands.append(CancelOrder(order_id=rng.randint(1, i), user_id=rng.choice("ab")))
        else:
            commands.append(PlaceOrder(
                order_id=i + 1, user_id=rng.choice("abc"), symbol=rng.choice([BTC, ETH]),
                side=rng.choice([Side.BUY, Side.SELL]), price=rng.randint(95, 105) * 50_000,
                quantity=rng.randint(1, 5)))

    def run(batch_size: int) -> list:
        flow, items, out = Flow(levels=3), [], Numbered()
        for i, command in enumerate(commands):
            flow.apply(command, out)
            if (i + 1) % batch_size == 0:
                items += out.orders + out.trades + out.orderbook + out.depth
                out = Numbered()
        items += out.orders + out.trades + out.orderbook + out.depth
        return sorted(((c[0], str(c[1]), s, repr(p)) for c, s, p in items))

    assert run(1) == run(7) == run(400)


def test_export_and_restore_continue_the_numbering_exactly():
    original, twin = Flow(levels=3), Flow(levels=3)
    rng = random.Random(5)
    commands = [PlaceOrder(order_id=i + 1, user_id=rng.choice("ab"), symbol=BTC,
                           side=rng.choice([Side.BUY, Side.SELL]),
                           price=rng.randint(98, 102) * 50_000, quantity=rng.randint(1, 3))
                for i in range(300)]
    for command in commands[:150]:
        original.apply(command)
        twin.apply(command)
    export = decode_export(encode_export(original.streams.export(original.seq)))
    assert export.engine_seq == 150
    twin.streams = StreamState.restore(export, twin.engine.markets, 3)
    for command in commands[150:]:
        a, b = original.apply(command), twin.apply(command)
        for stream in ("orders", "trades", "orderbook", "depth"):
            assert repr(getattr(a, stream)) == repr(getattr(b, stream))
    assert original.streams.counters() == twin.streams.counters()


def test_restore_refuses_another_depth_window():
    flow = Flow(levels=3)
    flow.place("a", Side.BUY)
    with pytest.raises(ValueError, match="depth window changed from 3 to 10"):
        StreamState.restore(flow.streams.export(1), flow.engine.markets, 10)


# ------------------------------------------------------------------ history


def record_trades(history: History, flow: Flow, count: int) -> list:
    items = []
    for _ in range(count):
        flow.place("maker", Side.SELL)
        out = flow.place("taker", Side.BUY)
        history.record_all(out.trades)
        items += [i for i in out.trades if i[0] == (Stream.TRADES, BTC)]
    return items


def test_history_answers_every_message_after_a_seq():
    flow, history = Flow(), History(100, 300, {})
    items = record_trades(history, flow, 5)
    channel: Channel = (Stream.TRADES, BTC)
    assert history.seq(channel) == 5
    assert history.since(channel, 2) == [(s, p) for _, s, p in items[2:]]
    assert history.since(channel, 5) == []  # up to date: nothing to send
    assert history.since(channel, 0) == [(s, p) for _, s, p in items]


def test_history_refuses_what_it_no_longer_holds_or_never_saw():
    flow, history = Flow(), History(3, 300, {})
    record_trades(history, flow, 5)
    channel: Channel = (Stream.TRADES, BTC)
    assert history.since(channel, 1) is None  # messages 2 is gone (3 kept: 3, 4, 5)
    assert [s for s, _ in history.since(channel, 2)] == [3, 4, 5]
    assert history.since(channel, 6) is None  # ahead of the channel
    assert history.since((Stream.TRADES, ETH), 0) == []  # a channel still at 0


def test_a_history_of_zero_messages_only_answers_clients_that_missed_nothing():
    flow, history = Flow(), History(0, 300, {})
    record_trades(history, flow, 2)
    assert history.since((Stream.TRADES, BTC), 2) == []
    assert history.since((Stream.TRADES, BTC), 1) is None


def test_history_starts_from_the_given_seqs():
    history = History(10, 300, {(Stream.ORDERS, "a"): 41})
    assert history.seq((Stream.ORDERS, "a")) == 41
    assert history.since((Stream.ORDERS, "a"), 41) == []
    assert history.since((Stream.ORDERS, "a"), 40) is None  # before this process


def test_channels_quiet_for_longer_than_the_age_limit_are_forgotten():
    history = History(10, 60, {})
    quiet: Channel = (Stream.ORDERS, "quiet")
    busy: Channel = (Stream.ORDERS, "busy")
    event = OrderCancelled  # any payload with a ts will do; the ring stores it as is
    history.record(quiet, 1, 0, event)  # type: ignore[arg-type]
    for i in range(SWEEP_EVERY):
        history.record(busy, i + 1, 61 * SECOND + i, event)  # type: ignore[arg-type]
    assert history.since(quiet, 0) is None  # swept: 61 s after its last message
    assert history.since(quiet, 1) == []  # its seq is remembered
    assert history.since(busy, SWEEP_EVERY - 1) is not None


def test_depth_diffs_carry_their_window_for_later_messages():
    flow = Flow(levels=2)
    out = flow.place("a", Side.BUY, price=5_000_000)
    out = flow.place("a", Side.SELL, price=5_000_100, out=out)
    last = out.depth[-1][2]
    assert isinstance(last, DepthDiff)
    assert (last.bid_window, last.ask_window) == (((5_000_000, 100),), ((5_000_100, 100),))
