"""The order endpoints of ``/api/v1``: place, amend, cancel, cancel all, and the user's orders.

Rules of this module:

* Every rule about a request body lives in ``gateway/_schema.py``; these
  handlers only read the body, call the schema and the engine task, and
  shape the answer. WebSocket order entry (``gateway/_order_entry.py``) calls
  the same functions in the same order: the user's order rate, then the
  order named (404), then the body, so that one input gets one error code on
  both transports.
* An answer is made once the command is durable in the journal and applied,
  right after it was applied (before the next command of its batch), so it
  shows the order as its own command left it, as a WebSocket reply does.
* Another user's order is indistinguishable from a missing one: 404
  ``order_not_found``, before any command is queued.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from engine import (
    AmendOrder,
    CancelAllOrders,
    CancelOrder,
    Command,
    Event,
    MarketSpec,
    Order,
    OrderAccepted,
    OrderAmended,
    OrderCancelled,
    OrderRejected,
)
from gateway._codes import Code
from gateway._limits import OrderRate
from gateway._messages import order_json
from gateway._rest._api import Answer, Call
from gateway._runtime import Busy, Runtime, Unavailable
from gateway._schema import (
    AmendBody,
    PlaceBody,
    RequestError,
    amend_command,
    decode_body,
    market,
    order_id_of,
    order_not_found,
    place_command,
    rate_limited,
    rejection,
)
from gateway._stats import Stats

_OPEN_STATUSES = ("OPEN", "PARTIALLY_FILLED")


class Orders:
    """The order handlers, bound to the engine task and the users' shared order rate."""

    def __init__(self, runtime: Runtime, *, order_rate: OrderRate, stats: Stats) -> None:
        self._runtime = runtime
        self._engine = runtime.engine
        self._markets = runtime.engine.markets
        self._rate = order_rate
        self._stats = stats

    async def place(self, call: Call) -> Answer:
        raw = await call.body()
        user_id = call.user_id
        self._admit(user_id)
        command = place_command(decode_body(raw, PlaceBody), user_id, self._markets)
        spec = self._markets[command.symbol]
        return 201, await self._submit(command, spec, self._placed)

    async def amend(self, call: Call) -> Answer:
        raw = await call.body()
        user_id = call.user_id
        self._admit(user_id)
        order_id = _order_id(call.param)
        spec = self._markets[self._own(order_id, user_id).symbol]
        command = amend_command(decode_body(raw, AmendBody), spec, user_id, order_id=order_id)
        return 200, await self._submit(command, spec, self._changed)

    async def cancel(self, call: Call) -> Answer:
        user_id = call.user_id
        self._admit(user_id)
        order_id = _order_id(call.param)
        spec = self._markets[self._own(order_id, user_id).symbol]
        return 200, await self._submit(
            CancelOrder(order_id=order_id, user_id=user_id), spec, self._changed)

    async def cancel_all(self, call: Call) -> Answer:
        user_id = call.user_id
        self._admit(user_id)
        symbol = call.query("symbol")
        spec = None if symbol is None else market(self._markets, symbol)
        command = CancelAllOrders(user_id=user_id, symbol=None if spec is None else spec.symbol)
        return 200, await self._submit(command, spec, _cancelled)

    async def get_order(self, call: Call) -> Answer:
        order = self._own(_order_id(call.param), call.user_id)
        return 200, order_json(order, self._markets[order.symbol])

    async def list_orders(self, call: Call) -> Answer:
        symbol = call.query("symbol")
        only = None if symbol is None else market(self._markets, symbol).symbol
        status = call.query("status")
        if status is not None and status.isascii():  # a dotless i upper-cases to "I"
            status = status.upper()
        if status is not None and status not in _OPEN_STATUSES:
            raise RequestError(400, Code.INVALID_STATUS, "this list holds open orders: status is "
                               "OPEN or PARTIALLY_FILLED", "status")
        markets = self._markets
        orders = [order_json(o, markets[o.symbol])
                  for o in self._engine.open_orders(call.user_id, only)]
        if status is not None:
            orders = [o for o in orders if o["status"] == status]
        return 200, {"orders": orders}

    def _admit(self, user_id: str) -> None:
        """Hold an order-entry command to the user's order rate (shared with WebSockets)."""
        retry_after = self._rate.admit(user_id, trio.current_time())
        if retry_after is not None:
            self._stats.orders_rate_limited += 1
            raise rate_limited(retry_after, self._rate.rate)

    def _own(self, order_id: int, user_id: str) -> Order:
        order = self._engine.order(order_id)
        if order is None or order.user_id != user_id:
            raise order_not_found()
        return order

    def _placed(self, events: list[Event]) -> Any:
        accepted = events[0]
        assert type(accepted) is OrderAccepted
        return self._order_json(accepted.order_id)

    def _changed(self, events: list[Event]) -> Any:
        changed = events[0]
        assert type(changed) is OrderAmended or type(changed) is OrderCancelled
        return self._order_json(changed.order_id)

    def _order_json(self, order_id: int) -> Any:
        order = self._engine.order(order_id)
        assert order is not None
        return order_json(order, self._markets[order.symbol])

    async def _submit(
        self, command: Command, spec: MarketSpec | None, answer: Callable[[list[Event]], Any],
    ) -> Any:
        """``answer(events)``, once the command is durable and applied; a refusal raises.

        ``answer`` runs in the engine task right after the command was applied,
        before the next command of its batch: the answer shows the order as its
        own command left it, exactly as a WebSocket reply does.
        """
        result: list[Any] = []
        finished = trio.Event()

        def done(events: list[Event], error: Exception | None) -> None:
            try:
                if error is not None:
                    raise error
                first = events[0] if events else None
                if type(first) is OrderRejected:
                    amended = None
                    if type(command) is AmendOrder and first.order_id is not None:
                        amended = self._engine.order(first.order_id)
                    raise rejection(first.reason, command, spec, amended)
                result.append(answer(events))
            except Exception as exc:  # re-raised in the handler's task
                result.append(_Failed(exc))
            finally:
                finished.set()

        try:
            self._runtime.submit_nowait(command, done)
        except Busy as exc:
            raise RequestError(503, Code.BUSY, str(exc)) from None
        except Unavailable as exc:
            raise RequestError(503, exc.code, str(exc)) from None
        await finished.wait()
        [value] = result
        if type(value) is _Failed:
            if isinstance(value.error, Unavailable):
                raise RequestError(503, value.error.code, str(value.error))
            raise value.error
        return value


class _Failed:
    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


def _cancelled(events: list[Event]) -> Any:
    cancelled = [e.order_id for e in events if type(e) is OrderCancelled]
    return {"cancelled": cancelled, "count": len(cancelled)}


def _order_id(written: str) -> int:
    """The order id of a path (``/orders/{id}``); not a number is no order of yours."""
    if not (written.isascii() and written.isdigit() and len(written) <= 20):
        raise order_not_found()
    return order_id_of(int(written))
