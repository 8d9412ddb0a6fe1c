"""The order-entry schema, without a network: one set of rules for REST and WebSocket.

Each body either becomes an engine command or raises a RequestError whose code
and field are what both transports answer; the message names the fix.
"""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import DEFAULT_MARKETS, OrderType, PlaceOrder, RejectReason, Side, TimeInForce
from gateway._schema import (
    PlaceBody,
    RequestError,
    convert_body,
    decode_body,
    market,
    place_command,
    rejection,
)

MARKETS = {spec.symbol: spec for spec in DEFAULT_MARKETS}
ORDER = {"symbol": "BTC/USDT", "side": "buy", "price": "50000.00", "quantity": "0.01"}


def refused(body: object) -> RequestError:
    with pytest.raises(RequestError) as error:
        place_command(convert_body(body, PlaceBody), "alice", MARKETS)
    return error.value


def test_a_valid_body_becomes_a_place_command_in_ticks_and_lots():
    command = place_command(convert_body(
        {**ORDER, "side": "SELL", "time_in_force": "IOC", "client_order_id": "c"}, PlaceBody),
        "alice", MARKETS)
    assert command == PlaceOrder(
        order_id=0, user_id="alice", symbol="BTC/USDT", side=Side.SELL, quantity=1000,
        price=5_000_000, order_type=OrderType.LIMIT, time_in_force=TimeInForce.IOC,
        client_order_id="c")


def test_decoding_bytes_and_converting_objects_agree():
    raw = msgspec.json.encode(ORDER)
    assert decode_body(raw, PlaceBody) == convert_body(ORDER, PlaceBody)


@pytest.mark.parametrize(("body", "code", "field"), [
    ({**ORDER, "leverage": 5}, "unknown_field", "leverage"),
    ({k: v for k, v in ORDER.items() if k != "quantity"}, "missing_field", "quantity"),
    ({**ORDER, "quantity": 0.01}, "invalid_quantity", "quantity"),
    ({**ORDER, "post_only": "yes"}, "invalid_post_only", "post_only"),
    ({**ORDER, "symbol": 42}, "unknown_symbol", "symbol"),
    ({**ORDER, "type": "stop"}, "invalid_type", "type"),
    ({**ORDER, "type": "market"}, "invalid_price", "price"),
    ([ORDER], "invalid_json", None),
])
def test_each_broken_rule_has_its_code_and_field(body, code, field):
    error = refused(body)
    assert (error.status, error.code, error.field) == (400, code, field)


def test_an_unknown_symbol_lists_the_markets_and_the_spellings():
    message = refused({**ORDER, "symbol": "BTCUSDT"}).message
    assert all(name in message for name in ("BTC/USDT", "ETH/USDT", "BTC-USDT"))
    with pytest.raises(RequestError) as in_path:
        market(MARKETS, "DOGE-USDT", field=None)
    assert (in_path.value.status, in_path.value.field) == (404, None)


def test_a_negative_price_says_it_must_be_positive():
    assert "must be positive" in refused({**ORDER, "price": "-1"}).message


def test_below_min_notional_names_the_minimum_and_the_notional():
    command = place_command(convert_body({**ORDER, "price": "100.00"}, PlaceBody), "alice",
                            MARKETS)
    error = rejection(RejectReason.BELOW_MIN_NOTIONAL, command, MARKETS["BTC/USDT"])
    assert (error.code, error.field) == ("below_min_notional", "quantity")
    assert "1.0000000 USDT" in error.message
    assert "minimum of 5 USDT" in error.message


def test_another_users_order_is_not_found_never_forbidden():
    error = rejection(RejectReason.NOT_OWNER, PlaceOrder(
        order_id=1, user_id="bob", symbol="BTC/USDT", side=Side.BUY, quantity=1), None)
    assert (error.status, error.code) == (404, "order_not_found")


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=8,
)
FIELDS = st.fixed_dictionaries({}, optional={
    "symbol": st.sampled_from(["BTC/USDT", "btc-usdt", "BTCUSDT", ""]) | JSON,
    "side": st.sampled_from(["buy", "SELL", "long"]) | JSON,
    "price": st.sampled_from(["50000.00", "1.001", "-1", "0"]) | JSON,
    "quantity": st.sampled_from(["0.01", "0.000001", "1e5"]) | JSON,
    "type": st.sampled_from(["limit", "market", "stop"]) | JSON,
    "post_only": st.booleans() | JSON,
})


@given(FIELDS | JSON)
def test_every_body_becomes_a_command_or_a_request_error(body):
    outcome: PlaceOrder | RequestError
    try:
        outcome = place_command(convert_body(body, PlaceBody), "alice", MARKETS)
    except RequestError as error:
        outcome = error
    if isinstance(outcome, RequestError):
        assert outcome.code
        assert outcome.message
        assert outcome.status == 400  # 404 is for paths (order ids, path symbols) only
    else:
        assert isinstance(outcome, PlaceOrder)
