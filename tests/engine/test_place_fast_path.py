"""The engine's written-out check of a place against the rules it copies.

``Engine.apply`` lets the common orders through a stricter copy of
``engine._validate.place_rejection`` (the call costs more than the engine may
lose, see bench/README.md, "Engine") and asks ``place_rejection`` about every
other order. These tests build places from the edge values of every field,
against books with resting orders and client order ids, and check that the
engine's verdict is always ``place_rejection``'s: the same reason, or the order
accepted exactly when it finds none. They reach into the engine for its
markets and its order index, which ``place_rejection`` takes.
"""

from __future__ import annotations

from typing import Any

import pytest
from engine_harness import BTC, BTC_SPEC, ETH, ETH_SPEC, STP
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import (
    MAX_UNITS,
    Engine,
    OrderAccepted,
    OrderRejected,
    OrderType,
    PlaceOrder,
    SelfTradePrevention,
    Side,
    TimeInForce,
)
from engine._validate import place_rejection

COMPACT = (1 << 30) - 1  # the fast path's bound on ids, prices and quantities

RESTING = [  # (order_id, user, symbol, side, price, quantity, client order id)
    (1, "ann", BTC, Side.BUY, 100, 5, "c1"),
    (2, "ben", BTC, Side.SELL, 110, 5, None),
    (3, "ann", BTC, Side.SELL, 112, 3, "c3"),
    (4, "ben", ETH, Side.BUY, 20_000, 5, "c1"),
]

EDGE = {  # values that some rule refuses, alone or with the other fields
    "order_id": [0, 1, 4, MAX_UNITS + 1, -1, True, "5", None],
    "user_id": ["", 7, None],
    "symbol": [ETH, "XYZ/USDT", 5, None],
    "side": ["buy", None],
    "quantity": [0, 3, MAX_UNITS, MAX_UNITS + 1, -3, True, 2.0, "5"],
    "price": [None, 0, 99, MAX_UNITS, MAX_UNITS + 1, True, "100"],
    "order_type": ["limit", None],
    "time_in_force": [TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK, "gtc"],
    "post_only": [True, 0, 1, None],
    "self_trade_prevention": ["none", None],
    "client_order_id": ["", "c1", "c3", "x" * 65, 5],
}


@st.composite
def places(draw: st.DrawFn) -> PlaceOrder:
    """A valid place (most of the time), with up to two fields set to an edge value."""

    def pick(*values: Any) -> Any:
        return draw(st.sampled_from(values))

    symbol = pick(BTC, BTC, ETH)
    market = pick(False, False, False, True)
    small = symbol == BTC
    fields = {
        "order_id": pick(5, 6, COMPACT, COMPACT + 1, MAX_UNITS),
        "user_id": pick("ann", "ben", "cat"),
        "symbol": symbol,
        "side": pick(Side.BUY, Side.SELL),
        "quantity": pick(1, 4, 6, COMPACT + 1) if small else pick(5, 6, COMPACT + 1),
        "price": None if market else (pick(100, 105, 110, 111, COMPACT + 1) if small
                                      else pick(20_000, 20_001, COMPACT + 1)),
        "order_type": OrderType.MARKET if market else OrderType.LIMIT,
        "time_in_force": pick(None, TimeInForce.IOC, TimeInForce.FOK) if market
                         else pick(None, TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK),
        "post_only": False,
        "self_trade_prevention": pick(*STP, SelfTradePrevention.NONE),
        "client_order_id": pick(None, None, "new", "c3", "x" * 64),
    }
    for name in draw(st.sets(st.sampled_from(sorted(EDGE)), max_size=2)):
        fields[name] = draw(st.sampled_from(EDGE[name]))
    return PlaceOrder(**fields)


def engine_with_resting_orders() -> Engine:
    engine = Engine([BTC_SPEC, ETH_SPEC])
    for seq, (oid, user, symbol, side, price, quantity, cid) in enumerate(RESTING, start=1):
        events = engine.apply(
            PlaceOrder(order_id=oid, user_id=user, symbol=symbol, side=side, price=price,
                       quantity=quantity, client_order_id=cid),
            seq=seq, ts=seq,
        )
        assert type(events[0]) is OrderAccepted
    return engine


def verdict_of_the_rules(engine: Engine, command: PlaceOrder) -> Any:
    symbol = command.symbol
    market = engine._markets.get(symbol) if type(symbol) is str else None
    return place_rejection(command, market, engine._index)


@settings(max_examples=500, deadline=None)
@given(places())
def test_the_engine_refuses_a_place_exactly_as_place_rejection_says(command):
    engine = engine_with_resting_orders()
    expected = verdict_of_the_rules(engine, command)

    events = engine.apply(command, seq=100, ts=100)

    if expected is None:
        assert type(events[0]) is OrderAccepted
    else:
        assert len(events) == 1
        assert type(events[0]) is OrderRejected
        assert events[0].reason is expected


BASES = {  # valid places of each shape the fast path lets through, and one it does not
    "btc limit rests": dict(symbol=BTC, side=Side.BUY, price=105, quantity=4),
    "btc limit takes": dict(symbol=BTC, side=Side.BUY, price=110, quantity=4,
                            time_in_force=TimeInForce.IOC),
    "btc market": dict(symbol=BTC, side=Side.SELL, quantity=2, order_type=OrderType.MARKET),
    "eth limit rests": dict(symbol=ETH, side=Side.SELL, price=20_001, quantity=5),
    "eth market": dict(symbol=ETH, side=Side.SELL, quantity=5, order_type=OrderType.MARKET),
    "btc fok": dict(symbol=BTC, side=Side.BUY, price=110, quantity=4,
                    time_in_force=TimeInForce.FOK),
}
ONE_EDGE = [(base, name, value) for base in BASES for name, values in EDGE.items()
            for value in values]


@pytest.mark.parametrize(("base", "field", "value"), ONE_EDGE,
                         ids=[f"{b}-{f}={v!r}"[:60] for b, f, v in ONE_EDGE])
def test_each_edge_value_alone_gets_place_rejections_verdict(base, field, value):
    engine = engine_with_resting_orders()
    fields: dict[str, Any] = {"order_id": 9, "user_id": "ann", **BASES[base], field: value}
    command = PlaceOrder(**fields)
    expected = verdict_of_the_rules(engine, command)

    events = engine.apply(command, seq=100, ts=100)

    assert [type(e) for e in events][:1] == [OrderAccepted if expected is None else OrderRejected]
    if expected is not None:
        assert events == [events[0]]
        assert events[0].reason is expected


def test_orders_past_the_fast_paths_bounds_are_accepted_by_the_rules():
    """Ids, prices and quantities of 2**30 and more take the slow path and are valid."""
    engine = Engine([BTC_SPEC])
    command = PlaceOrder(order_id=MAX_UNITS, user_id="ann", symbol=BTC, side=Side.BUY,
                         price=COMPACT + 1, quantity=MAX_UNITS // (COMPACT + 1))

    events = engine.apply(command, seq=1, ts=1)

    assert type(events[0]) is OrderAccepted
    assert events[0].order_id == MAX_UNITS
