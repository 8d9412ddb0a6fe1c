"""The order index: every order the engine knows, by id, by user and by client order id.

Rules of this module:

* One index, kept consistent by the four methods that change it and by nothing
  else: :meth:`OrderIndex.open` when an order rests, :meth:`~OrderIndex.close`
  when a resting order leaves the book (filled or cancelled),
  :meth:`~OrderIndex.remember_closed` for an order that never rested, and
  :meth:`~OrderIndex.replace` when an amend puts a new object in an open
  order's place.
* ``by_id`` holds the open orders and the most recent closed ones; an order is
  open while its ``remaining`` is positive. ``closed`` lists the closed ones
  in ``by_id``, oldest first; past ``history`` of them, the oldest is forgotten.
* ``by_user`` and ``client_ids`` hold open orders only. ``by_user[user]`` keeps
  a user's open orders in the order they were opened (``open_orders`` and
  ``CancelAllOrders`` follow it, and the state export records it); a user
  with no open order has no entry.
* One copy: :meth:`Engine.apply` writes ``open`` out for a resting order,
  the most common command, where the call costs about 2 % of the benchmark
  (bench/README.md, "Engine"). It says ``inlined: OrderIndex.open`` and must
  change with the method.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from engine._book import RestingOrder


class OrderIndex:
    """The orders of every market, open and recently closed."""

    __slots__ = ("by_id", "by_user", "client_ids", "closed", "history")

    def __init__(self, history: int) -> None:
        self.history = history
        self.by_id: dict[int, RestingOrder] = {}
        self.closed: deque[int] = deque()
        self.by_user: dict[str, dict[int, RestingOrder]] = {}
        self.client_ids: dict[tuple[str, str], int] = {}

    def open(self, order: RestingOrder) -> None:
        """Index an order that is now resting on the book (``Engine.apply`` copies this)."""
        oid, user = order.order_id, order.user_id
        self.by_id[oid] = order
        mine = self.by_user.get(user)
        if mine is None:
            self.by_user[user] = {oid: order}
        else:
            mine[oid] = order
        if order.client_order_id is not None:
            self.client_ids[user, order.client_order_id] = oid

    def close(self, order: RestingOrder) -> None:
        """Move an order that was open to the closed history."""
        oid, user = order.order_id, order.user_id
        by_user = self.by_user
        mine = by_user[user]
        del mine[oid]
        if not mine:
            del by_user[user]
        if order.client_order_id is not None:
            del self.client_ids[user, order.client_order_id]
        closed = self.closed
        closed.append(oid)
        if len(closed) > self.history:
            del self.by_id[closed.popleft()]

    def remember_closed(self, order: RestingOrder) -> None:
        """Add an order that never rested (or a closed one being restored) to the history."""
        oid = order.order_id
        self.by_id[oid] = order
        closed = self.closed
        closed.append(oid)
        if len(closed) > self.history:
            del self.by_id[closed.popleft()]

    def replace(self, replacement: RestingOrder) -> None:
        """Put ``replacement`` in the place of the open order with its id (an amend).

        Its user, client order id and place in the user's orders stay as they were.
        """
        oid = replacement.order_id
        self.by_id[oid] = replacement
        self.by_user[replacement.user_id][oid] = replacement

    # -------------------------------------------------------------- reading

    def by_client_id(self, user_id: object, client_order_id: object) -> int | None:
        """The id of ``user_id``'s open order with ``client_order_id``, if there is one."""
        if type(user_id) is not str or type(client_order_id) is not str:
            return None
        return self.client_ids.get((user_id, client_order_id))

    def get(self, order_id: object) -> RestingOrder | None:
        """The order with this id, open or still in the history; None otherwise."""
        return self.by_id.get(order_id) if type(order_id) is int else None

    def open_orders(self, user_id: str) -> Iterable[RestingOrder]:
        """A user's open orders, oldest first (nothing for an unknown user)."""
        mine = self.by_user.get(user_id)
        return () if mine is None else mine.values()

    def closed_orders(self) -> list[RestingOrder]:
        """The closed orders still known, oldest first: the order they are forgotten in."""
        by_id = self.by_id
        return [by_id[oid] for oid in self.closed]

    def user_order_ids(self) -> list[int]:
        """Every open order id, users sorted by id, each user's own order kept."""
        by_user = self.by_user
        return [oid for user in sorted(by_user) for oid in by_user[user]]
