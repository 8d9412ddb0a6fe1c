"""The client's protocol state machine (``gateway.client._session``), fed messages by hand.

No network and no trio: every input is a method call or a JSON message as the
server writes it, every output a value. Covered: reply matching by id,
seq checks (duplicates, gaps), resume after a reconnect (``since``,
``resumed``, ``resume_unavailable``, servers without epochs), checksum
mismatches, the paused buffer, and what happens to requests in flight.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec
import pytest

from gateway.client import OutcomeUnknown, Resynced, SubscriptionError, checksum
from gateway.client._errors import ChecksumFailed, NotConnected, RequestError
from gateway.client._messages import Placed, decode
from gateway.client._session import Deliver, Fail, Key, Output, Resolve, Send, Session, Status

EPOCH = "0123456789abcdef"
TRADES: Key = ("trades", "BTC/USDT")
DEPTH: Key = ("depth", "BTC/USDT")


def feed(session: Session, message: dict[str, Any]) -> list[Output]:
    return session.receive(decode(msgspec.json.encode(message)))


def sent(outputs: list[Output]) -> list[dict[str, Any]]:
    return [o.request for o in outputs if isinstance(o, Send)]


def delivered(outputs: list[Output]) -> list[Any]:
    return [o.item for o in outputs if isinstance(o, Deliver)]


def trade(seq: int, trade_id: int | None = None) -> dict[str, Any]:
    return {"type": "trade_executed", "trade_id": trade_id or seq, "symbol": "BTC/USDT",
            "price": "50000.00", "quantity": "0.00400", "taker_side": "SELL",
            "buyer_fee": "0.1", "seller_fee": "0.2", "fee_asset": "USDT",
            "executed_at": "2026-11-22T05:52:53.674Z", "seq": seq}


def subscribed(request: dict[str, Any], seq: int, epoch: str | None = EPOCH,
               resumed: bool = False) -> dict[str, Any]:
    reply = {"type": "subscribed", "id": request["id"], "stream": request["stream"],
             "symbol": request.get("symbol"), "seq": seq}
    if epoch is not None:
        reply["epoch"] = epoch
    if resumed:
        reply["resumed"] = True
    return reply


def depth_snapshot(seq: int, bids: list[list[str]]) -> dict[str, Any]:
    pairs = [(Decimal(p), Decimal(q)) for p, q in bids]
    return {"type": "depth_snapshot", "symbol": "BTC/USDT", "seq": seq, "bids": bids,
            "asks": [], "checksum": checksum(pairs, [])}


def depth_update(seq: int, bids: list[list[str]], check: int) -> dict[str, Any]:
    return {"type": "depth_update", "symbol": "BTC/USDT", "seq": seq, "bids": bids,
            "asks": [], "checksum": check, "timestamp": "2026-11-22T05:53:01.112Z"}


def connected_trades(seq: int = 4) -> tuple[Session, int]:
    """A session with an active trades subscription at ``seq``; its waiter id."""
    session = Session()
    session.connection_made()
    _, waiter, out = session.subscribe("trades", "BTC/USDT")
    [request] = sent(out)
    assert request == {"action": "subscribe", "stream": "trades", "symbol": "BTC/USDT",
                       "id": request["id"]}
    out = feed(session, subscribed(request, seq))
    assert next(o for o in out if isinstance(o, Resolve)).request_id == waiter
    return session, waiter


def test_messages_in_order_are_delivered_and_duplicates_dropped():
    session, _ = connected_trades(seq=4)
    assert [m.seq for m in delivered(feed(session, trade(5)))] == [5]
    assert delivered(feed(session, trade(5))) == []  # the same seq again
    assert [m.seq for m in delivered(feed(session, trade(6)))] == [6]


def test_a_gap_resubscribes_since_the_last_seq_and_a_resume_is_seamless():
    session, _ = connected_trades(seq=4)
    feed(session, trade(5))
    out = feed(session, trade(7))  # 6 is missing
    assert delivered(out) == []
    unsubscribe, subscribe = sent(out)
    assert unsubscribe["action"] == "unsubscribe"
    assert subscribe["since"] == {"epoch": EPOCH, "seq": 5}
    assert delivered(feed(session, trade(8))) == []  # the old subscription's: dropped
    feed(session, {"type": "unsubscribed", "id": unsubscribe["id"], "stream": "trades",
                   "symbol": "BTC/USDT"})
    assert delivered(feed(session, subscribed(subscribe, 5, resumed=True))) == []
    assert [m.seq for m in delivered(feed(session, trade(6)))] == [6]  # from history


def test_after_a_reconnect_every_subscription_resumes_since_its_seq():
    session, _ = connected_trades(seq=4)
    feed(session, trade(5))
    assert session.connection_lost("gone") == []
    assert session.status(TRADES) is Status.OFFLINE
    [request] = sent(session.connection_made())
    assert request["since"] == {"epoch": EPOCH, "seq": 5}
    out = feed(session, subscribed(request, 5, resumed=True))
    assert delivered(out) == []  # nothing to tell: nothing was missed
    assert [m.seq for m in delivered(feed(session, trade(6)))] == [6]


def test_resume_unavailable_subscribes_afresh_and_says_so_first():
    session, _ = connected_trades(seq=4)
    feed(session, trade(5))
    session.connection_lost("gone")
    [request] = sent(session.connection_made())
    out = feed(session, {"type": "error", "id": request["id"], "code": "resume_unavailable",
                         "message": "history ends at seq 40", "field": "since"})
    [fresh] = sent(out)
    assert "since" not in fresh
    out = feed(session, subscribed(fresh, 90, epoch="fedcba9876543210"))
    [notice] = delivered(out)
    assert notice == Resynced(stream="trades", symbol="BTC/USDT", reason="resume_unavailable",
                              last_seq=5, seq=90)
    assert [m.seq for m in delivered(feed(session, trade(91)))] == [91]
    # the new epoch is the one resumed next time
    session.connection_lost("again")
    [request] = sent(session.connection_made())
    assert request["since"] == {"epoch": "fedcba9876543210", "seq": 91}


def test_a_server_without_epochs_gets_fresh_subscriptions_announced_as_no_history():
    session = Session()
    session.connection_made()
    _, _, out = session.subscribe("trades", "BTC/USDT")
    feed(session, subscribed(sent(out)[0], 0, epoch=None))
    feed(session, trade(1))
    session.connection_lost("gone")
    [request] = sent(session.connection_made())
    assert "since" not in request
    [notice] = delivered(feed(session, subscribed(request, 0, epoch=None)))
    assert (notice.reason, notice.last_seq, notice.seq) == ("no_history", 1, 0)
    # a restarted server numbers from scratch: its seq 1 is new, not a duplicate
    assert [m.seq for m in delivered(feed(session, trade(1)))] == [1]


def test_order_requests_match_their_replies_by_id_and_in_flight_ones_become_unknown():
    session = Session()
    with pytest.raises(NotConnected, match="was not sent"):
        session.order("place", {"order": {}})
    session.connection_made()
    first, out1 = session.order("cancel", {"order_id": 1})
    second, out2 = session.order("place", {"order": {"symbol": "BTC/USDT"}})
    assert sent(out1) == [{"action": "cancel", "id": first, "order_id": 1}]
    out = feed(session, {"type": "error", "id": first, "code": "order_not_found",
                         "message": "no open order 1 of yours", "field": "order_id"})
    [resolved] = out
    assert isinstance(resolved, Resolve)
    assert isinstance(resolved.result, RequestError)
    assert (resolved.result.code, resolved.result.field) == ("order_not_found", "order_id")
    [lost] = session.connection_lost("the connection broke")
    assert isinstance(lost, Resolve)
    assert lost.request_id == second
    assert isinstance(lost.result, OutcomeUnknown)
    assert lost.result.request == sent(out2)[0]
    assert "check your orders before retrying" in str(lost.result)
    assert sent(session.connection_made()) == []  # never sent again


def test_a_reply_to_a_forgotten_order_still_frees_its_slot():
    session = Session()
    session.connection_made()
    request_id, _ = session.order("cancel_all", {})
    session.forget(request_id)
    [resolved] = feed(session, {"type": "all_cancelled", "id": request_id, "cancelled": [],
                                "count": 0})
    assert isinstance(resolved, Resolve)


def test_a_refused_subscription_resolves_its_waiter_with_the_error():
    session = Session()
    session.connection_made()
    key, waiter, out = session.subscribe("orders")
    [resolved] = feed(session, {"type": "error", "id": sent(out)[0]["id"],
                                "code": "unauthorized", "message": "needs a token",
                                "field": None})
    assert isinstance(resolved, Resolve)
    assert resolved.request_id == waiter
    assert isinstance(resolved.result, SubscriptionError)
    assert session.status(key) is None


def test_a_refused_resubscription_fails_the_subscription():
    session, _ = connected_trades()
    session.connection_lost("gone")
    [request] = sent(session.connection_made())
    [failed] = feed(session, {"type": "error", "id": request["id"], "code": "unknown_symbol",
                              "message": "no such market", "field": "symbol"})
    assert isinstance(failed, Fail)
    assert failed.key == TRADES
    assert isinstance(failed.error, SubscriptionError)


def test_a_subscribe_made_while_offline_goes_out_on_the_next_connection():
    session = Session()
    _, waiter, out = session.subscribe("trades", "BTC/USDT")
    assert out == []
    [request] = sent(session.connection_made())
    assert "since" not in request
    out = feed(session, subscribed(request, 3))
    assert [o.request_id for o in out if isinstance(o, Resolve)] == [waiter]
    assert delivered(out) == []  # a first subscription is no resync


def test_subscriptions_that_cannot_be_told_apart_are_refused():
    session = Session()
    session.subscribe("trades", "BTC/USDT")
    with pytest.raises(ValueError, match="already subscribed to trades BTC/USDT"):
        session.subscribe("trades", "BTC/USDT")
    with pytest.raises(ValueError, match="cannot share a connection"):
        session.subscribe("trades")
    with pytest.raises(ValueError, match="needs a symbol"):
        session.subscribe("depth")
    with pytest.raises(ValueError, match="unknown stream 'candles'"):
        session.subscribe("candles", "BTC/USDT")
    session.subscribe("trades", "ETH/USDT")  # another symbol is fine


def depth_session() -> tuple[Session, dict[str, Any]]:
    session = Session()
    session.connection_made()
    _, _, out = session.subscribe("depth", "BTC/USDT")
    [request] = sent(out)
    assert delivered(feed(session, subscribed(request, 2))) == []
    assert session.status(DEPTH) is Status.SNAPSHOT
    [snap] = delivered(feed(session, depth_snapshot(2, [["100.00", "1.0"]])))
    assert snap.seq == 2
    return session, request


def test_a_depth_checksum_mismatch_resubscribes_afresh_and_announces_it():
    session, _ = depth_session()
    book = session.book(DEPTH)
    assert book is not None
    assert book.synced
    out = feed(session, depth_update(3, [["100.00", "2.0"]], check=1))  # wrong checksum
    assert delivered(out) == []
    unsubscribe, subscribe = sent(out)
    assert unsubscribe["action"] == "unsubscribe"
    assert "since" not in subscribe  # resuming a wrong book would keep it wrong
    assert not book.synced
    [notice] = delivered(feed(session, subscribed(subscribe, 7)))
    assert (notice.reason, notice.last_seq, notice.seq) == ("checksum_mismatch", 2, 7)
    [snap] = delivered(feed(session, depth_snapshot(7, [["100.00", "2.0"]])))
    assert book.synced
    assert book.bids == [(Decimal("100.00"), Decimal("2.0"))]
    assert snap.seq == 7


def test_three_mismatches_in_a_row_fail_instead_of_looping():
    session, _ = depth_session()
    seq = 2
    for _ in range(2):  # a mismatch right after each fresh snapshot
        out = feed(session, depth_update(seq + 1, [["1.00", "1"]], check=1))
        assert not [o for o in out if isinstance(o, Fail)]
        seq += 10
        feed(session, subscribed(sent(out)[-1], seq))
        feed(session, depth_snapshot(seq, []))
    out = feed(session, depth_update(seq + 1, [["1.00", "1"]], check=1))
    [failure] = [o for o in out if isinstance(o, Fail)]
    assert isinstance(failure.error, ChecksumFailed)
    assert "3 times in a row" in str(failure.error)
    assert [r["action"] for r in sent(out)] == ["unsubscribe"]
    assert session.status(DEPTH) is None


def test_a_depth_book_resumes_without_a_snapshot():
    session, _ = depth_session()
    session.connection_lost("gone")
    [request] = sent(session.connection_made())
    assert request["since"] == {"epoch": EPOCH, "seq": 2}
    feed(session, subscribed(request, 2, resumed=True))
    book = session.book(DEPTH)
    assert book is not None
    after = checksum([(Decimal("100.00"), Decimal("1.0")), (Decimal("99.00"), Decimal("1"))],
                     [])
    [update] = delivered(feed(session, depth_update(3, [["99.00", "1"]], after)))
    assert update.seq == 3
    assert [p for p, _ in book.bids] == [Decimal("100.00"), Decimal("99.00")]


def test_a_connection_lost_before_the_snapshot_does_not_resume():
    session = Session()
    session.connection_made()
    _, _, out = session.subscribe("depth", "BTC/USDT")
    feed(session, subscribed(sent(out)[0], 2))
    session.connection_lost("gone")
    [request] = sent(session.connection_made())
    assert "since" not in request  # there is no book at seq 2 to continue


def test_a_full_buffer_pauses_and_resume_asks_since_the_last_delivered():
    room = {"full": False}
    session = Session(has_room=lambda key: not room["full"])
    session.connection_made()
    _, _, out = session.subscribe("trades", "BTC/USDT")
    feed(session, subscribed(sent(out)[0], 0))
    feed(session, trade(1))
    room["full"] = True
    out = feed(session, trade(2))
    assert delivered(out) == []
    assert [r["action"] for r in sent(out)] == ["unsubscribe"]
    assert session.status(TRADES) is Status.PAUSED
    assert delivered(feed(session, trade(3))) == []
    room["full"] = False
    [request] = sent(session.resume(TRADES))
    assert request["since"] == {"epoch": EPOCH, "seq": 1}  # 2 was never delivered
    feed(session, subscribed(request, 1, resumed=True))
    assert [m.seq for m in delivered(feed(session, trade(2)))] == [2]


def test_unsubscribing_ignores_what_still_arrives():
    session, _ = connected_trades()
    request_id, out = session.unsubscribe(TRADES)
    assert sent(out)[0]["action"] == "unsubscribe"
    assert delivered(feed(session, trade(5))) == []
    [done] = feed(session, {"type": "unsubscribed", "id": request_id, "stream": "trades",
                            "symbol": "BTC/USDT"})
    assert done == Resolve(request_id, None)
    assert session.status(TRADES) is None


def test_an_order_reply_is_typed():
    session = Session()
    session.connection_made()
    request_id, _ = session.order("place", {"order": {}})
    [resolved] = feed(session, {
        "type": "placed", "id": request_id, "order": {
            "order_id": 15, "client_order_id": "my-42", "user_id": "alice",
            "symbol": "BTC/USDT", "side": "BUY", "type": "limit", "time_in_force": "gtc",
            "post_only": False, "self_trade_prevention": "none", "price": "50000.00",
            "quantity": "0.01000", "filled_quantity": "0.00000",
            "remaining_quantity": "0.01000", "status": "OPEN",
            "created_at": "2026-11-29T10:00:00.000Z", "updated_at": "2026-11-29T10:00:00.000Z"}})
    assert isinstance(resolved, Resolve)
    assert isinstance(resolved.result, Placed)
    assert resolved.result.order.price == Decimal("50000.00")
    assert resolved.result.order.order_type == "limit"
