"""Queries, exported state, restore and the state hash.

Query results are immutable values that never change behind the caller's
back. ``export_state()`` plus ``Engine.restore()`` rebuild an engine that
answers every query alike and reacts alike to every later command, and
``state_hash()`` is equal exactly when the states are.
"""

from __future__ import annotations

import msgspec
import pytest
from engine_harness import BTC, BTC_SPEC, ETH, ETH_SPEC, IOC, Exchange, only

from engine import (
    DEFAULT_MARKETS,
    BookQueue,
    CancelAllOrders,
    Depth,
    DepthLevel,
    Engine,
    Order,
    OrderStatus,
    TopOfBook,
    TradeExecuted,
)

NOOP = CancelAllOrders(user_id="nobody")
"""A command that changes nothing but ``last_seq``."""


def levels(depth_side: list[DepthLevel]) -> list[tuple[int, int, int]]:
    return [(lvl.price, lvl.quantity, lvl.orders) for lvl in depth_side]


@pytest.fixture
def book(exchange):
    """BTC/USDT: bids 100 (ids 1, 2), 99 (id 3); asks 101 (id 4), 103 (ids 5, 6). ETH: one bid."""
    exchange.buy(1, 5, 100, user="alice")
    exchange.buy(2, 3, 100, user="bob")
    exchange.buy(3, 7, 99, user="alice")
    exchange.sell(4, 2, 101, user="carol")
    exchange.sell(5, 4, 103, user="bob")
    exchange.sell(6, 1, 103, user="carol")
    exchange.buy(7, 10, 10_000, user="alice", symbol=ETH)
    return exchange


# --- order(id) -----------------------------------------------------------------------


def test_order_returns_an_open_order_with_every_field(book):
    book.sell(8, 2, 100, user="dave")  # fills 2 of order 1

    assert book.engine.order(1) == Order(
        order_id=1, user_id="alice", symbol=BTC, side="buy", order_type="limit",
        time_in_force="gtc", post_only=False, self_trade_prevention="none",
        client_order_id=None, price=100, quantity=5, filled=2, remaining=3,
        status=OrderStatus.PARTIALLY_FILLED, created_seq=1, created_ts=1000,
        updated_seq=8, updated_ts=8000,
    )


def test_order_returns_filled_and_cancelled_orders_with_nothing_remaining(book):
    book.buy(8, 2, 101, user="dave")
    book.cancel(3, user="alice")

    filled, cancelled = book.engine.order(4), book.engine.order(3)

    assert (filled.status, filled.filled, filled.remaining) == (OrderStatus.FILLED, 2, 0)
    assert (cancelled.status, cancelled.filled, cancelled.remaining) == (
        OrderStatus.CANCELLED, 0, 0)
    assert cancelled.updated_seq == 9


def test_order_of_an_unknown_or_rejected_id_is_none(book):
    book.buy(8, 0, 100)

    assert book.engine.order(8) is None
    assert book.engine.order(404) is None


def test_the_oldest_closed_orders_are_forgotten_beyond_the_history_size():
    exchange = Exchange(Engine([BTC_SPEC], order_history=2))
    for order_id in (1, 2, 3):
        exchange.buy(order_id, 1, 100, time_in_force=IOC)
    exchange.buy(4, 1, 100)

    assert exchange.engine.order(1) is None
    assert [exchange.engine.order(i).order_id for i in (2, 3, 4)] == [2, 3, 4]


def test_an_order_view_does_not_change_when_the_order_does(book):
    before = book.engine.order(1)

    book.sell(8, 5, 100, user="dave")

    assert (before.filled, before.status) == (0, OrderStatus.NEW)
    assert book.engine.order(1).status is OrderStatus.FILLED
    with pytest.raises(AttributeError):
        before.filled = 5  # type: ignore[misc]


# --- open_orders ---------------------------------------------------------------------


def test_open_orders_lists_a_users_orders_in_every_market_oldest_first(book):
    assert [o.order_id for o in book.engine.open_orders("alice")] == [1, 3, 7]


def test_open_orders_can_be_limited_to_one_symbol(book):
    assert [o.order_id for o in book.engine.open_orders("alice", ETH)] == [7]
    assert [o.order_id for o in book.engine.open_orders("alice", BTC)] == [1, 3]


def test_open_orders_leaves_out_closed_orders(book):
    book.sell(8, 5, 100, user="dave")

    assert [o.order_id for o in book.engine.open_orders("alice")] == [3, 7]


def test_open_orders_of_an_unknown_user_is_empty(book):
    assert book.engine.open_orders("nobody") == []


# --- depth, queue, top of book -------------------------------------------------------


def test_depth_aggregates_each_level_best_first(book):
    depth = book.engine.depth(BTC)

    assert isinstance(depth, Depth)
    assert depth.symbol == BTC
    assert levels(depth.bids) == [(100, 8, 2), (99, 7, 1)]
    assert levels(depth.asks) == [(101, 2, 1), (103, 5, 2)]


def test_depth_can_be_limited_to_the_best_levels(book):
    assert levels(book.engine.depth(BTC, 1).bids) == [(100, 8, 2)]
    assert levels(book.engine.depth(BTC, 1).asks) == [(101, 2, 1)]
    assert levels(book.engine.depth(BTC, 10).bids) == [(100, 8, 2), (99, 7, 1)]
    assert book.engine.depth(BTC, 0).bids == []


def test_depth_level_encodes_as_a_price_quantity_orders_triple(book):
    assert msgspec.json.decode(msgspec.json.encode(book.engine.depth(BTC, 1).asks)) == [
        [101, 2, 1]]


def test_depth_leaves_out_cancelled_orders(book):
    book.cancel(2, user="bob")

    assert levels(book.engine.depth(BTC).bids) == [(100, 5, 1), (99, 7, 1)]


def test_queue_lists_every_resting_order_in_priority_order(book):
    queue = book.engine.queue(BTC)

    assert isinstance(queue, BookQueue)
    assert [o.order_id for o in queue.bids] == [1, 2, 3]
    assert [o.order_id for o in queue.asks] == [4, 5, 6]
    assert all(isinstance(o, Order) for o in queue.bids + queue.asks)


def test_top_of_book_is_the_best_bid_and_ask_with_their_sizes(book):
    assert book.engine.top_of_book(BTC) == TopOfBook(
        symbol=BTC, bid_price=100, bid_quantity=8, ask_price=101, ask_quantity=2)


def test_top_of_book_of_an_empty_market_has_no_prices(exchange):
    assert exchange.engine.top_of_book(BTC) == TopOfBook(
        symbol=BTC, bid_price=None, bid_quantity=0, ask_price=None, ask_quantity=0)


@pytest.mark.parametrize("query", ["depth", "queue", "top_of_book", "recent_trades"])
def test_book_queries_of_an_unknown_symbol_raise_key_error(exchange, query):
    with pytest.raises(KeyError):
        getattr(exchange.engine, query)("DOGE/USDT")


# --- recent trades, markets, last_seq ------------------------------------------------


def test_recent_trades_are_newest_first_and_can_be_limited(book):
    book.buy(8, 3, 103, user="dave")  # trades with 4 (2 lots) then 5 (1 lot)
    book.sell(9, 1, 100, user="dave")  # trades with 1

    trades = book.engine.recent_trades(BTC)

    assert [(t.trade_id, t.maker_order_id) for t in trades] == [(3, 1), (2, 5), (1, 4)]
    assert [t.trade_id for t in book.engine.recent_trades(BTC, 2)] == [3, 2]
    assert book.engine.recent_trades(BTC, 0) == []
    assert book.engine.recent_trades(ETH) == []


def test_recent_trades_keep_only_the_configured_history():
    exchange = Exchange(Engine([BTC_SPEC], trade_history=2))
    exchange.sell(1, 3, 100, user="bob")
    for order_id in (2, 3, 4):
        exchange.buy(order_id, 1, 100)

    assert [t.trade_id for t in exchange.engine.recent_trades(BTC)] == [3, 2]


def test_recent_trades_are_the_trades_the_events_reported(book):
    events = book.buy(8, 3, 103, user="dave")

    assert book.engine.recent_trades(BTC) == only(events, TradeExecuted)[::-1]


def test_markets_maps_each_symbol_to_its_spec(exchange):
    assert dict(exchange.engine.markets) == {BTC: BTC_SPEC, ETH: ETH_SPEC}


def test_an_engine_without_markets_trades_the_default_ones():
    assert list(Engine().markets.values()) == list(DEFAULT_MARKETS)


@pytest.mark.parametrize(
    ("markets", "options", "message"),
    [([], {}, "at least one market"), ([BTC_SPEC, BTC_SPEC], {}, "twice"),
     ([BTC_SPEC], {"order_history": -1}, "negative"),
     ([BTC_SPEC], {"trade_history": -1}, "negative")],
    ids=["no-market", "same-market-twice", "negative-order-history", "negative-trade-history"],
)
def test_an_impossible_configuration_is_refused(markets, options, message):
    with pytest.raises(ValueError, match=message):
        Engine(markets, **options)


def test_last_seq_is_the_last_applied_seq(exchange):
    assert exchange.engine.last_seq == 0

    exchange.engine.apply(NOOP, seq=41, ts=0)

    assert exchange.engine.last_seq == 41


def test_query_results_can_be_encoded_as_json(book):
    book.buy(8, 3, 103, user="dave")
    engine = book.engine

    for value in (engine.order(1), engine.open_orders("alice"), engine.depth(BTC),
                  engine.queue(BTC), engine.top_of_book(BTC), engine.recent_trades(BTC),
                  engine.export_state()):
        assert msgspec.json.encode(value)


# --- export, restore, hash -----------------------------------------------------------


def replay_twice(first: Exchange, second: Exchange) -> None:
    """Send the same busy sequence of commands to both; their events must be equal."""
    script = [
        lambda x: x.buy(20, 4, 101, user="erin"),
        lambda x: x.sell(21, 9, 99, user="frank"),
        lambda x: x.amend(3, quantity=2, user="alice"),
        lambda x: x.amend(2, price=102, user="bob"),
        lambda x: x.cancel_all("alice"),
        lambda x: x.buy(22, 50, 10_000, user="gina", symbol=ETH),
        lambda x: x.cancel_all("bob"),
        lambda x: x.sell(23, 3, user="carol"),
    ]
    for step in script:
        assert step(first) == step(second)


def test_restore_gives_an_engine_with_the_same_state_hash(book):
    book.buy(8, 3, 103, user="dave")

    restored = Engine.restore(book.engine.export_state())

    assert restored.state_hash() == book.engine.state_hash()
    assert restored.export_state() == book.engine.export_state()


def test_a_restored_engine_answers_every_query_alike(book):
    book.buy(8, 3, 103, user="dave")
    book.cancel(2, user="bob")
    engine = book.engine

    restored = Engine.restore(engine.export_state())

    assert restored.last_seq == engine.last_seq
    assert dict(restored.markets) == dict(engine.markets)
    for symbol in (BTC, ETH):
        assert restored.queue(symbol) == engine.queue(symbol)
        assert restored.depth(symbol) == engine.depth(symbol)
        assert restored.top_of_book(symbol) == engine.top_of_book(symbol)
        assert restored.recent_trades(symbol) == engine.recent_trades(symbol)
    for order_id in range(1, 10):
        assert restored.order(order_id) == engine.order(order_id)
    for user in ("alice", "bob", "carol", "dave"):
        assert restored.open_orders(user) == engine.open_orders(user)


def test_a_restored_engine_reacts_to_later_commands_exactly_like_the_original(book):
    restored = Exchange(Engine.restore(book.engine.export_state()))

    replay_twice(book, restored)

    assert restored.engine.state_hash() == book.engine.state_hash()


def test_state_survives_an_encode_decode_round_trip(book):
    wire = msgspec.msgpack.encode(book.engine.export_state())
    state = msgspec.msgpack.decode(wire, type=type(book.engine.export_state()))

    assert Engine.restore(state).state_hash() == book.engine.state_hash()


def test_restore_keeps_the_history_sizes():
    exchange = Exchange(Engine([BTC_SPEC], order_history=1, trade_history=1))
    exchange.sell(1, 2, 100, user="bob")
    exchange.buy(2, 1, 100)
    exchange.buy(3, 1, 100)

    restored = Exchange(Engine.restore(exchange.engine.export_state()))
    restored.buy(4, 1, 100, time_in_force=IOC)

    assert restored.engine.order(3) is None
    assert len(restored.engine.recent_trades(BTC)) == 1


def test_engines_fed_the_same_commands_have_equal_hashes(book):
    other = Exchange(Engine([BTC_SPEC, ETH_SPEC]))
    other.buy(1, 5, 100, user="alice")
    other.buy(2, 3, 100, user="bob")
    other.buy(3, 7, 99, user="alice")
    other.sell(4, 2, 101, user="carol")
    other.sell(5, 4, 103, user="bob")
    other.sell(6, 1, 103, user="carol")
    other.buy(7, 10, 10_000, user="alice", symbol=ETH)

    assert other.engine.state_hash() == book.engine.state_hash()


def test_the_hash_changes_with_every_change_of_state(book):
    seen = {book.engine.state_hash()}

    book.buy(8, 1, 90, user="dave")
    seen.add(book.engine.state_hash())
    book.amend(8, quantity=1, user="dave")  # same values, but updated_seq moves on
    seen.add(book.engine.state_hash())
    book.cancel(8, user="dave")
    seen.add(book.engine.state_hash())
    book.buy(9, 1, 101, user="dave")
    seen.add(book.engine.state_hash())

    assert len(seen) == 5


def test_the_hash_depends_on_queue_order():
    first = Exchange(Engine([BTC_SPEC]))
    first.buy(1, 1, 100, user="a")
    first.buy(2, 1, 100, user="b")
    second = Exchange(Engine([BTC_SPEC]))
    second.buy(1, 1, 100, user="a")
    second.buy(2, 1, 100, user="b")
    second.amend(1, quantity=2, user="a")
    second.amend(1, quantity=1, user="a")  # back to one lot, but now behind order 2
    first.amend(1, quantity=1, user="a")
    first.amend(1, quantity=1, user="a")

    assert [o.order_id for o in second.engine.queue(BTC).bids] == [2, 1]
    assert [o.order_id for o in first.engine.queue(BTC).bids] == [1, 2]
    assert first.engine.state_hash() != second.engine.state_hash()


def test_the_hash_covers_last_seq():
    first, second = Engine([BTC_SPEC]), Engine([BTC_SPEC])
    first.apply(NOOP, seq=1, ts=0)
    second.apply(NOOP, seq=2, ts=0)

    assert first.state_hash() != second.state_hash()


@pytest.fixture
def placed_out_of_priority_order(exchange):
    """Alice's orders, placed in an order unlike their book priority: ETH first, asks, bids."""
    exchange.buy(1, 10, 10_000, user="alice", symbol=ETH)
    exchange.sell(2, 1, 105, user="alice")
    exchange.buy(3, 1, 99, user="alice")
    exchange.buy(4, 1, 100, user="alice")
    return exchange


def test_a_restored_engine_still_lists_open_orders_oldest_first(placed_out_of_priority_order):
    original = placed_out_of_priority_order.engine

    restored = Engine.restore(original.export_state())

    assert [o.order_id for o in original.open_orders("alice")] == [1, 2, 3, 4]
    assert [o.order_id for o in restored.open_orders("alice")] == [1, 2, 3, 4]


def test_a_restored_engine_cancels_all_in_the_same_order(placed_out_of_priority_order):
    restored = Exchange(Engine.restore(placed_out_of_priority_order.engine.export_state()))

    assert restored.cancel_all("alice") == placed_out_of_priority_order.cancel_all("alice")
