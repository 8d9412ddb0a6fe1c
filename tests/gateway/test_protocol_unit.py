"""The pure protocol code: parsing, subscriptions, channels, encoders and the depth book.

No sockets here: these functions take values and return values.
"""

from __future__ import annotations

import contextlib
import json
import random
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import (
    DEFAULT_MARKETS,
    BookLevelChanged,
    OrderAccepted,
    OrderRejected,
    OrderType,
    RejectReason,
    SelfTradePrevention,
    Side,
    TimeInForce,
    TopOfBookChanged,
    TradeExecuted,
)
from gateway._messages import DepthBook, iso_time, order_update, orderbook_update, trade_executed
from gateway._protocol import (
    ErrorCode,
    Ping,
    ProtocolError,
    Stream,
    Subscribe,
    Subscriptions,
    Unsubscribe,
    channel_of,
    error_reply,
    normalize_symbol,
    parse_request,
)

SYMBOLS = frozenset({"BTC/USDT", "ETH/USDT"})
BTC_SPEC = DEFAULT_MARKETS[0]
TS = 1_763_893_845_234_567_890  # 2025-11-23T10:30:45.234567890Z


def parse(message):
    return parse_request(json.dumps(message) if not isinstance(message, str) else message,
                         symbols=SYMBOLS)


def test_parse_valid_requests():
    assert parse({"action": "ping", "id": 1}) == Ping(1)
    assert parse({"action": "subscribe", "stream": "trades"}) == Subscribe(
        Stream.TRADES, None, None)
    assert parse({"action": "subscribe", "stream": "depth", "symbol": "eth-usdt", "id": "a"}) \
        == Subscribe(Stream.DEPTH, "ETH/USDT", "a")
    assert parse({"action": "unsubscribe", "stream": "orders", "id": 2}) == Unsubscribe(
        Stream.ORDERS, None, 2)


def test_parse_accepts_bytes_whole():
    assert parse_request(b'{"action":"ping","id":3}', symbols=SYMBOLS) == Ping(3)


@pytest.mark.parametrize(("text", "code", "request_id"), [
    ("nope", ErrorCode.INVALID_JSON, None),
    ("[]", ErrorCode.INVALID_MESSAGE, None),
    ('{"action":"ping","id":[1]}', ErrorCode.INVALID_MESSAGE, None),
    ('{"action":"ping","id":1,"x":2}', ErrorCode.INVALID_MESSAGE, 1),
    ('{"action":"go","id":1}', ErrorCode.UNKNOWN_ACTION, 1),
    ('{"action":"subscribe","stream":"x","id":1}', ErrorCode.UNKNOWN_STREAM, 1),
    ('{"action":"subscribe","stream":"orderbook","id":1}', ErrorCode.MISSING_SYMBOL, 1),
    ('{"action":"subscribe","stream":"trades","symbol":"X/Y","id":1}',
     ErrorCode.UNKNOWN_SYMBOL, 1),
    ('{"action":"subscribe","stream":"orders","symbol":"BTC/USDT","id":1}',
     ErrorCode.INVALID_MESSAGE, 1),
])
def test_parse_errors_carry_code_and_id(text, code, request_id):
    with pytest.raises(ProtocolError) as error:
        parse(text)
    assert error.value.code is code
    assert error.value.request_id == request_id
    assert error_reply(error.value) == {"type": "error", "id": request_id, "code": str(code),
                                        "message": error.value.message,
                                        "field": "symbol" if code is ErrorCode.UNKNOWN_SYMBOL
                                        else None}


@given(st.binary(max_size=200))
def test_every_input_parses_or_raises_protocol_error(data):
    with contextlib.suppress(ProtocolError):
        parse_request(data, symbols=SYMBOLS)


@given(st.text(max_size=200))
def test_every_text_parses_or_raises_protocol_error(text):
    with contextlib.suppress(ProtocolError):
        parse_request(text, symbols=SYMBOLS)


def test_parse_byte_by_byte_prefixes_never_crash():
    text = '{"action":"subscribe","stream":"depth","symbol":"BTC/USDT","id":"abc"}'
    for end in range(len(text)):
        with pytest.raises(ProtocolError):
            parse(text[:end])
    assert parse(text) == Subscribe(Stream.DEPTH, "BTC/USDT", "abc")


def test_normalize_symbol():
    assert normalize_symbol("btc-usdt") == "BTC/USDT"
    assert normalize_symbol("BTC/USDT") == "BTC/USDT"


def test_channel_of():
    assert channel_of(Stream.ORDERS, None, "alice") == (Stream.ORDERS, "alice")
    assert channel_of(Stream.TRADES, None, None) == (Stream.TRADES, None)
    assert channel_of(Stream.DEPTH, "BTC/USDT", "alice") == (Stream.DEPTH, "BTC/USDT")
    with pytest.raises(ProtocolError) as error:
        channel_of(Stream.ORDERS, None, None, 5)
    assert (error.value.code, error.value.request_id) == (ErrorCode.UNAUTHORIZED, 5)


def test_subscriptions_limit_duplicates_and_removal():
    subs = Subscriptions(2)
    subs.add((Stream.TRADES, None))
    with pytest.raises(ProtocolError) as error:
        subs.add((Stream.TRADES, None), 1)
    assert error.value.code is ErrorCode.ALREADY_SUBSCRIBED
    subs.add((Stream.DEPTH, "BTC/USDT"))
    with pytest.raises(ProtocolError) as error:
        subs.add((Stream.ORDERBOOK, "BTC/USDT"), 2)
    assert (error.value.code, error.value.request_id) == (ErrorCode.TOO_MANY_SUBSCRIPTIONS, 2)
    assert len(subs) == 2
    assert (Stream.TRADES, None) in subs
    subs.remove((Stream.TRADES, None))
    with pytest.raises(ProtocolError) as error:
        subs.remove((Stream.TRADES, None), 3)
    assert error.value.code is ErrorCode.NOT_SUBSCRIBED
    assert list(subs) == [(Stream.DEPTH, "BTC/USDT")]


def test_iterating_subscriptions_allows_removal():
    subs = Subscriptions(5)
    for symbol in SYMBOLS:
        subs.add((Stream.TRADES, symbol))
    for channel in subs:
        subs.remove(channel)
    assert len(subs) == 0


# --------------------------------------------------------------- encoders


def test_iso_time_has_milliseconds_and_z():
    assert iso_time(TS) == "2025-11-23T10:30:45.234Z"
    assert iso_time(0) == "1970-01-01T00:00:00.000Z"


def test_order_update_created():
    event = OrderAccepted(1, TS, "BTC/USDT", 7, "alice", None, Side.BUY, OrderType.LIMIT,
                          TimeInForce.GTC, False, SelfTradePrevention.NONE, 5_000_000, 100_000)
    assert order_update(event, BTC_SPEC) == {
        "type": "order_update", "action": "created", "order_id": 7, "client_order_id": None,
        "user_id": "alice", "symbol": "BTC/USDT", "side": "BUY", "status": "OPEN",
        "order_type": "limit", "time_in_force": "gtc", "price": "50000.00",
        "quantity": "1.00000", "filled_quantity": "0.00000", "remaining_quantity": "1.00000",
        "timestamp": "2025-11-23T10:30:45.234Z",
    }


def test_order_update_rejected_needs_no_market():
    event = OrderRejected(1, TS, "place", "DOGE/USDT", 3, "bob", "c1",
                          RejectReason.UNKNOWN_SYMBOL)
    assert order_update(event, None) == {
        "type": "order_update", "action": "rejected", "order_id": 3, "client_order_id": "c1",
        "user_id": "bob", "symbol": "DOGE/USDT", "status": "REJECTED", "command": "place",
        "reason": "unknown_symbol", "timestamp": "2025-11-23T10:30:45.234Z",
    }


@pytest.mark.parametrize("with_user_ids", [False, True])
def test_trade_executed(with_user_ids):
    event = TradeExecuted(1, TS, "BTC/USDT", 9, 5_000_000, 50_000, Side.SELL, 4, "alice", 5,
                          "bob", 12_500_000, 25_000_000)
    message = trade_executed(event, BTC_SPEC, with_user_ids=with_user_ids)
    expected = {
        "type": "trade_executed", "trade_id": 9, "symbol": "BTC/USDT", "price": "50000.00",
        "quantity": "0.50000", "taker_side": "SELL", "buyer_fee": "0.12500000",
        "seller_fee": "0.25000000", "fee_asset": "USDT",
        "executed_at": "2025-11-23T10:30:45.234Z",
    }
    if with_user_ids:
        expected |= {"buyer_id": "alice", "seller_id": "bob"}
    assert message == expected


def test_orderbook_update_spread_and_empty_side():
    two = TopOfBookChanged(1, TS, "BTC/USDT", 4_999_900, 250_000, 5_000_100, 300_000)
    assert orderbook_update(two, BTC_SPEC) == {
        "type": "orderbook_update", "symbol": "BTC/USDT", "best_bid": "49999.00",
        "best_ask": "50001.00", "bid_quantity": "2.50000", "ask_quantity": "3.00000",
        "spread": "2.00", "timestamp": "2025-11-23T10:30:45.234Z",
    }
    one = TopOfBookChanged(1, TS, "BTC/USDT", None, 0, 5_000_100, 300_000)
    message = orderbook_update(one, BTC_SPEC)
    assert (message["best_bid"], message["bid_quantity"], message["spread"]) == (
        None, "0.00000", None)


# -------------------------------------------------------------- DepthBook


def level(side, price, quantity, seq=1):
    return BookLevelChanged(seq, TS, "BTC/USDT", side, price, quantity)


def kraken(asks, bids):
    def part(text):
        return text.replace(".", "").lstrip("0")
    fmt_p, fmt_q = BTC_SPEC.format_price, BTC_SPEC.format_quantity
    return zlib.crc32("".join(part(fmt_p(p)) + part(fmt_q(q))
                              for p, q in list(asks) + list(bids)).encode())


def apply(book: DepthBook, changes: list) -> dict | None:
    """Apply changes; the depth_update message a subscriber would get, or None."""
    diff = book.apply(changes)
    return None if diff is None else book.update_message(diff)


def test_depth_checksum_of_a_known_book():
    book = DepthBook(BTC_SPEC, 10)
    book.apply([level(Side.BUY, 4_999_990, 125_000), level(Side.SELL, 5_000_010, 50_000)])
    assert book.checksum() == zlib.crc32(b"5000010" + b"50000" + b"4999990" + b"125000")
    assert DepthBook(BTC_SPEC, 10).checksum() == zlib.crc32(b"")


def test_depth_update_reports_window_changes_only():
    book = DepthBook(BTC_SPEC, 2)
    first = apply(book, [level(Side.BUY, 100, 1), level(Side.BUY, 99, 2)])
    assert first is not None
    assert (first["seq"], first["bids"], first["asks"]) == (
        1, [["1.00", "0.00001"], ["0.99", "0.00002"]], [])
    assert apply(book, [level(Side.BUY, 50, 1)]) is None  # outside the window
    assert book.seq == 1
    pushed = apply(book, [level(Side.BUY, 101, 3)])
    assert pushed is not None
    assert [p for p, _ in pushed["bids"]] == ["1.01", "0.99"]
    assert pushed["bids"][0][1] == "0.00003"
    assert float(pushed["bids"][1][1]) == 0  # 0.99 left the window
    removed = apply(book, [level(Side.BUY, 101, 0)])
    assert removed is not None
    assert [p for p, _ in removed["bids"]] == ["1.01", "0.99"]
    assert float(removed["bids"][0][1]) == 0
    assert removed["bids"][1][1] == "0.00002"  # 0.99 came back into the window


def test_depth_checksum_matches_the_documented_example():
    book = DepthBook(BTC_SPEC, 10)
    book.apply([level(Side.BUY, 5_000_000, 600)])
    assert book.snapshot()["bids"] == [["50000.00", "0.00600"]]
    assert book.checksum() == 3804679936  # docs/protocol.md, depth_snapshot example


def test_depth_random_book_snapshot_plus_updates_equals_the_book():
    rng = random.Random(7)
    levels = 4
    book = DepthBook(BTC_SPEC, levels)
    client = None
    truth = {Side.BUY: {}, Side.SELL: {}}
    for step in range(500):
        changes = []
        for _ in range(rng.randint(1, 3)):
            side = rng.choice([Side.BUY, Side.SELL])
            price = rng.randint(90, 110) if side is Side.BUY else rng.randint(111, 130)
            quantity = rng.choice([0, 0, rng.randint(1, 9)])
            truth[side][price] = quantity
            if not quantity:
                del truth[side][price]
            changes.append(level(side, price, quantity))
        if step == 100:
            snap = book.snapshot()
            client = {"bids": dict(map(tuple, snap["bids"])),
                      "asks": dict(map(tuple, snap["asks"]))}
            seq = snap["seq"]
        update = apply(book, changes)
        if client is not None and update is not None:
            seq += 1
            assert update["seq"] == seq
            for key in ("bids", "asks"):
                for price, quantity in update[key]:
                    if float(quantity) == 0:
                        client[key].pop(price, None)
                    else:
                        client[key][price] = quantity
            bids = sorted(client["bids"].items(), key=lambda x: -float(x[0]))[:levels]
            asks = sorted(client["asks"].items(), key=lambda x: float(x[0]))[:levels]
            client = {"bids": dict(bids), "asks": dict(asks)}
            assert [list(x) for x in bids] == book.snapshot()["bids"]
            assert [list(x) for x in asks] == book.snapshot()["asks"]
            assert update["checksum"] == book.checksum()
        best_bids = sorted(truth[Side.BUY].items(), reverse=True)[:levels]
        best_asks = sorted(truth[Side.SELL].items())[:levels]
        assert book.top(Side.BUY) == best_bids
        assert book.top(Side.SELL) == best_asks
        assert book.checksum() == kraken(best_asks, best_bids)
