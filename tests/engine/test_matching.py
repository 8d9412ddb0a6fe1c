"""Self-trade prevention: what happens when an incoming order meets its own user's resting order.

The incoming (taker) order's ``self_trade_prevention`` decides; the resting
order's own setting does not matter, and other users' orders are unaffected.
"""

from __future__ import annotations

import pytest
from engine_harness import FOK, IOC, STP, only

from engine import CancelReason, OrderCancelled, OrderStatus, RejectReason, TradeExecuted


def trades(events: list[object]) -> list[tuple[int, int, int, int]]:
    """Each trade as ``(maker_order_id, taker_order_id, price, quantity)``."""
    return [(t.maker_order_id, t.taker_order_id, t.price, t.quantity)
            for t in only(events, TradeExecuted)]


def cancellations(events: list[object]) -> list[tuple[int, int, CancelReason]]:
    """Each cancellation as ``(order_id, cancelled, reason)``."""
    return [(c.order_id, c.cancelled, c.reason) for c in only(events, OrderCancelled)]


@pytest.fixture
def own_order_first(exchange):
    """Two asks at 100: alice's (id 1, 5 lots) ahead of bob's (id 2, 5 lots)."""
    exchange.sell(1, 5, 100, user="alice")
    exchange.sell(2, 5, 100, user="bob")
    return exchange


def test_without_prevention_a_user_trades_with_themselves(own_order_first):
    events = own_order_first.buy(3, 7, 100, user="alice", self_trade_prevention=STP.NONE)

    assert trades(events) == [(1, 3, 100, 5), (2, 3, 100, 2)]
    [self_trade, _] = only(events, TradeExecuted)
    assert self_trade.maker_user_id == self_trade.taker_user_id == "alice"


def test_prevention_defaults_to_none(own_order_first):
    events = own_order_first.buy(3, 5, 100, user="alice")

    assert trades(events) == [(1, 3, 100, 5)]


def test_cancel_taker_cancels_the_incoming_order_and_keeps_the_resting_one(own_order_first):
    before = own_order_first.asks()

    events = own_order_first.buy(3, 7, 100, user="alice", self_trade_prevention=STP.CANCEL_TAKER)

    assert trades(events) == []
    assert cancellations(events) == [(3, 7, CancelReason.SELF_TRADE)]
    assert own_order_first.asks() == before
    assert own_order_first.bids() == []


def test_cancel_taker_keeps_the_fills_made_before_meeting_the_own_order(exchange):
    exchange.sell(1, 3, 100, user="bob")
    exchange.sell(2, 5, 101, user="alice")

    events = exchange.buy(3, 7, 101, user="alice", self_trade_prevention=STP.CANCEL_TAKER)

    assert trades(events) == [(1, 3, 100, 3)]
    assert cancellations(events) == [(3, 4, CancelReason.SELF_TRADE)]
    assert exchange.engine.order(3).filled == 3
    assert exchange.asks() == [(2, 101, 5)]
    assert exchange.bids() == []


def test_cancel_maker_cancels_the_own_resting_order_and_keeps_matching_others(own_order_first):
    events = own_order_first.buy(3, 7, 100, user="alice", self_trade_prevention=STP.CANCEL_MAKER)

    assert cancellations(events) == [(1, 5, CancelReason.SELF_TRADE)]
    assert trades(events) == [(2, 3, 100, 5)]
    assert own_order_first.asks() == []
    assert own_order_first.bids() == [(3, 100, 2)]
    assert own_order_first.engine.order(1).status is OrderStatus.CANCELLED


def test_cancel_maker_removes_every_own_order_it_meets_across_levels(exchange):
    exchange.sell(1, 2, 100, user="alice")
    exchange.sell(2, 2, 101, user="alice")
    exchange.sell(3, 2, 101, user="bob")
    exchange.sell(4, 2, 102, user="alice")

    events = exchange.buy(5, 2, 102, user="alice", self_trade_prevention=STP.CANCEL_MAKER)

    assert cancellations(events) == [(1, 2, CancelReason.SELF_TRADE),
                                     (2, 2, CancelReason.SELF_TRADE)]
    assert trades(events) == [(3, 5, 101, 2)]
    assert exchange.asks() == [(4, 102, 2)], "matching stops once the taker is filled"


def test_cancel_both_cancels_the_own_resting_order_and_the_incoming_one(own_order_first):
    events = own_order_first.buy(3, 7, 100, user="alice", self_trade_prevention=STP.CANCEL_BOTH)

    assert trades(events) == []
    assert cancellations(events) == [(1, 5, CancelReason.SELF_TRADE),
                                     (3, 7, CancelReason.SELF_TRADE)]
    assert own_order_first.asks() == [(2, 100, 5)]
    assert own_order_first.bids() == []


def test_prevention_is_decided_by_the_taker_not_the_maker(exchange):
    exchange.sell(1, 5, 100, user="alice", self_trade_prevention=STP.CANCEL_BOTH)

    events = exchange.buy(2, 5, 100, user="alice", self_trade_prevention=STP.NONE)

    assert trades(events) == [(1, 2, 100, 5)]


@pytest.mark.parametrize("mode", [STP.CANCEL_TAKER, STP.CANCEL_MAKER, STP.CANCEL_BOTH])
def test_prevention_never_affects_other_users(exchange, mode):
    exchange.sell(1, 5, 100, user="bob")

    events = exchange.buy(2, 5, 100, user="alice", self_trade_prevention=mode)

    assert trades(events) == [(1, 2, 100, 5)]
    assert cancellations(events) == []


def test_market_order_stopped_by_cancel_taker_is_cancelled_as_self_trade(own_order_first):
    events = own_order_first.buy(3, 5, user="alice", self_trade_prevention=STP.CANCEL_TAKER)

    assert cancellations(events) == [(3, 5, CancelReason.SELF_TRADE)]


def test_ioc_stopped_by_cancel_taker_is_cancelled_as_self_trade_not_unfilled(own_order_first):
    events = own_order_first.buy(3, 5, 100, user="alice", time_in_force=IOC,
                                 self_trade_prevention=STP.CANCEL_TAKER)

    assert cancellations(events) == [(3, 5, CancelReason.SELF_TRADE)]


# --- fill or kill under each prevention mode ----------------------------------------
#
# Book: alice's 3 lots ahead of bob's 3 lots at 100. Alice sends FOK buy 3 @ 100.


@pytest.mark.parametrize(
    ("mode", "expected_trades", "expected_cancellations"),
    [
        pytest.param(STP.NONE, [(1, 3, 100, 3)], [], id="none-trades-with-self"),
        pytest.param(STP.CANCEL_MAKER, [(2, 3, 100, 3)],
                     [(1, 3, CancelReason.SELF_TRADE)], id="cancel_maker-skips-own"),
    ],
)
def test_fok_fills_when_prevention_leaves_enough_liquidity(
    exchange, mode, expected_trades, expected_cancellations
):
    exchange.sell(1, 3, 100, user="alice")
    exchange.sell(2, 3, 100, user="bob")

    events = exchange.buy(3, 3, 100, user="alice", time_in_force=FOK, self_trade_prevention=mode)

    assert trades(events) == expected_trades
    assert cancellations(events) == expected_cancellations
    assert exchange.engine.order(3).status is OrderStatus.FILLED


@pytest.mark.parametrize("mode", [STP.CANCEL_TAKER, STP.CANCEL_BOTH])
def test_fok_that_would_be_stopped_by_its_own_order_is_rejected_untouched(exchange, mode):
    exchange.sell(1, 3, 100, user="alice")
    exchange.sell(2, 3, 100, user="bob")
    before = exchange.snapshot()

    events = exchange.buy(3, 3, 100, user="alice", time_in_force=FOK, self_trade_prevention=mode)

    assert [e.reason for e in events] == [RejectReason.FOK_NOT_FILLABLE]
    assert exchange.snapshot() == before


def test_fok_with_cancel_maker_that_cannot_fill_from_others_cancels_nothing(exchange):
    exchange.sell(1, 3, 100, user="alice")
    exchange.sell(2, 3, 100, user="bob")
    before = exchange.snapshot()

    events = exchange.buy(3, 4, 100, user="alice", time_in_force=FOK,
                          self_trade_prevention=STP.CANCEL_MAKER)

    assert [e.reason for e in events] == [RejectReason.FOK_NOT_FILLABLE]
    assert exchange.snapshot() == before


@pytest.mark.parametrize("mode", [STP.CANCEL_TAKER, STP.CANCEL_BOTH])
def test_fok_fills_when_the_own_order_lies_beyond_what_it_needs(exchange, mode):
    exchange.sell(1, 3, 100, user="bob")
    exchange.sell(2, 3, 101, user="alice")

    events = exchange.buy(3, 3, 101, user="alice", time_in_force=FOK, self_trade_prevention=mode)

    assert trades(events) == [(1, 3, 100, 3)]
    assert exchange.asks() == [(2, 101, 3)]
