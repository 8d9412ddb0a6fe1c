"""Cancelling and amending open orders.

Cancel: only the owner may, only while the order is open. Cancel-all takes a
user's orders in every market, or in one. Amend: reducing the quantity at the
same price keeps the queue position; a new price or a larger quantity sends
the order to the back of the queue at its (new) price, where it trades at
once as a taker if it crosses.
"""

from __future__ import annotations

import pytest
from engine_harness import BTC, ETH, STP, only

from engine import (
    CancelReason,
    OrderAmended,
    OrderCancelled,
    OrderRejected,
    OrderStatus,
    RejectReason,
    TradeExecuted,
)


def reject_reason(events: list[object]) -> RejectReason:
    [rejected] = events
    assert type(rejected) is OrderRejected
    return rejected.reason


def fills_of(events: list[object]) -> list[tuple[int, int]]:
    """``(maker_order_id, quantity)`` for each trade, in order."""
    return [(t.maker_order_id, t.quantity) for t in only(events, TradeExecuted)]


# --- cancel --------------------------------------------------------------------------


def test_owner_cancels_an_open_order_and_it_leaves_the_book(exchange):
    exchange.buy(1, 5, 100)

    events = exchange.cancel(1)

    [cancelled] = only(events, OrderCancelled)
    assert (cancelled.order_id, cancelled.cancelled, cancelled.reason) == (1, 5, CancelReason.USER)
    assert exchange.bids() == []
    assert exchange.engine.order(1).status is OrderStatus.CANCELLED
    assert exchange.engine.open_orders("alice") == []


def test_cancelling_a_partially_filled_order_cancels_only_its_remainder(exchange):
    exchange.buy(1, 5, 100)
    exchange.sell(2, 2, 100, user="bob")

    [cancelled, *_] = exchange.cancel(1)

    assert (cancelled.quantity, cancelled.filled, cancelled.cancelled) == (5, 2, 3)
    assert exchange.engine.order(1).filled == 2


def test_cancelling_one_order_keeps_the_others_in_their_queue_order(exchange):
    exchange.buy(1, 1, 100, user="bob")
    exchange.buy(2, 1, 100)
    exchange.buy(3, 1, 100, user="carol")

    exchange.cancel(2)

    assert exchange.bids() == [(1, 100, 1), (3, 100, 1)]
    assert fills_of(exchange.sell(4, 2, 100, user="dave")) == [(1, 1), (3, 1)]


def test_another_users_order_cannot_be_cancelled(exchange):
    exchange.buy(1, 5, 100, user="alice")
    before = exchange.snapshot()

    assert reject_reason(exchange.cancel(1, user="mallory")) is RejectReason.NOT_OWNER
    assert exchange.snapshot() == before


def test_an_unknown_order_cannot_be_cancelled(exchange):
    assert reject_reason(exchange.cancel(404)) is RejectReason.UNKNOWN_ORDER


def test_a_filled_order_is_not_open(exchange):
    exchange.buy(1, 5, 100)
    exchange.sell(2, 5, 100, user="bob")

    assert reject_reason(exchange.cancel(1)) is RejectReason.ORDER_NOT_OPEN
    assert reject_reason(exchange.cancel(2, user="bob")) is RejectReason.ORDER_NOT_OPEN


def test_a_cancelled_order_cannot_be_cancelled_again(exchange):
    exchange.buy(1, 5, 100)
    exchange.cancel(1)

    assert reject_reason(exchange.cancel(1)) is RejectReason.ORDER_NOT_OPEN


def test_a_closed_order_of_another_user_is_still_not_theirs_to_cancel(exchange):
    exchange.buy(1, 5, 100)
    exchange.cancel(1)

    assert reject_reason(exchange.cancel(1, user="mallory")) is RejectReason.NOT_OWNER


# --- cancel all ----------------------------------------------------------------------


def test_cancel_all_cancels_every_open_order_of_the_user_in_every_market(exchange):
    exchange.buy(1, 5, 100)
    exchange.sell(2, 5, 200)
    exchange.buy(3, 10, 10_000, symbol=ETH)
    exchange.buy(4, 5, 100, user="bob")

    events = exchange.cancel_all("alice")

    assert sorted(c.order_id for c in only(events, OrderCancelled)) == [1, 2, 3]
    assert {c.reason for c in only(events, OrderCancelled)} == {CancelReason.USER}
    assert exchange.engine.open_orders("alice") == []
    assert exchange.bids() == [(4, 100, 5)]


def test_cancel_all_cancels_in_the_order_the_orders_were_placed(exchange):
    exchange.buy(1, 5, 100)
    exchange.buy(2, 5, 101)
    exchange.sell(3, 5, 200)

    events = exchange.cancel_all("alice")

    assert [c.order_id for c in only(events, OrderCancelled)] == [1, 2, 3]


def test_cancel_all_in_one_symbol_leaves_other_markets_alone(exchange):
    exchange.buy(1, 5, 100)
    exchange.buy(2, 10, 10_000, symbol=ETH)

    events = exchange.cancel_all("alice", symbol=ETH)

    assert [c.order_id for c in only(events, OrderCancelled)] == [2]
    assert [o.order_id for o in exchange.engine.open_orders("alice")] == [1]


def test_cancel_all_for_a_user_without_open_orders_does_nothing(exchange):
    exchange.buy(1, 5, 100, user="bob")
    before = exchange.snapshot()

    assert exchange.cancel_all("alice") == []
    assert exchange.cancel_all("bob", symbol=ETH) == []
    assert exchange.snapshot() == before


def test_cancel_all_in_an_unknown_symbol_is_rejected(exchange):
    exchange.buy(1, 5, 100)
    before = exchange.snapshot()

    assert reject_reason(exchange.cancel_all("alice", symbol="XRP/USDT")) is (
        RejectReason.UNKNOWN_SYMBOL)
    assert exchange.snapshot() == before


# --- amend: queue priority -----------------------------------------------------------


@pytest.fixture
def queue_of_three(exchange):
    """Three bids at 100: alice (id 1, 5 lots), bob (id 2, 5 lots), carol (id 3, 5 lots)."""
    exchange.buy(1, 5, 100, user="alice")
    exchange.buy(2, 5, 100, user="bob")
    exchange.buy(3, 5, 100, user="carol")
    return exchange


def test_reducing_quantity_keeps_queue_priority(queue_of_three):
    events = queue_of_three.amend(1, quantity=3)

    assert only(events, OrderAmended)[0].priority_kept is True
    assert queue_of_three.bids() == [(1, 100, 3), (2, 100, 5), (3, 100, 5)]
    assert fills_of(queue_of_three.sell(9, 4, 100, user="dave")) == [(1, 3), (2, 1)]


def test_reducing_quantity_of_a_partially_filled_order_keeps_priority_and_its_fills(exchange):
    exchange.buy(1, 10, 100)
    exchange.buy(2, 5, 100, user="bob")
    exchange.sell(3, 4, 100, user="dave")

    [amended, *_] = exchange.amend(1, quantity=6)

    assert (amended.quantity, amended.filled, amended.remaining, amended.priority_kept) == (
        6, 4, 2, True)
    assert amended.status is OrderStatus.PARTIALLY_FILLED
    assert fills_of(exchange.sell(4, 3, 100, user="dave")) == [(1, 2), (2, 1)]


def test_changing_the_price_loses_priority(queue_of_three):
    queue_of_three.amend(1, price=101)
    events = queue_of_three.amend(1, price=100)

    assert only(events, OrderAmended)[0].priority_kept is False
    assert queue_of_three.bids() == [(2, 100, 5), (3, 100, 5), (1, 100, 5)]
    assert fills_of(queue_of_three.sell(9, 6, 100, user="dave")) == [(2, 5), (3, 1)]


def test_increasing_quantity_goes_to_the_back_of_the_queue(queue_of_three):
    events = queue_of_three.amend(1, quantity=6)

    assert only(events, OrderAmended)[0].priority_kept is False
    assert queue_of_three.bids() == [(2, 100, 5), (3, 100, 5), (1, 100, 6)]
    assert fills_of(queue_of_three.sell(9, 11, 100, user="dave")) == [(2, 5), (3, 5), (1, 1)]


def test_amending_to_the_same_price_and_quantity_keeps_priority(queue_of_three):
    events = queue_of_three.amend(1, price=100, quantity=5)

    assert only(events, OrderAmended)[0].priority_kept is True
    assert queue_of_three.bids()[0] == (1, 100, 5)


def test_amending_the_price_moves_the_order_to_its_new_level(queue_of_three):
    queue_of_three.amend(2, price=99, user="bob")

    depth = queue_of_three.engine.depth(BTC)
    assert [(lvl.price, lvl.quantity, lvl.orders) for lvl in depth.bids] == [
        (100, 10, 2), (99, 5, 1)]


def test_amending_to_a_crossing_price_trades_at_once_as_taker(exchange):
    exchange.sell(1, 3, 102, user="bob")
    exchange.buy(2, 5, 100)

    events = exchange.amend(2, price=103)

    [trade] = only(events, TradeExecuted)
    assert (trade.maker_order_id, trade.taker_order_id, trade.price, trade.quantity) == (
        1, 2, 102, 3)
    assert exchange.bids() == [(2, 103, 2)]
    assert exchange.asks() == []


def test_amend_that_crosses_and_fills_completely_closes_the_order(exchange):
    exchange.sell(1, 5, 102, user="bob")
    exchange.buy(2, 5, 100)

    exchange.amend(2, price=102)

    assert exchange.engine.order(2).status is OrderStatus.FILLED
    assert exchange.engine.open_orders("alice") == []
    assert reject_reason(exchange.cancel(2)) is RejectReason.ORDER_NOT_OPEN


def test_amend_keeps_the_orders_fills_when_it_loses_priority(exchange):
    exchange.sell(1, 10, 100)
    exchange.buy(2, 4, 100, user="bob")

    [amended, *_] = exchange.amend(1, price=101, quantity=12)

    assert (amended.quantity, amended.filled, amended.remaining) == (12, 4, 8)
    assert exchange.asks() == [(1, 101, 8)]


def test_post_only_amend_that_would_cross_is_rejected(exchange):
    exchange.sell(1, 5, 105, user="bob")
    exchange.buy(2, 5, 100, post_only=True)
    before = exchange.snapshot()

    assert reject_reason(exchange.amend(2, price=105)) is RejectReason.POST_ONLY_WOULD_CROSS
    assert exchange.snapshot() == before


def test_post_only_amend_that_does_not_cross_is_accepted(exchange):
    exchange.sell(1, 5, 105, user="bob")
    exchange.buy(2, 5, 100, post_only=True)

    exchange.amend(2, price=104, quantity=6)

    assert exchange.bids() == [(2, 104, 6)]


def test_amend_with_cancel_taker_into_own_order_cancels_the_amended_order(exchange):
    exchange.sell(1, 5, 102)
    exchange.buy(2, 5, 100, self_trade_prevention=STP.CANCEL_TAKER)

    events = exchange.amend(2, price=102)

    [cancelled] = only(events, OrderCancelled)
    assert (cancelled.order_id, cancelled.reason) == (2, CancelReason.SELF_TRADE)
    assert exchange.asks() == [(1, 102, 5)]
    assert exchange.bids() == []


# --- amend: refused ------------------------------------------------------------------


@pytest.mark.parametrize("new_quantity", [4, 3, 0, -1])
def test_amending_quantity_to_at_most_what_has_filled_is_invalid(exchange, new_quantity):
    exchange.buy(1, 10, 100)
    exchange.sell(2, 4, 100, user="bob")
    before = exchange.snapshot()

    assert reject_reason(exchange.amend(1, quantity=new_quantity)) is (
        RejectReason.INVALID_QUANTITY)
    assert exchange.snapshot() == before


def test_amending_quantity_to_just_above_what_has_filled_leaves_one_lot(exchange):
    exchange.buy(1, 10, 100)
    exchange.sell(2, 4, 100, user="bob")

    exchange.amend(1, quantity=5)

    assert exchange.bids() == [(1, 100, 1)]


def test_amend_without_price_or_quantity_has_nothing_to_amend(exchange):
    exchange.buy(1, 10, 100)

    assert reject_reason(exchange.amend(1)) is RejectReason.NOTHING_TO_AMEND


def test_amend_of_another_users_order_is_refused(exchange):
    exchange.buy(1, 10, 100)

    assert reject_reason(exchange.amend(1, quantity=5, user="bob")) is RejectReason.NOT_OWNER


def test_amend_of_an_unknown_or_closed_order_is_refused(exchange):
    exchange.buy(1, 10, 100)
    exchange.cancel(1)

    assert reject_reason(exchange.amend(1, quantity=5)) is RejectReason.ORDER_NOT_OPEN
    assert reject_reason(exchange.amend(2, quantity=5)) is RejectReason.UNKNOWN_ORDER
