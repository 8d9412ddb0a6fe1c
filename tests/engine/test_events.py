"""The events one command returns: every field by name, and their order.

The engine builds events positionally for speed, so each event type is
compared here with an instance built by keyword. The values are chosen to be
pairwise different (price != quantity, maker fee != taker fee, filled !=
remaining, ...) so that two swapped fields cannot go unnoticed.
"""

from __future__ import annotations

from engine_harness import BTC, BUY, GTC, IOC, LIMIT, MARKET, SELL, STP, kinds, only

from engine import (
    BookLevelChanged,
    CancelReason,
    Liquidity,
    OrderAccepted,
    OrderAmended,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderStatus,
    RejectReason,
    TopOfBookChanged,
    TradeExecuted,
)

# --- every field by name -------------------------------------------------------------


def test_order_accepted_reports_the_order_as_placed(exchange):
    events = exchange.sell(7, 12, 345, user="bob", client_order_id="b-7",
                           self_trade_prevention=STP.CANCEL_MAKER, post_only=True)

    assert events[0] == OrderAccepted(
        seq=1, ts=1000, symbol=BTC, order_id=7, user_id="bob", client_order_id="b-7",
        side=SELL, order_type=LIMIT, time_in_force=GTC, post_only=True,
        self_trade_prevention=STP.CANCEL_MAKER, price=345, quantity=12,
    )


def test_order_accepted_for_a_market_order_has_no_price(exchange):
    events = exchange.buy(8, 3, client_order_id="m")

    assert events[0] == OrderAccepted(
        seq=1, ts=1000, symbol=BTC, order_id=8, user_id="alice", client_order_id="m",
        side=BUY, order_type=MARKET, time_in_force=IOC, post_only=False,
        self_trade_prevention=STP.NONE, price=None, quantity=3,
    )


def test_order_rejected_names_the_command_order_user_and_reason(exchange):
    events = exchange.buy(9, 0, 100, user="carol", client_order_id="c-9")

    assert events == [
        OrderRejected(
            seq=1, ts=1000, command="place", symbol=BTC, order_id=9, user_id="carol",
            client_order_id="c-9", reason=RejectReason.INVALID_QUANTITY,
        )
    ]


def test_rejected_cancel_and_amend_name_their_command(exchange):
    exchange.buy(1, 5, 100, user="alice")

    cancel = exchange.cancel(1, user="bob")
    amend = exchange.amend(1, quantity=4, user="bob")

    assert cancel == [
        OrderRejected(seq=2, ts=2000, command="cancel", symbol=BTC, order_id=1, user_id="bob",
                      client_order_id=None, reason=RejectReason.NOT_OWNER)
    ]
    assert amend == [
        OrderRejected(seq=3, ts=3000, command="amend", symbol=BTC, order_id=1, user_id="bob",
                      client_order_id=None, reason=RejectReason.NOT_OWNER)
    ]


def test_rejected_cancel_all_names_its_command_and_symbol(exchange):
    events = exchange.cancel_all("alice", symbol="DOGE/USDT")

    assert events == [
        OrderRejected(seq=1, ts=1000, command="cancel_all", symbol="DOGE/USDT", order_id=None,
                      user_id="alice", client_order_id=None, reason=RejectReason.UNKNOWN_SYMBOL)
    ]


def test_a_trade_and_both_fills_carry_every_field(exchange):
    # Maker: bob sells 10 lots at 2_000 ticks. Taker: alice buys 4 lots at 2_100.
    # Notional = 2_000 ticks * 4 lots = 8_000 * 0.00001 = 0.08 USDT.
    # Maker fee 0.1 % = 0.00008 USDT = 8_000 units; taker 0.2 % = 16_000 units (1e-8 USDT).
    exchange.sell(11, 10, 2_000, user="bob", client_order_id="bob-11")

    events = exchange.buy(22, 4, 2_100, user="alice", client_order_id="alice-22")

    trade, maker_fill, taker_fill = events[1:4]
    assert trade == TradeExecuted(
        seq=2, ts=2000, symbol=BTC, trade_id=1, price=2_000, quantity=4, taker_side=BUY,
        maker_order_id=11, maker_user_id="bob", taker_order_id=22, taker_user_id="alice",
        maker_fee=8_000, taker_fee=16_000,
    )
    assert maker_fill == OrderFilled(
        seq=2, ts=2000, symbol=BTC, order_id=11, user_id="bob", client_order_id="bob-11",
        side=SELL, trade_id=1, price=2_000, quantity=4, fee=8_000, liquidity=Liquidity.MAKER,
        filled=4, remaining=6, status=OrderStatus.PARTIALLY_FILLED, order_price=2_000,
    )
    assert taker_fill == OrderFilled(
        seq=2, ts=2000, symbol=BTC, order_id=22, user_id="alice", client_order_id="alice-22",
        side=BUY, trade_id=1, price=2_000, quantity=4, fee=16_000, liquidity=Liquidity.TAKER,
        filled=4, remaining=0, status=OrderStatus.FILLED, order_price=2_100,
    )


def test_a_fully_filled_maker_and_a_partially_filled_taker(exchange):
    exchange.buy(5, 3, 700, user="bob")

    events = exchange.sell(6, 8, 650, user="alice")

    maker_fill, taker_fill = only(events, OrderFilled)
    assert maker_fill == OrderFilled(
        seq=2, ts=2000, symbol=BTC, order_id=5, user_id="bob", client_order_id=None,
        side=BUY, trade_id=1, price=700, quantity=3, fee=maker_fill.fee,
        liquidity=Liquidity.MAKER, filled=3, remaining=0, status=OrderStatus.FILLED,
        order_price=700,
    )
    assert taker_fill == OrderFilled(
        seq=2, ts=2000, symbol=BTC, order_id=6, user_id="alice", client_order_id=None,
        side=SELL, trade_id=1, price=700, quantity=3, fee=taker_fill.fee,
        liquidity=Liquidity.TAKER, filled=3, remaining=5, status=OrderStatus.PARTIALLY_FILLED,
        order_price=650,
    )
    assert only(events, TradeExecuted)[0].taker_side is SELL


def test_a_market_takers_fill_has_no_order_price(exchange):
    exchange.sell(1, 3, 700, user="bob")

    events = exchange.buy(2, 3, user="alice")

    maker_fill, taker_fill = only(events, OrderFilled)
    assert (maker_fill.price, maker_fill.order_price) == (700, 700)
    assert (taker_fill.price, taker_fill.order_price) == (700, None)


def test_trade_ids_count_up_across_commands_and_markets(exchange):
    exchange.sell(1, 2, 100, user="bob")
    exchange.sell(2, 2, 101, user="bob")
    first = exchange.buy(3, 4, 101)
    exchange.sell(4, 10, 10_000, user="bob", symbol="ETH/USDT")
    second = exchange.buy(5, 10, 10_000, symbol="ETH/USDT")

    assert [t.trade_id for t in only(first + second, TradeExecuted)] == [1, 2, 3]
    assert [f.trade_id for f in only(first, OrderFilled)] == [1, 1, 2, 2]


def test_order_cancelled_by_its_owner_carries_every_field(exchange):
    exchange.buy(3, 9, 480, user="carol", client_order_id="c3")
    exchange.sell(4, 2, 480, user="dave")

    events = exchange.cancel(3, user="carol")

    assert events[0] == OrderCancelled(
        seq=3, ts=3000, symbol=BTC, order_id=3, user_id="carol", client_order_id="c3",
        side=BUY, price=480, quantity=9, filled=2, cancelled=7, reason=CancelReason.USER,
        status=OrderStatus.CANCELLED,
    )


def test_order_cancelled_for_an_unfilled_market_remainder(exchange):
    exchange.buy(1, 2, 300, user="bob")

    events = exchange.sell(2, 5, user="alice", client_order_id="mkt")

    assert events[-3] == OrderCancelled(
        seq=2, ts=2000, symbol=BTC, order_id=2, user_id="alice", client_order_id="mkt",
        side=SELL, price=None, quantity=5, filled=2, cancelled=3,
        reason=CancelReason.UNFILLED, status=OrderStatus.CANCELLED,
    )


def test_order_amended_carries_every_field(exchange):
    exchange.sell(1, 10, 500, user="erin", client_order_id="e1")
    exchange.buy(2, 3, 500, user="frank")

    events = exchange.amend(1, quantity=8, user="erin")

    assert events[0] == OrderAmended(
        seq=3, ts=3000, symbol=BTC, order_id=1, user_id="erin", client_order_id="e1",
        side=SELL, price=500, quantity=8, filled=3, remaining=5,
        status=OrderStatus.PARTIALLY_FILLED, priority_kept=True,
    )


def test_order_amended_to_a_new_price_reports_priority_lost(exchange):
    exchange.buy(1, 10, 500, user="erin")

    events = exchange.amend(1, price=490, quantity=12, user="erin")

    assert events[0] == OrderAmended(
        seq=2, ts=2000, symbol=BTC, order_id=1, user_id="erin", client_order_id=None,
        side=BUY, price=490, quantity=12, filled=0, remaining=12,
        status=OrderStatus.NEW, priority_kept=False,
    )


def test_book_level_changed_and_top_of_book_changed_carry_every_field(exchange):
    exchange.buy(1, 4, 99, user="bob")

    events = exchange.sell(2, 6, 101, user="carol")

    assert events[1:] == [
        BookLevelChanged(seq=2, ts=2000, symbol=BTC, side=SELL, price=101, quantity=6),
        TopOfBookChanged(seq=2, ts=2000, symbol=BTC, bid_price=99, bid_quantity=4,
                         ask_price=101, ask_quantity=6),
    ]


def test_top_of_book_reports_none_and_zero_for_an_emptied_side(exchange):
    exchange.buy(1, 4, 99, user="bob")

    events = exchange.cancel(1, user="bob")

    assert events[1:] == [
        BookLevelChanged(seq=2, ts=2000, symbol=BTC, side=BUY, price=99, quantity=0),
        TopOfBookChanged(seq=2, ts=2000, symbol=BTC, bid_price=None, bid_quantity=0,
                         ask_price=None, ask_quantity=0),
    ]


# --- the order of events -------------------------------------------------------------


def test_a_sweeping_order_reports_lifecycle_then_trades_then_levels_then_top(exchange):
    exchange.sell(1, 2, 100, user="bob")
    exchange.sell(2, 3, 101, user="carol")

    events = exchange.buy(3, 4, 102)

    assert kinds(events) == [
        "OrderAccepted",
        "TradeExecuted", "OrderFilled", "OrderFilled",
        "TradeExecuted", "OrderFilled", "OrderFilled",
        "BookLevelChanged", "BookLevelChanged",
        "TopOfBookChanged",
    ]
    assert [(f.order_id, f.liquidity) for f in only(events, OrderFilled)] == [
        (1, Liquidity.MAKER), (3, Liquidity.TAKER), (2, Liquidity.MAKER), (3, Liquidity.TAKER)]
    assert [(e.side, e.price, e.quantity) for e in only(events, BookLevelChanged)] == [
        (SELL, 100, 0), (SELL, 101, 1)]


def test_a_partly_filled_order_that_rests_reports_both_sides_levels(exchange):
    exchange.sell(1, 2, 100, user="bob")

    events = exchange.buy(2, 5, 100)

    assert kinds(events) == ["OrderAccepted", "TradeExecuted", "OrderFilled", "OrderFilled",
                             "BookLevelChanged", "BookLevelChanged", "TopOfBookChanged"]
    assert [(e.side, e.price, e.quantity) for e in only(events, BookLevelChanged)] == [
        (SELL, 100, 0), (BUY, 100, 3)]
    assert events[-1] == TopOfBookChanged(seq=2, ts=2000, symbol=BTC, bid_price=100,
                                          bid_quantity=3, ask_price=None, ask_quantity=0)


def test_an_ioc_remainder_is_cancelled_after_its_trades_and_before_the_book_events(exchange):
    exchange.sell(1, 2, 100, user="bob")

    events = exchange.buy(2, 5, 100, time_in_force=IOC)

    assert kinds(events) == ["OrderAccepted", "TradeExecuted", "OrderFilled", "OrderFilled",
                             "OrderCancelled", "BookLevelChanged", "TopOfBookChanged"]


def test_every_event_carries_the_seq_and_ts_of_its_command(exchange):
    exchange.sell(1, 2, 100, user="bob")
    exchange.buy(2, 1, 90, user="bob")

    events = exchange.buy(3, 5, 100, time_in_force=IOC)

    assert len(events) > 3
    assert {(e.seq, e.ts) for e in events} == {(3, 3000)}


def test_book_level_changed_reports_the_new_total_of_the_level(exchange):
    exchange.buy(1, 4, 100, user="bob")

    added = exchange.buy(2, 3, 100, user="carol")
    reduced = exchange.sell(3, 5, 100, user="dave")
    emptied = exchange.cancel(2, user="carol")

    assert only(added, BookLevelChanged)[0].quantity == 7
    assert only(reduced, BookLevelChanged)[0].quantity == 2
    assert only(emptied, BookLevelChanged)[0].quantity == 0


def test_one_book_level_event_per_price_even_when_several_orders_there_change(exchange):
    exchange.sell(1, 1, 100, user="bob")
    exchange.sell(2, 1, 100, user="carol")
    exchange.sell(3, 1, 100, user="dave")

    events = exchange.buy(4, 2, 100)

    assert [(e.price, e.quantity) for e in only(events, BookLevelChanged)] == [(100, 1)]


def test_top_of_book_is_not_reported_when_a_level_behind_the_best_changes(exchange):
    exchange.buy(1, 4, 100, user="bob")
    exchange.sell(2, 4, 110, user="bob")

    behind_bid = exchange.buy(3, 1, 99)
    behind_ask = exchange.sell(4, 1, 111)
    cancel_behind = exchange.cancel(3)

    for events in (behind_bid, behind_ask, cancel_behind):
        assert kinds(events)[-1] == "BookLevelChanged"
        assert only(events, TopOfBookChanged) == []


def test_top_of_book_is_reported_when_the_best_size_changes(exchange):
    exchange.buy(1, 4, 100, user="bob")

    events = exchange.buy(2, 1, 100)

    assert only(events, TopOfBookChanged) == [
        TopOfBookChanged(seq=2, ts=2000, symbol=BTC, bid_price=100, bid_quantity=5,
                         ask_price=None, ask_quantity=0)
    ]


def test_top_of_book_is_reported_when_a_better_price_arrives(exchange):
    exchange.sell(1, 4, 110, user="bob")

    events = exchange.sell(2, 1, 109)

    assert only(events, TopOfBookChanged)[0].ask_price == 109
    assert only(events, TopOfBookChanged)[0].ask_quantity == 1


def test_a_rejected_command_reports_nothing_but_its_rejection(exchange):
    exchange.sell(1, 4, 110, user="bob")

    events = exchange.buy(2, 4, 110, post_only=True)

    assert kinds(events) == ["OrderRejected"]


def test_cancelling_all_orders_in_two_markets_reports_each_markets_book(exchange):
    exchange.buy(1, 4, 100)
    exchange.buy(2, 10, 10_000, symbol="ETH/USDT")

    events = exchange.cancel_all("alice")

    assert kinds(events) == ["OrderCancelled", "OrderCancelled",
                             "BookLevelChanged", "TopOfBookChanged",
                             "BookLevelChanged", "TopOfBookChanged"]
    assert [e.symbol for e in events[2:]] == [BTC, BTC, "ETH/USDT", "ETH/USDT"]


def test_an_amend_that_crosses_reports_the_amendment_before_its_trades(exchange):
    exchange.sell(1, 2, 105, user="bob")
    exchange.buy(2, 5, 100)

    events = exchange.amend(2, price=105)

    assert kinds(events) == ["OrderAmended", "TradeExecuted", "OrderFilled", "OrderFilled",
                             "BookLevelChanged", "BookLevelChanged", "BookLevelChanged",
                             "TopOfBookChanged"]
    assert [(e.side, e.price, e.quantity) for e in only(events, BookLevelChanged)] == [
        (BUY, 100, 0), (SELL, 105, 0), (BUY, 105, 3)]
