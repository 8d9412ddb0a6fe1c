"""Every way a command is refused, and the promise that goes with it.

The promise (``engine/_engine.py``): bad input never raises out of the
engine and never changes state. A refused command yields exactly one
``OrderRejected`` and nothing else. The only exception ``Engine.apply``
raises is ``SequenceError``, for a non-increasing sequence number: the
caller's bug, not the client's.

"Nothing changed" is checked two ways:

* the exported state with ``last_seq`` blanked out is identical before and
  after (``state_hash()`` hashes the exported state, and ``last_seq`` advances
  on every applied command, rejected or not);
* the full ``state_hash()`` equals that of a twin engine that received the
  same history and, in place of the refused command, a no-op with the same
  seq (``CancelAllOrders`` for a user with no orders, which returns no
  events: see ``test_cancel_all_for_a_user_without_open_orders_does_nothing``).
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from engine_harness import BTC, BTC_SPEC, BUY, ETH, ETH_SPEC, FOK, GTC, IOC, MARKET, SELL, Exchange
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import (
    MAX_UNITS,
    AmendOrder,
    CancelAllOrders,
    CancelOrder,
    Engine,
    OrderAccepted,
    OrderAmended,
    OrderCancelled,
    OrderRejected,
    OrderType,
    PlaceOrder,
    RejectReason,
    SelfTradePrevention,
    SequenceError,
    Side,
    TimeInForce,
    UnitError,
)


def busy_exchange() -> Exchange:
    """A book with open, filled and cancelled orders in both markets.

    BTC/USDT (no minimums):
      1  alice  buy 10 @ 100, client id "a-1"; 4 lots filled by order 3  -> open, 6 left
      2  bob    sell 10 @ 105                                             -> open
      3  carol  sell 4 @ 100                                              -> filled
      4  bob    buy 3 @ 99, then cancelled                                -> cancelled
      5  alice  sell 10 @ 110, post-only                                  -> open
    ETH/USDT (at least 5 lots and 100_000 tick*lots):
      6  dave   buy 10 @ 10_000                                           -> open
    """
    exchange = Exchange(Engine([BTC_SPEC, ETH_SPEC]))
    exchange.buy(1, 10, 100, user="alice", client_order_id="a-1")
    exchange.sell(2, 10, 105, user="bob")
    exchange.sell(3, 4, 100, user="carol")
    exchange.buy(4, 3, 99, user="bob")
    exchange.cancel(4, user="bob")
    exchange.sell(5, 10, 110, user="alice", post_only=True)
    exchange.buy(6, 10, 10_000, user="dave", symbol=ETH)
    return exchange


def order(**fields: Any) -> PlaceOrder:
    """A valid new order (dave buys 5 @ 101 on BTC/USDT) with ``fields`` changed."""
    base: dict[str, Any] = {"order_id": 100, "user_id": "dave", "symbol": BTC, "side": BUY,
                            "quantity": 5, "price": 101}
    return PlaceOrder(**{**base, **fields})


def market(**fields: Any) -> PlaceOrder:
    return order(**{"order_type": MARKET, "price": None, **fields})


R = RejectReason
BIG = MAX_UNITS + 1

# (reason, command, the OrderRejected.command it reports), one pytest id each.
REJECTIONS = [
    # --- place ---
    (R.UNKNOWN_SYMBOL, order(symbol="DOGE/USDT"), "place"),
    (R.UNKNOWN_SYMBOL, order(symbol="btc/usdt"), "place"),
    (R.UNKNOWN_SYMBOL, order(symbol=5), "place"),
    (R.UNKNOWN_SYMBOL, order(symbol=None), "place"),
    (R.INVALID_USER_ID, order(user_id=""), "place"),
    (R.INVALID_USER_ID, order(user_id=7), "place"),
    (R.INVALID_USER_ID, order(user_id=None), "place"),
    (R.INVALID_ORDER_ID, order(order_id=0), "place"),
    (R.INVALID_ORDER_ID, order(order_id=-3), "place"),
    (R.INVALID_ORDER_ID, order(order_id=BIG), "place"),
    (R.INVALID_ORDER_ID, order(order_id="100"), "place"),
    (R.INVALID_ORDER_ID, order(order_id=100.0), "place"),
    (R.INVALID_ORDER_ID, order(order_id=True), "place"),
    (R.INVALID_ORDER_ID, order(order_id=None), "place"),
    (R.DUPLICATE_ORDER_ID, order(order_id=1), "place"),
    (R.DUPLICATE_ORDER_ID, order(order_id=3), "place"),
    (R.DUPLICATE_ORDER_ID, order(order_id=4), "place"),
    (R.INVALID_SIDE, order(side="buy"), "place"),
    (R.INVALID_SIDE, order(side="long"), "place"),
    (R.INVALID_SIDE, order(side=None), "place"),
    (R.INVALID_QUANTITY, order(quantity=0), "place"),
    (R.INVALID_QUANTITY, order(quantity=-1), "place"),
    (R.INVALID_QUANTITY, order(quantity=True), "place"),
    (R.INVALID_QUANTITY, order(quantity=5.0), "place"),
    (R.INVALID_QUANTITY, order(quantity="5"), "place"),
    (R.INVALID_QUANTITY, order(quantity=None), "place"),
    (R.INVALID_QUANTITY, order(quantity=BIG), "place"),
    (R.BELOW_MIN_QUANTITY, order(symbol=ETH, quantity=4, price=100_000), "place"),
    (R.BELOW_MIN_QUANTITY, market(symbol=ETH, quantity=4), "place"),
    (R.INVALID_PRICE, order(price=None), "place"),
    (R.INVALID_PRICE, order(price=0), "place"),
    (R.INVALID_PRICE, order(price=-1), "place"),
    (R.INVALID_PRICE, order(price=101.0), "place"),
    (R.INVALID_PRICE, order(price=float("nan")), "place"),
    (R.INVALID_PRICE, order(price="101"), "place"),
    (R.INVALID_PRICE, order(price=True), "place"),
    (R.INVALID_PRICE, order(price=BIG), "place"),
    (R.INVALID_PRICE, market(price=101), "place"),
    (R.INVALID_TIME_IN_FORCE, order(time_in_force="gtc"), "place"),
    (R.INVALID_TIME_IN_FORCE, order(time_in_force="day"), "place"),
    (R.INVALID_TIME_IN_FORCE, market(time_in_force=GTC), "place"),
    (R.BELOW_MIN_NOTIONAL, order(symbol=ETH, quantity=5, price=19_999), "place"),
    (R.INVALID_ORDER_TYPE, order(order_type="limit"), "place"),
    (R.INVALID_ORDER_TYPE, order(order_type="stop"), "place"),
    (R.INVALID_ORDER_TYPE, order(order_type=None), "place"),
    (R.INVALID_POST_ONLY, order(post_only=1), "place"),
    (R.INVALID_POST_ONLY, order(post_only="true"), "place"),
    (R.INVALID_POST_ONLY, order(post_only=None), "place"),
    (R.INVALID_POST_ONLY, order(post_only=True, time_in_force=IOC), "place"),
    (R.INVALID_POST_ONLY, order(post_only=True, time_in_force=FOK), "place"),
    (R.INVALID_POST_ONLY, market(post_only=True), "place"),
    (R.INVALID_SELF_TRADE_PREVENTION, order(self_trade_prevention="none"), "place"),
    (R.INVALID_SELF_TRADE_PREVENTION, order(self_trade_prevention="cancel_maker"), "place"),
    (R.INVALID_SELF_TRADE_PREVENTION, order(self_trade_prevention=None), "place"),
    (R.INVALID_CLIENT_ORDER_ID, order(client_order_id=""), "place"),
    (R.INVALID_CLIENT_ORDER_ID, order(client_order_id="x" * 65), "place"),
    (R.INVALID_CLIENT_ORDER_ID, order(client_order_id=12), "place"),
    (R.DUPLICATE_CLIENT_ORDER_ID, order(user_id="alice", client_order_id="a-1"), "place"),
    (R.POST_ONLY_WOULD_CROSS, order(price=105, post_only=True), "place"),
    (R.POST_ONLY_WOULD_CROSS, order(side=SELL, price=100, post_only=True), "place"),
    (R.FOK_NOT_FILLABLE, order(quantity=11, price=105, time_in_force=FOK), "place"),
    (R.FOK_NOT_FILLABLE, order(quantity=5, price=104, time_in_force=FOK), "place"),
    (R.FOK_NOT_FILLABLE, market(quantity=21, time_in_force=FOK), "place"),
    # --- cancel ---
    (R.UNKNOWN_ORDER, CancelOrder(order_id=999, user_id="alice"), "cancel"),
    (R.NOT_OWNER, CancelOrder(order_id=1, user_id="bob"), "cancel"),
    (R.NOT_OWNER, CancelOrder(order_id=3, user_id="alice"), "cancel"),
    (R.ORDER_NOT_OPEN, CancelOrder(order_id=3, user_id="carol"), "cancel"),
    (R.ORDER_NOT_OPEN, CancelOrder(order_id=4, user_id="bob"), "cancel"),
    (R.INVALID_ORDER_ID, CancelOrder(order_id="1", user_id="alice"), "cancel"),
    (R.INVALID_ORDER_ID, CancelOrder(order_id=1.0, user_id="alice"), "cancel"),
    (R.INVALID_ORDER_ID, CancelOrder(order_id=None, user_id="alice"), "cancel"),
    # --- cancel all ---
    (R.UNKNOWN_SYMBOL, CancelAllOrders(user_id="alice", symbol="DOGE/USDT"), "cancel_all"),
    (R.UNKNOWN_SYMBOL, CancelAllOrders(user_id="alice", symbol=5), "cancel_all"),
    # --- amend ---
    (R.NOTHING_TO_AMEND, AmendOrder(order_id=1, user_id="alice"), "amend"),
    (R.INVALID_PRICE, AmendOrder(order_id=1, user_id="alice", price=0), "amend"),
    (R.INVALID_PRICE, AmendOrder(order_id=1, user_id="alice", price=-1), "amend"),
    (R.INVALID_PRICE, AmendOrder(order_id=1, user_id="alice", price=100.5), "amend"),
    (R.INVALID_PRICE, AmendOrder(order_id=1, user_id="alice", price="100"), "amend"),
    (R.INVALID_PRICE, AmendOrder(order_id=1, user_id="alice", price=True), "amend"),
    (R.INVALID_PRICE, AmendOrder(order_id=1, user_id="alice", price=BIG), "amend"),
    (R.INVALID_QUANTITY, AmendOrder(order_id=1, user_id="alice", quantity=4), "amend"),
    (R.INVALID_QUANTITY, AmendOrder(order_id=1, user_id="alice", quantity=0), "amend"),
    (R.INVALID_QUANTITY, AmendOrder(order_id=1, user_id="alice", quantity=True), "amend"),
    (R.INVALID_QUANTITY, AmendOrder(order_id=1, user_id="alice", quantity=7.0), "amend"),
    (R.INVALID_QUANTITY, AmendOrder(order_id=1, user_id="alice", quantity=BIG), "amend"),
    (R.BELOW_MIN_QUANTITY, AmendOrder(order_id=6, user_id="dave", quantity=4), "amend"),
    (R.BELOW_MIN_NOTIONAL, AmendOrder(order_id=6, user_id="dave", price=9_999), "amend"),
    (R.POST_ONLY_WOULD_CROSS, AmendOrder(order_id=5, user_id="alice", price=100), "amend"),
    (R.UNKNOWN_ORDER, AmendOrder(order_id=999, user_id="alice", price=100), "amend"),
    (R.NOT_OWNER, AmendOrder(order_id=1, user_id="bob", quantity=8), "amend"),
    (R.ORDER_NOT_OPEN, AmendOrder(order_id=4, user_id="bob", quantity=8), "amend"),
    (R.INVALID_ORDER_ID, AmendOrder(order_id="1", user_id="alice", quantity=8), "amend"),
    # --- not a command at all ---
    (R.UNKNOWN_COMMAND, None, "unknown"),
    (R.UNKNOWN_COMMAND, "cancel everything", "unknown"),
    (R.UNKNOWN_COMMAND, {"order_id": 1, "user_id": "alice"}, "unknown"),
    (R.UNKNOWN_COMMAND, OrderAccepted(
        seq=1, ts=1, symbol=BTC, order_id=100, user_id="dave", client_order_id=None,
        side=BUY, order_type=OrderType.LIMIT, time_in_force=GTC, post_only=False,
        self_trade_prevention=SelfTradePrevention.NONE, price=101, quantity=5), "unknown"),
]

BOUNDARY_ONLY = {R.PRICE_OFF_TICK, R.QUANTITY_OFF_LOT}
"""Reasons the engine cannot meet (it takes integer ticks and lots); ``MarketSpec`` raises them."""


def case_id(case: tuple[RejectReason, object, str]) -> str:
    """``REASON-Command-field=value`` naming what makes this command wrong."""
    reason, command, _ = case
    if not isinstance(command, PlaceOrder | CancelOrder | AmendOrder | CancelAllOrders):
        return f"{reason.name}-{type(command).__name__}"
    reference = order() if type(command) is PlaceOrder else None
    shown = [
        f"{name}={getattr(command, name)!r}"[:20]
        for name in command.__struct_fields__
        if type(getattr(command, name)) is not type(getattr(reference, name, None))
        or getattr(command, name) != getattr(reference, name, None)
    ]
    return f"{reason.name}-{type(command).__name__}-{','.join(shown)}"


@pytest.mark.parametrize(
    ("reason", "command", "command_name"),
    [pytest.param(*case, id=case_id(case)) for case in REJECTIONS],
)
def test_refused_command_yields_one_rejection_and_changes_nothing(reason, command, command_name):
    exchange = busy_exchange()
    twin = busy_exchange()
    before = exchange.snapshot()

    events = exchange.apply(command)
    assert twin.apply(CancelAllOrders(user_id="nobody")) == []

    [rejected] = events
    assert type(rejected) is OrderRejected
    assert rejected.reason is reason
    assert (rejected.seq, rejected.ts) == (exchange.seq, exchange.ts)
    assert rejected.command == command_name
    assert exchange.snapshot() == before
    assert exchange.engine.state_hash() == twin.engine.state_hash()
    assert exchange.engine.last_seq == exchange.seq


def test_the_table_above_covers_every_reject_reason():
    reached = {reason for reason, _, _ in REJECTIONS}

    assert reached | BOUNDARY_ONLY == set(RejectReason)
    assert not reached & BOUNDARY_ONLY


@pytest.mark.parametrize(
    ("reason", "parse", "text"),
    [(R.PRICE_OFF_TICK, BTC_SPEC.parse_price, "1.001"),
     (R.QUANTITY_OFF_LOT, BTC_SPEC.parse_quantity, "0.0015")],
)
def test_off_tick_and_off_lot_are_refused_at_the_boundary(reason, parse, text):
    with pytest.raises(UnitError) as raised:
        parse(text)

    assert raised.value.reason is reason


def test_a_rejection_echoes_the_identifiers_it_could_read():
    exchange = busy_exchange()

    [rejected] = exchange.apply(order(quantity=0, client_order_id="mine"))
    [garbled] = exchange.apply(order(order_id="x", user_id=3, symbol=[BTC], client_order_id=9,
                                     quantity=0))

    assert (rejected.symbol, rejected.order_id, rejected.user_id, rejected.client_order_id) == (
        BTC, 100, "dave", "mine")
    assert (garbled.symbol, garbled.order_id, garbled.user_id, garbled.client_order_id) == (
        None, None, "", None)


@pytest.mark.parametrize(
    "command",
    [order(order_id=2**64), CancelOrder(order_id=2**64, user_id="alice"),
     AmendOrder(order_id=2**64, user_id="alice", quantity=5)],
    ids=["place", "cancel", "amend"],
)
def test_a_rejection_only_echoes_an_order_id_that_fits_the_wire_format(command):
    # MAX_UNITS: "amounts are signed 64-bit in every encoding". A rejection that
    # echoes an out-of-range id verbatim cannot be encoded for the client.
    exchange = busy_exchange()

    [rejected] = exchange.apply(command)

    assert rejected.order_id is None or 0 < rejected.order_id <= MAX_UNITS
    msgspec.msgpack.encode(rejected)


def test_a_rejected_order_id_stays_free_for_a_later_valid_order():
    exchange = busy_exchange()
    exchange.apply(order(quantity=0))

    events = exchange.apply(order())

    assert type(events[0]) is OrderAccepted


def test_a_client_order_id_is_free_again_once_its_order_is_closed():
    exchange = busy_exchange()
    exchange.cancel(1, user="alice")

    events = exchange.apply(order(user_id="alice", client_order_id="a-1"))

    assert type(events[0]) is OrderAccepted


def test_the_same_client_order_id_may_be_used_by_different_users():
    exchange = busy_exchange()

    events = exchange.apply(order(user_id="bob", client_order_id="a-1"))

    assert type(events[0]) is OrderAccepted


def test_client_order_id_of_exactly_64_characters_is_accepted():
    exchange = busy_exchange()

    events = exchange.apply(order(client_order_id="x" * 64))

    assert type(events[0]) is OrderAccepted


def test_quantity_and_notional_exactly_at_the_minimums_are_accepted():
    exchange = busy_exchange()

    events = exchange.apply(order(symbol=ETH, quantity=5, price=20_000))

    assert type(events[0]) is OrderAccepted


# --- sequence numbers ----------------------------------------------------------------


@pytest.mark.parametrize("seq", [0, -1, 7, 6, True, 8.0, "8", None])
def test_a_non_increasing_or_non_integer_seq_raises_sequence_error_and_changes_nothing(seq):
    exchange = busy_exchange()
    assert exchange.engine.last_seq == 7
    before = exchange.engine.state_hash()

    with pytest.raises(SequenceError):
        exchange.engine.apply(order(), seq=seq, ts=0)

    assert exchange.engine.state_hash() == before
    assert exchange.engine.last_seq == 7


def test_sequence_error_is_raised_even_for_a_command_that_would_be_rejected():
    exchange = busy_exchange()

    with pytest.raises(SequenceError):
        exchange.engine.apply(None, seq=7, ts=0)  # type: ignore[arg-type]


def test_seq_may_skip_numbers():
    engine = Engine([BTC_SPEC])
    engine.apply(order(), seq=10, ts=0)

    events = engine.apply(order(order_id=101), seq=25, ts=0)

    assert type(events[0]) is OrderAccepted
    assert engine.last_seq == 25


def test_a_rejected_command_still_consumes_its_seq():
    engine = Engine([BTC_SPEC])
    engine.apply(order(quantity=0), seq=1, ts=0)

    with pytest.raises(SequenceError):
        engine.apply(order(), seq=1, ts=0)


# --- fuzz: anything at all goes in, never an exception, never a half-change ----------

ANYTHING = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-2, max_value=12),
    st.sampled_from([100, 101, 105, 110, 10_000, MAX_UNITS, BIG, -BIG, 2**70]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4),
    st.sampled_from(["buy", "sell", "limit", "market", "gtc", "ioc", "fok", "none", BTC, ETH,
                     "alice", "bob", "a-1", "x" * 65]),
    st.sampled_from([*Side, *OrderType, *TimeInForce, *SelfTradePrevention]),
    st.lists(st.integers(), max_size=2),
    st.just(float("nan")),
)


def _accepting_events(events: list[object]) -> bool:
    return bool(events) and type(events[0]) in (OrderAccepted, OrderAmended, OrderCancelled)


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from([PlaceOrder, CancelOrder, AmendOrder, CancelAllOrders]),
    data=st.data(),
)
def test_any_field_values_are_either_applied_or_rejected_without_side_effects(kind, data):
    exchange = busy_exchange()
    fields = {name: data.draw(ANYTHING, label=name) for name in kind.__struct_fields__}
    command = kind(**fields)
    before = exchange.snapshot()

    events = exchange.apply(command)

    if events and type(events[0]) is OrderRejected:
        assert len(events) == 1
        assert exchange.snapshot() == before
    elif events:
        assert _accepting_events(events)
    else:
        assert kind is CancelAllOrders
        assert exchange.snapshot() == before
