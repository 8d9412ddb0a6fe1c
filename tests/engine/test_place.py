"""Placing orders: what rests, what trades, at which price, and what is cancelled.

Prices are integer ticks and quantities integer lots of the BTC/USDT test
market (tick 0.01, lot 0.001, no minimums).
"""

from __future__ import annotations

from engine_harness import FOK, GTC, IOC, LIMIT, MARKET, kinds, only

from engine import (
    CancelReason,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderStatus,
    RejectReason,
    TradeExecuted,
)


def trades(events: list[object]) -> list[tuple[int, int, int, int]]:
    """Each trade as ``(maker_order_id, taker_order_id, price, quantity)``."""
    return [(t.maker_order_id, t.taker_order_id, t.price, t.quantity)
            for t in only(events, TradeExecuted)]


# --- limit orders, GTC ---------------------------------------------------------


def test_limit_order_that_does_not_cross_rests_on_the_book(exchange):
    events = exchange.buy(1, 5, 100)

    assert kinds(events) == ["OrderAccepted", "BookLevelChanged", "TopOfBookChanged"]
    assert exchange.bids() == [(1, 100, 5)]
    assert exchange.asks() == []
    assert exchange.engine.order(1).status is OrderStatus.NEW


def test_buy_below_the_best_ask_and_sell_above_the_best_bid_both_rest(exchange):
    exchange.sell(1, 5, 101)
    exchange.buy(2, 5, 100)

    assert trades(exchange.buy(3, 5, 100)) == []
    assert trades(exchange.sell(4, 5, 101)) == []
    assert exchange.bids() == [(2, 100, 5), (3, 100, 5)]
    assert exchange.asks() == [(1, 101, 5), (4, 101, 5)]


def test_better_priced_ask_fills_first_even_when_it_arrived_later(exchange):
    exchange.sell(1, 5, 102, user="bob")
    exchange.sell(2, 5, 101, user="carol")

    events = exchange.buy(3, 5, 102)

    assert trades(events) == [(2, 3, 101, 5)]
    assert exchange.asks() == [(1, 102, 5)]


def test_better_priced_bid_fills_first_even_when_it_arrived_later(exchange):
    exchange.buy(1, 5, 98, user="bob")
    exchange.buy(2, 5, 99, user="carol")

    events = exchange.sell(3, 5, 98)

    assert trades(events) == [(2, 3, 99, 5)]
    assert exchange.bids() == [(1, 98, 5)]


def test_orders_at_the_same_price_fill_in_arrival_order(exchange):
    exchange.sell(1, 2, 100, user="bob")
    exchange.sell(2, 2, 100, user="carol")
    exchange.sell(3, 2, 100, user="dave")

    events = exchange.buy(4, 3, 100)

    assert trades(events) == [(1, 4, 100, 2), (2, 4, 100, 1)]
    assert exchange.asks() == [(2, 100, 1), (3, 100, 2)]


def test_partially_filled_maker_keeps_the_head_of_its_queue(exchange):
    exchange.sell(1, 5, 100, user="bob")
    exchange.sell(2, 5, 100, user="carol")
    exchange.buy(3, 2, 100)

    events = exchange.buy(4, 1, 100)

    assert trades(events) == [(1, 4, 100, 1)]
    assert exchange.asks() == [(1, 100, 2), (2, 100, 5)]


def test_buyer_crossing_the_spread_pays_the_resting_ask_price(exchange):
    exchange.sell(1, 5, 100, user="bob")

    events = exchange.buy(2, 5, 105)

    assert trades(events) == [(1, 2, 100, 5)]
    assert [f.price for f in only(events, OrderFilled)] == [100, 100]


def test_seller_crossing_the_spread_receives_the_resting_bid_price(exchange):
    exchange.buy(1, 5, 105, user="bob")

    events = exchange.sell(2, 5, 100)

    assert trades(events) == [(1, 2, 105, 5)]


def test_incoming_order_sweeps_levels_up_to_its_limit_and_rests_the_remainder(exchange):
    exchange.sell(1, 2, 100, user="bob")
    exchange.sell(2, 2, 101, user="bob")
    exchange.sell(3, 2, 103, user="bob")

    events = exchange.buy(4, 6, 102)

    assert trades(events) == [(1, 4, 100, 2), (2, 4, 101, 2)]
    assert exchange.bids() == [(4, 102, 2)]
    assert exchange.asks() == [(3, 103, 2)]
    assert exchange.engine.order(4).status is OrderStatus.PARTIALLY_FILLED


def test_partial_fill_of_the_maker_leaves_its_remainder_resting(exchange):
    exchange.sell(1, 10, 100, user="bob")

    events = exchange.buy(2, 4, 100)

    maker_fill, taker_fill = only(events, OrderFilled)
    assert (maker_fill.order_id, maker_fill.filled, maker_fill.remaining, maker_fill.status) == (
        1, 4, 6, OrderStatus.PARTIALLY_FILLED)
    assert (taker_fill.order_id, taker_fill.filled, taker_fill.remaining, taker_fill.status) == (
        2, 4, 0, OrderStatus.FILLED)
    assert exchange.asks() == [(1, 100, 6)]
    assert exchange.bids() == []


def test_exactly_matching_quantities_fill_both_orders_and_empty_the_book(exchange):
    exchange.sell(1, 5, 100, user="bob")

    exchange.buy(2, 5, 100)

    assert exchange.asks() == exchange.bids() == []
    assert exchange.engine.order(1).status is OrderStatus.FILLED
    assert exchange.engine.order(2).status is OrderStatus.FILLED


def test_a_limit_order_defaults_to_good_till_cancelled(exchange):
    accepted = only(exchange.buy(1, 5, 100), OrderAccepted)[0]

    assert accepted.time_in_force is GTC
    assert accepted.order_type is LIMIT


# --- market orders -------------------------------------------------------------------


def test_market_order_defaults_to_immediate_or_cancel(exchange):
    accepted = only(exchange.buy(1, 5), OrderAccepted)[0]

    assert accepted.order_type is MARKET
    assert accepted.time_in_force is IOC
    assert accepted.price is None


def test_market_order_walks_the_book_at_each_resting_price(exchange):
    exchange.sell(1, 2, 100, user="bob")
    exchange.sell(2, 2, 150, user="bob")
    exchange.sell(3, 2, 900, user="bob")

    events = exchange.buy(4, 5)

    assert trades(events) == [(1, 4, 100, 2), (2, 4, 150, 2), (3, 4, 900, 1)]
    assert exchange.asks() == [(3, 900, 1)]
    assert exchange.bids() == []


def test_market_sell_walks_the_bids_from_the_highest(exchange):
    exchange.buy(1, 2, 90, user="bob")
    exchange.buy(2, 2, 100, user="bob")

    events = exchange.sell(3, 3)

    assert trades(events) == [(2, 3, 100, 2), (1, 3, 90, 1)]


def test_market_order_remainder_is_cancelled_as_unfilled_and_never_rests(exchange):
    exchange.sell(1, 2, 100, user="bob")

    events = exchange.buy(2, 5)

    assert trades(events) == [(1, 2, 100, 2)]
    [cancelled] = only(events, OrderCancelled)
    assert (cancelled.order_id, cancelled.cancelled, cancelled.filled, cancelled.reason) == (
        2, 3, 2, CancelReason.UNFILLED)
    assert exchange.bids() == []
    assert exchange.engine.order(2).status is OrderStatus.CANCELLED


def test_market_order_into_an_empty_book_is_accepted_then_cancelled_whole(exchange):
    events = exchange.sell(1, 5)

    assert kinds(events) == ["OrderAccepted", "OrderCancelled"]
    assert events[1].cancelled == 5
    assert events[1].reason is CancelReason.UNFILLED
    assert exchange.engine.order(1).remaining == 0


# --- immediate or cancel -------------------------------------------------------------


def test_ioc_fills_what_crosses_and_cancels_the_rest(exchange):
    exchange.sell(1, 3, 100, user="bob")
    exchange.sell(2, 3, 102, user="bob")

    events = exchange.buy(3, 5, 101, time_in_force=IOC)

    assert trades(events) == [(1, 3, 100, 3)]
    [cancelled] = only(events, OrderCancelled)
    assert (cancelled.order_id, cancelled.cancelled, cancelled.reason) == (
        3, 2, CancelReason.UNFILLED)
    assert exchange.bids() == []
    assert exchange.asks() == [(2, 102, 3)]


def test_ioc_that_crosses_nothing_is_cancelled_whole(exchange):
    exchange.sell(1, 3, 102, user="bob")

    events = exchange.buy(2, 5, 101, time_in_force=IOC)

    assert kinds(events) == ["OrderAccepted", "OrderCancelled"]
    assert exchange.bids() == []


def test_ioc_that_fills_completely_is_not_cancelled(exchange):
    exchange.sell(1, 5, 100, user="bob")

    events = exchange.buy(2, 5, 100, time_in_force=IOC)

    assert only(events, OrderCancelled) == []
    assert exchange.engine.order(2).status is OrderStatus.FILLED


# --- fill or kill --------------------------------------------------------------------


def test_fok_that_cannot_fill_completely_is_rejected_without_trading(exchange):
    exchange.sell(1, 3, 100, user="bob")
    exchange.sell(2, 3, 101, user="bob")
    before = exchange.snapshot()

    events = exchange.buy(3, 7, 101, time_in_force=FOK)

    assert kinds(events) == ["OrderRejected"]
    assert events[0].reason is RejectReason.FOK_NOT_FILLABLE
    assert exchange.snapshot() == before
    assert exchange.engine.order(3) is None


def test_fok_does_not_count_liquidity_beyond_its_limit_price(exchange):
    exchange.sell(1, 3, 100, user="bob")
    exchange.sell(2, 3, 102, user="bob")

    events = exchange.buy(3, 4, 101, time_in_force=FOK)

    assert only(events, OrderRejected)[0].reason is RejectReason.FOK_NOT_FILLABLE
    assert exchange.asks() == [(1, 100, 3), (2, 102, 3)]


def test_fillable_fok_fills_completely_across_several_levels(exchange):
    exchange.sell(1, 3, 100, user="bob")
    exchange.sell(2, 3, 101, user="carol")
    exchange.sell(3, 3, 102, user="dave")

    events = exchange.buy(4, 8, 102, time_in_force=FOK)

    assert trades(events) == [(1, 4, 100, 3), (2, 4, 101, 3), (3, 4, 102, 2)]
    assert only(events, OrderCancelled) == []
    assert exchange.engine.order(4).status is OrderStatus.FILLED
    assert exchange.asks() == [(3, 102, 1)]


def test_fok_for_exactly_the_available_quantity_fills(exchange):
    exchange.buy(1, 3, 100, user="bob")
    exchange.buy(2, 3, 99, user="bob")

    events = exchange.sell(3, 6, 99, time_in_force=FOK)

    assert sum(t.quantity for t in only(events, TradeExecuted)) == 6
    assert exchange.bids() == []


def test_market_fok_fills_completely_or_is_rejected(exchange):
    exchange.sell(1, 3, 100, user="bob")
    exchange.sell(2, 3, 5000, user="bob")

    too_big = exchange.buy(3, 7, order_type=MARKET, time_in_force=FOK)
    fits = exchange.buy(4, 6, order_type=MARKET, time_in_force=FOK)

    assert too_big[0].reason is RejectReason.FOK_NOT_FILLABLE
    assert trades(fits) == [(1, 4, 100, 3), (2, 4, 5000, 3)]


# --- post only -----------------------------------------------------------------------


def test_post_only_order_that_does_not_cross_rests(exchange):
    exchange.sell(1, 5, 101, user="bob")

    events = exchange.buy(2, 5, 100, post_only=True)

    assert kinds(events) == ["OrderAccepted", "BookLevelChanged", "TopOfBookChanged"]
    assert events[0].post_only is True
    assert exchange.bids() == [(2, 100, 5)]


def test_post_only_order_that_would_cross_is_rejected_and_the_book_is_unchanged(exchange):
    exchange.sell(1, 5, 101, user="bob")
    before = exchange.snapshot()

    events = exchange.buy(2, 5, 102, post_only=True)

    assert kinds(events) == ["OrderRejected"]
    assert events[0].reason is RejectReason.POST_ONLY_WOULD_CROSS
    assert exchange.snapshot() == before


def test_post_only_at_exactly_the_opposite_best_price_would_cross(exchange):
    exchange.buy(1, 5, 100, user="bob")

    events = exchange.sell(2, 5, 100, post_only=True)

    assert events[0].reason is RejectReason.POST_ONLY_WOULD_CROSS
    assert exchange.bids() == [(1, 100, 5)]


def test_post_only_into_an_empty_opposite_side_rests(exchange):
    exchange.sell(1, 5, 100, post_only=True)

    assert exchange.asks() == [(1, 100, 5)]
