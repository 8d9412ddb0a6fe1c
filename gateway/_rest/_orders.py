"""The order endpoints of ``/api/v1``: place, amend, cancel, cancel all, and the user's orders.

Rules of this module:

* Every rule about a request body lives in ``gateway/_schema.py``; these
  handlers only read the body, call the schema and the engine task, and
  shape the answer. WebSocket order entry (``gateway/_order_entry.py``) calls
  the same functions in the same order: the user's order rate, then the
  order named (404), then the body, so that one input gets one error code on
  both transports.
* An answer is sent only after :meth:`EngineRuntime.submit` returned, that is
  after the command is durable in the journal and applied.
* Another user's order is indistinguishable from a missing one: 404
  ``order_not_found``, before any command is queued.
"""

from __future__ import annotations

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
    OrderCancelled,
    OrderRejected,
)
from gateway._limits import OrderRate
from gateway._messages import order_json
from gateway._rest._api import Answer, Call
from gateway._runtime import Busy, EngineRuntime, Unavailable
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

    def __init__(self, runtime: EngineRuntime, *, order_rate: OrderRate, stats: Stats) -> None:
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
        accepted = (await self._submit(command, spec))[0]
        assert type(accepted) is OrderAccepted
        return 201, order_json(self._own(accepted.order_id, user_id), spec)

    async def amend(self, call: Call) -> Answer:
        raw = await call.body()
        user_id = call.user_id
        self._admit(user_id)
        order_id = _order_id(call.param)
        spec = self._markets[self._own(order_id, user_id).symbol]
        command = amend_command(decode_body(raw, AmendBody), spec, user_id, order_id=order_id)
        await self._submit(command, spec)
        return 200, order_json(self._own(order_id, user_id), spec)

    async def cancel(self, call: Call) -> Answer:
        user_id = call.user_id
        self._admit(user_id)
        order_id = _order_id(call.param)
        spec = self._markets[self._own(order_id, user_id).symbol]
        await self._submit(CancelOrder(order_id=order_id, user_id=user_id), spec)
        return 200, order_json(self._own(order_id, user_id), spec)

    async def cancel_all(self, call: Call) -> Answer:
        user_id = call.user_id
        self._admit(user_id)
        symbol = call.query("symbol")
        spec = None if symbol is None else market(self._markets, symbol)
        events = await self._submit(
            CancelAllOrders(user_id=user_id, symbol=None if spec is None else spec.symbol), spec)
        cancelled = [e.order_id for e in events if type(e) is OrderCancelled]
        return 200, {"cancelled": cancelled, "count": len(cancelled)}

    async def get_order(self, call: Call) -> Answer:
        order = self._own(_order_id(call.param), call.user_id)
        return 200, order_json(order, self._markets[order.symbol])

    async def list_orders(self, call: Call) -> Answer:
        symbol = call.query("symbol")
        only = None if symbol is None else market(self._markets, symbol).symbol
        status = call.query("status")
        if status is not None and status.upper() not in _OPEN_STATUSES:
            raise RequestError(400, "invalid_status", "this list holds open orders: status is "
                               "OPEN or PARTIALLY_FILLED", "status")
        markets = self._markets
        orders = [order_json(o, markets[o.symbol])
                  for o in self._engine.open_orders(call.user_id, only)]
        if status is not None:
            orders = [o for o in orders if o["status"] == status.upper()]
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

    async def _submit(self, command: Command, spec: MarketSpec | None) -> list[Event]:
        """The command's events once durable and applied; an engine refusal raises."""
        try:
            events = await self._runtime.submit(command)
        except Busy as exc:
            raise RequestError(503, "busy", str(exc)) from None
        except Unavailable as exc:
            raise RequestError(503, "journal_unavailable", str(exc)) from None
        first = events[0] if events else None
        if type(first) is OrderRejected:
            amended = None
            if type(command) is AmendOrder and first.order_id is not None:
                amended = self._engine.order(first.order_id)
            raise rejection(first.reason, command, spec, amended)
        return events


def _order_id(written: str) -> int:
    """The order id of a path (``/orders/{id}``); not a number is no order of yours."""
    if not (written.isascii() and written.isdigit() and len(written) <= 20):
        raise order_not_found()
    return order_id_of(int(written))
