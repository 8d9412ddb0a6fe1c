"""Fees and units: exact integers, never floats.

* A price is a whole number of ticks, a quantity a whole number of lots, a fee
  a whole number of ``10 ** -fee_precision`` quote units.
* ``fee = notional * rate``, rounded up (towards +infinity) to the fee
  precision: in the exchange's favour, so a rebate (negative rate) rounds
  towards zero.
* ``MarketSpec.parse_*`` convert decimal strings exactly or raise
  ``UnitError`` with a stable reason; ``format_*`` print exactly.
"""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

import attrs
import pytest
from engine_harness import BTC_SPEC, BUY, ETH, ETH_SPEC, SELL, Exchange, only
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import (
    MAX_UNITS,
    Engine,
    Liquidity,
    MarketSpec,
    OrderFilled,
    RejectReason,
    TradeExecuted,
    UnitError,
)


def spec(**fields: object) -> MarketSpec:
    base: dict[str, object] = {
        "symbol": "T/Q", "base": "T", "quote": "Q", "tick_size": "0.01", "lot_size": "0.001",
        "min_quantity": "0", "min_notional": "0", "maker_fee_rate": "0.001",
        "taker_fee_rate": "0.002", "fee_precision": 8,
    }
    return MarketSpec(**{**base, **fields})  # type: ignore[arg-type]


def exact_fee(market: MarketSpec, ticks: int, lots: int, rate: Decimal) -> int:
    """The fee rule written out with fractions: ceil(price * quantity * rate * 10**precision)."""
    amount = (Fraction(ticks) * Fraction(market.tick_size) * lots * Fraction(market.lot_size)
              * Fraction(rate) * 10 ** market.fee_precision)
    return math.ceil(amount)


def trade_once(market: MarketSpec, ticks: int, lots: int, taker_side=BUY) -> TradeExecuted:
    """Rest a maker at ``ticks`` and take it with an order on ``taker_side``; return the trade."""
    exchange = Exchange(Engine([market]))
    maker_side = SELL if taker_side is BUY else BUY
    exchange.place(1, maker_side, lots, ticks, user="maker", symbol=market.symbol)
    events = exchange.place(2, taker_side, lots, ticks, user="taker", symbol=market.symbol)
    [trade] = only(events, TradeExecuted)
    return trade


# --- fees ----------------------------------------------------------------------------


def test_fee_is_notional_times_rate_in_fee_units():
    # 123.45 USDT * 0.007 BTC = 0.86415 USDT; 0.1 % = 0.00086415, 0.2 % = 0.0017283.
    trade = trade_once(BTC_SPEC, 12_345, 7)

    assert (trade.maker_fee, trade.taker_fee) == (86_415, 172_830)
    assert BTC_SPEC.format_fee(trade.maker_fee) == "0.00086415"
    assert BTC_SPEC.format_fee(trade.taker_fee) == "0.00172830"


def test_fee_rounds_up_to_the_fee_precision():
    cents = spec(fee_precision=2, maker_fee_rate="0.001", taker_fee_rate="0.0025")

    tiny = trade_once(cents, 101, 1)  # notional 0.00101: both fees are a fraction of a cent
    exact = trade_once(cents, 100, 10_000)  # notional 10.00: 0.01 exactly and 0.025

    assert (tiny.maker_fee, tiny.taker_fee) == (1, 1)
    assert (exact.maker_fee, exact.taker_fee) == (1, 3)


def test_a_rebate_is_a_negative_fee_rounded_towards_zero():
    # ETH/USDT: maker -0.01 %, taker 0.05 %, 6 decimals. 100.01 * 0.70 = 70.007 USDT.
    # Maker: -0.0070007 -> -0.007000 (not -0.007001). Taker: 0.0350035 -> 0.035004.
    trade = trade_once(ETH_SPEC, 10_001, 70)

    assert (trade.maker_fee, trade.taker_fee) == (-7_000, 35_004)
    assert ETH_SPEC.format_fee(trade.maker_fee) == "-0.007000"


def test_zero_rates_charge_nothing():
    trade = trade_once(spec(maker_fee_rate="0", taker_fee_rate="0"), 999, 999)

    assert (trade.maker_fee, trade.taker_fee) == (0, 0)


def test_maker_and_taker_pay_their_own_rate_whichever_side_takes():
    bought = trade_once(BTC_SPEC, 5_000, 3, taker_side=BUY)
    sold = trade_once(BTC_SPEC, 5_000, 3, taker_side=SELL)

    assert bought.taker_side is BUY
    assert sold.taker_side is SELL
    assert (bought.maker_fee, bought.taker_fee) == (sold.maker_fee, sold.taker_fee) == (
        15_000, 30_000)


@pytest.mark.parametrize("taker_side", [BUY, SELL])
def test_each_fill_carries_its_owners_fee_and_side(taker_side):
    exchange = Exchange(Engine([BTC_SPEC]))
    maker_side = SELL if taker_side is BUY else BUY
    exchange.place(1, maker_side, 4, 2_500, user="maker")

    events = exchange.place(2, taker_side, 4, 2_500, user="taker")

    [trade] = only(events, TradeExecuted)
    maker_fill, taker_fill = only(events, OrderFilled)
    if trade.taker_side is BUY:
        buyer, seller = taker_fill, maker_fill
    else:
        buyer, seller = maker_fill, taker_fill
    assert (buyer.side, seller.side) == (BUY, SELL)
    assert (maker_fill.liquidity, maker_fill.fee, maker_fill.user_id) == (
        Liquidity.MAKER, trade.maker_fee, "maker")
    assert (taker_fill.liquidity, taker_fill.fee, taker_fill.user_id) == (
        Liquidity.TAKER, trade.taker_fee, "taker")
    assert maker_fill.fee != taker_fill.fee


def test_each_trade_is_charged_separately_and_rounded_on_its_own():
    cents = spec(fee_precision=2, maker_fee_rate="0.001", taker_fee_rate="0.001")
    exchange = Exchange(Engine([cents]))
    exchange.sell(1, 1, 101, user="m1", symbol="T/Q")
    exchange.sell(2, 1, 101, user="m2", symbol="T/Q")

    events = exchange.buy(3, 2, 101, user="t", symbol="T/Q")

    assert [t.taker_fee for t in only(events, TradeExecuted)] == [1, 1]


ODD_SPECS = [
    BTC_SPEC,
    attrs.evolve(ETH_SPEC, min_quantity="0", min_notional="0"),
    spec(tick_size="0.5", lot_size="10", maker_fee_rate="0.00037", taker_fee_rate="-0.00011",
         fee_precision=3),
    spec(tick_size="0.0001", lot_size="0.000001", maker_fee_rate="0.0123",
         taker_fee_rate="0.999", fee_precision=18),
    spec(tick_size="25", lot_size="1", maker_fee_rate="-0.999", taker_fee_rate="0.5",
         fee_precision=0),
]


@settings(max_examples=200, deadline=None)
@given(
    market=st.sampled_from(ODD_SPECS),
    ticks=st.integers(min_value=1, max_value=10**12),
    lots=st.integers(min_value=1, max_value=10**9),
    taker_side=st.sampled_from([BUY, SELL]),
)
def test_traded_fees_equal_the_exact_rule(market, ticks, lots, taker_side):
    trade = trade_once(market, ticks, lots, taker_side)

    assert trade.maker_fee == exact_fee(market, ticks, lots, market.maker_fee_rate)
    assert trade.taker_fee == exact_fee(market, ticks, lots, market.taker_fee_rate)
    assert trade.maker_fee == market.fee(ticks, lots, market.maker_fee_rate)


# --- parsing decimal strings ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ticks"),
    [("1", 100), ("0.01", 1), ("50000.01", 5_000_001), ("1.10", 110), ("1.000000", 100),
     ("007.5", 750), ("92233720368547758.07", MAX_UNITS)],
)
def test_parse_price_gives_whole_ticks(text, ticks):
    assert BTC_SPEC.parse_price(text) == ticks


@pytest.mark.parametrize(
    ("text", "lots"), [("0.001", 1), ("1.5", 1_500), ("2", 2_000), ("0.0010", 1)])
def test_parse_quantity_gives_whole_lots(text, lots):
    assert BTC_SPEC.parse_quantity(text) == lots


NOT_A_DECIMAL = ["", "abc", "-1", "+1", "1e5", "1E5", " 1", "1 ", "1.", ".5", "NaN", "nan",
                 "Infinity", "inf", "1_000", "1,5", "0x10", "\u0661", "1" * 31, "0." + "1" * 31]


@pytest.mark.parametrize("text", [*NOT_A_DECIMAL, "0", "0.00", "00.000"])
def test_a_price_that_is_not_a_positive_decimal_string_is_invalid(text):
    with pytest.raises(UnitError) as raised:
        BTC_SPEC.parse_price(text)

    assert raised.value.reason is RejectReason.INVALID_PRICE


@pytest.mark.parametrize("text", [*NOT_A_DECIMAL, "0", "0.000"])
def test_a_quantity_that_is_not_a_positive_decimal_string_is_invalid(text):
    with pytest.raises(UnitError) as raised:
        BTC_SPEC.parse_quantity(text)

    assert raised.value.reason is RejectReason.INVALID_QUANTITY


@pytest.mark.parametrize("value", [1.5, 100, None, Decimal("1.5"), b"1.5"])
def test_parse_accepts_only_strings(value):
    with pytest.raises(UnitError) as raised:
        BTC_SPEC.parse_price(value)  # type: ignore[arg-type]

    assert raised.value.reason is RejectReason.INVALID_PRICE


@pytest.mark.parametrize("text", ["1.001", "0.005", "50000.015", "0.000000000000000000000000001"])
def test_a_price_between_ticks_is_off_tick_never_rounded(text):
    with pytest.raises(UnitError) as raised:
        BTC_SPEC.parse_price(text)

    assert raised.value.reason is RejectReason.PRICE_OFF_TICK


@pytest.mark.parametrize("text", ["0.0005", "1.0001"])
def test_a_quantity_between_lots_is_off_lot(text):
    with pytest.raises(UnitError) as raised:
        BTC_SPEC.parse_quantity(text)

    assert raised.value.reason is RejectReason.QUANTITY_OFF_LOT


@pytest.mark.parametrize(
    "text",
    ["92233720368547758.08", "100000000000000000000", "9" * 25, "9" * 26 + ".99", "1" * 30,
     "9" * 30 + "." + "9" * 30],
)
def test_a_price_beyond_max_units_ticks_is_invalid(text):
    with pytest.raises(UnitError) as raised:
        BTC_SPEC.parse_price(text)

    assert raised.value.reason is RejectReason.INVALID_PRICE


def test_a_quantity_beyond_max_units_lots_is_invalid():
    with pytest.raises(UnitError) as raised:
        BTC_SPEC.parse_quantity("1" * 30)

    assert raised.value.reason is RejectReason.INVALID_QUANTITY


def test_unit_error_is_a_value_error():
    assert issubclass(UnitError, ValueError)


# --- formatting ----------------------------------------------------------------------


def test_format_prints_exact_decimals_with_the_markets_places():
    assert BTC_SPEC.format_price(5_000_001) == "50000.01"
    assert BTC_SPEC.format_price(100) == "1.00"
    assert BTC_SPEC.format_quantity(1_500) == "1.500"
    assert BTC_SPEC.format_fee(123) == "0.00000123"
    assert BTC_SPEC.format_fee(0) == "0.00000000"
    assert BTC_SPEC.format_notional(12_345, 7) == "0.86415"
    assert ETH_SPEC.format_fee(-700) == "-0.000700"


def test_format_handles_steps_coarser_than_one():
    coarse = spec(tick_size="25", lot_size="10")

    assert coarse.format_price(3) == "75"
    assert coarse.format_quantity(3) == "30"


@settings(max_examples=200, deadline=None)
@given(market=st.sampled_from(ODD_SPECS), units=st.integers(min_value=1, max_value=MAX_UNITS))
def test_format_then_parse_round_trips(market, units):
    assert market.parse_price(market.format_price(units)) == units
    assert market.parse_quantity(market.format_quantity(units)) == units


@settings(max_examples=100, deadline=None)
@given(units=st.integers(min_value=-(10**20), max_value=10**20))
def test_format_fee_is_exact(units):
    assert Decimal(BTC_SPEC.format_fee(units)) == Decimal(units).scaleb(-8)


# --- market rules as integers --------------------------------------------------------


def test_minimums_in_integer_units():
    assert ETH_SPEC.min_lots == 5
    assert ETH_SPEC.min_notional_units == 100_000
    assert BTC_SPEC.min_lots == 1, "at least one lot even with no minimum"
    assert spec(min_quantity="0.0015").min_lots == 2, "a minimum between lots rounds up"


@pytest.mark.parametrize(
    ("bad", "message"),
    [({"tick_size": "0"}, "tick_size"), ({"tick_size": "-0.01"}, "tick_size"),
     ({"lot_size": "NaN"}, "lot_size"), ({"lot_size": "Infinity"}, "lot_size"),
     ({"min_quantity": "-1"}, "min_quantity"), ({"min_notional": "-0.01"}, "min_notional"),
     ({"maker_fee_rate": "1"}, "maker_fee_rate"), ({"taker_fee_rate": "-1"}, "taker_fee_rate"),
     ({"maker_fee_rate": "NaN"}, "maker_fee_rate"), ({"fee_precision": 19}, "fee_precision"),
     ({"fee_precision": -1}, "fee_precision")],
)
def test_a_market_spec_with_impossible_rules_is_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        spec(**bad)


def test_market_orders_ignore_min_notional_but_not_min_quantity():
    exchange = Exchange(Engine([ETH_SPEC]))
    exchange.sell(1, 10, 20_000, user="bob", symbol=ETH)

    events = exchange.buy(2, 5, symbol=ETH)

    assert sum(t.quantity for t in only(events, TradeExecuted)) == 5
