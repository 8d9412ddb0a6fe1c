"""Naming an open order by its owner's ``client_order_id`` in a cancel or an amend.

The engine resolves the client id when it applies the command, among the
owner's open orders only: another user's id of the same name, or the id of a
closed order, is an unknown order.
"""

from __future__ import annotations

from engine_harness import only

from engine import (
    AmendOrder,
    CancelOrder,
    OrderAmended,
    OrderCancelled,
    OrderRejected,
    OrderStatus,
    RejectReason,
)


def test_cancel_by_client_order_id(exchange):
    exchange.buy(1, 5, 100, client_order_id="mine")

    [cancelled] = only(exchange.apply(CancelOrder(user_id="alice", client_order_id="mine")),
                       OrderCancelled)

    assert (cancelled.order_id, cancelled.client_order_id) == (1, "mine")
    assert exchange.engine.order(1).status is OrderStatus.CANCELLED
    assert exchange.engine.open_order_by_client_id("alice", "mine") is None


def test_amend_by_client_order_id(exchange):
    exchange.buy(1, 5, 100, client_order_id="mine")

    [amended] = only(exchange.apply(AmendOrder(user_id="alice", client_order_id="mine",
                                               quantity=3)), OrderAmended)

    assert (amended.order_id, amended.quantity) == (1, 3)
    assert exchange.engine.open_order_by_client_id("alice", "mine").quantity == 3


def test_another_users_client_order_id_is_an_unknown_order(exchange):
    exchange.buy(1, 5, 100, user="bob", client_order_id="shared")

    for command in (CancelOrder(user_id="alice", client_order_id="shared"),
                    AmendOrder(user_id="alice", client_order_id="shared", quantity=1)):
        [rejected] = exchange.apply(command)
        assert type(rejected) is OrderRejected
        assert (rejected.reason, rejected.client_order_id) == (RejectReason.UNKNOWN_ORDER,
                                                               "shared")
    assert exchange.engine.order(1).status is OrderStatus.NEW


def test_a_closed_orders_client_order_id_no_longer_names_it(exchange):
    exchange.buy(1, 5, 100, client_order_id="once")
    exchange.cancel(1)

    [rejected] = exchange.apply(CancelOrder(user_id="alice", client_order_id="once"))

    assert rejected.reason is RejectReason.UNKNOWN_ORDER
    assert exchange.engine.open_order_by_client_id("alice", "once") is None


def test_the_client_order_id_wins_over_an_order_id(exchange):
    exchange.buy(1, 5, 100, client_order_id="a")
    exchange.buy(2, 5, 100, client_order_id="b")

    [cancelled] = only(exchange.apply(CancelOrder(user_id="alice", order_id=1,
                                                  client_order_id="b")), OrderCancelled)

    assert cancelled.order_id == 2
