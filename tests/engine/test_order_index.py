"""The order index on its own: by id, by user, by client order id, and the closed history.

``engine._orders.OrderIndex`` is private; these tests import it because its
rules (what each view holds, in which order, what is forgotten when) are what
the engine's queries, its cancel-all and its state export rely on, and a
mistake in them shows up far from its cause in the engine-level tests.
"""

from __future__ import annotations

import msgspec
import pytest

from engine import OrderStatus, OrderType, SelfTradePrevention, Side, TimeInForce
from engine._book import RestingOrder
from engine._orders import OrderIndex


def order(order_id: int, user: str = "ann", cid: str | None = None) -> RestingOrder:
    return RestingOrder(
        remaining=5, user_id=user, symbol="BTC/USDT", filled=0, order_id=order_id,
        price=100, side=Side.BUY, client_order_id=cid, quantity=5, status=OrderStatus.NEW,
        updated_seq=1, updated_ts=1, order_type=OrderType.LIMIT,
        time_in_force=TimeInForce.GTC, post_only=False,
        self_trade_prevention=SelfTradePrevention.NONE, created_seq=1, created_ts=1,
    )


def closing(o: RestingOrder) -> RestingOrder:
    """What the engine does to an order before it closes it: nothing remains."""
    o.remaining = 0
    return o


def test_an_opened_order_is_found_by_id_by_user_and_by_client_id():
    index = OrderIndex(history=10)
    placed = order(7, "ann", cid="c-1")

    index.open(placed)

    assert index.get(7) is placed
    assert list(index.open_orders("ann")) == [placed]
    assert index.client_ids == {("ann", "c-1"): 7}


def test_a_users_open_orders_come_in_the_order_they_were_opened():
    index = OrderIndex(history=10)
    for oid in (5, 3, 9):
        index.open(order(oid, "ann"))
    index.open(order(4, "ben"))

    assert [o.order_id for o in index.open_orders("ann")] == [5, 3, 9]
    assert [o.order_id for o in index.open_orders("ben")] == [4]
    assert list(index.open_orders("nobody")) == []


def test_closing_keeps_the_order_by_id_and_drops_it_from_user_and_client_views():
    index = OrderIndex(history=10)
    first, second = order(1, "ann", cid="a"), order(2, "ann", cid="b")
    index.open(first)
    index.open(second)

    index.close(closing(first))

    assert index.get(1) is first
    assert [o.order_id for o in index.open_orders("ann")] == [2]
    assert index.client_ids == {("ann", "b"): 2}
    assert index.closed_orders() == [first]


def test_a_user_whose_last_order_closes_has_no_entry_left():
    index = OrderIndex(history=10)
    index.open(only := order(1, "ann", cid="x"))

    index.close(closing(only))

    assert index.by_user == {}
    assert index.client_ids == {}
    assert index.user_order_ids() == []


def test_a_client_order_id_is_free_again_once_its_order_closes():
    index = OrderIndex(history=10)
    index.open(first := order(1, "ann", cid="same"))
    index.close(closing(first))

    index.open(order(2, "ann", cid="same"))

    assert index.client_ids == {("ann", "same"): 2}


def test_the_oldest_closed_order_is_forgotten_first_past_the_history():
    index = OrderIndex(history=2)
    orders = [order(oid) for oid in (1, 2, 3)]
    for o in orders:
        index.open(o)

    for o in orders:
        index.close(closing(o))

    assert index.get(1) is None
    assert [o.order_id for o in index.closed_orders()] == [2, 3]


def test_with_no_history_a_closed_order_is_forgotten_at_once():
    index = OrderIndex(history=0)
    index.open(o := order(1))

    index.close(closing(o))
    index.remember_closed(closing(order(2)))

    assert index.by_id == {}
    assert index.closed_orders() == []


def test_an_order_that_never_rested_goes_to_the_history_only():
    index = OrderIndex(history=10)
    finished = closing(order(3, "ann", cid="ioc"))

    index.remember_closed(finished)

    assert index.get(3) is finished
    assert index.closed_orders() == [finished]
    assert list(index.open_orders("ann")) == []
    assert index.client_ids == {}


def test_open_orders_never_count_against_the_history():
    index = OrderIndex(history=1)
    open_ones = [order(oid) for oid in (1, 2, 3)]
    for o in open_ones:
        index.open(o)

    index.remember_closed(closing(order(4)))
    index.remember_closed(closing(order(5)))

    assert [index.get(oid) for oid in (1, 2, 3)] == open_ones
    assert index.get(4) is None
    assert index.get(5) is not None


def test_a_replacement_takes_the_place_of_the_open_order_with_its_id():
    index = OrderIndex(history=10)
    for oid in (1, 2, 3):
        index.open(order(oid, "ann", cid=f"c{oid}"))
    replacement = msgspec.structs.replace(index.by_id[2], price=99)

    index.replace(replacement)

    assert index.get(2) is replacement
    assert list(index.open_orders("ann"))[1] is replacement
    assert [o.order_id for o in index.open_orders("ann")] == [1, 2, 3]
    assert index.client_ids[("ann", "c2")] == 2


def test_user_order_ids_list_users_sorted_and_each_users_own_order():
    index = OrderIndex(history=10)
    for oid, user in ((9, "cid"), (4, "ann"), (7, "ben"), (2, "ann"), (1, "cid")):
        index.open(order(oid, user))

    assert index.user_order_ids() == [4, 2, 7, 9, 1]


@pytest.mark.parametrize("key", [True, "1", 1.0, None, (1,)])
def test_get_finds_only_int_ids(key):
    index = OrderIndex(history=10)
    index.open(order(1))

    assert index.get(key) is None
