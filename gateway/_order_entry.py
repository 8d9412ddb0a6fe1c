"""WebSocket order entry: one connection's requests in, engine commands out, replies in order.

Rules of this module:

* A request is validated by ``gateway/_schema.py`` exactly as REST validates
  its body: the same Structs, the same rules, the same error codes.
* A valid request becomes one engine command, queued with
  :meth:`EngineRuntime.submit_nowait` and never awaited. Its reply is built by
  the completion callback, in the engine task, once the command is durable
  in the journal and applied: a reply means what a REST answer means.
* Replies go out in request order. Every request takes a slot in a FIFO; a
  refused request fills its slot at once, a queued one when the engine is
  done with it, and filled slots at the head are sent. The engine completes
  one connection's commands in the order they were queued, so a reply never
  waits for a later request's.
* Bounded: at most ``max_in_flight`` slots. While they are all taken, the
  connection's reader stops reading (:attr:`OrderEntry.full`), so the TCP
  window slows the client down; nothing is dropped.
* Each user has one order budget (:class:`gateway._limits.OrderRate`) across
  REST and all of its connections; a request over it gets ``rate_limited``.
* Nothing here waits or touches a socket: the connection's shell
  (``_connection.py``) waits for room and owns the socket; replies are handed
  to it through ``send``, which never blocks.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any

import msgspec

from engine import (
    AmendOrder,
    CancelAllOrders,
    CancelOrder,
    Command,
    Engine,
    Event,
    MarketSpec,
    OrderAccepted,
    OrderAmended,
    OrderCancelled,
    OrderRejected,
    PlaceOrder,
)
from gateway._codes import Code
from gateway._frames import text_frame
from gateway._limits import OrderRate
from gateway._messages import order_json
from gateway._protocol import OrderAction, OrderRequest
from gateway._runtime import Busy, Runtime, Unavailable
from gateway._schema import (
    AmendBody,
    PlaceBody,
    RequestError,
    amend_command,
    convert_body,
    fail,
    market,
    order_id_of,
    order_not_found,
    place_command,
    rate_limited,
    rejection,
)
from gateway._stats import Stats

log = logging.getLogger("trade_engine.gateway")
_encode = msgspec.json.Encoder().encode

UNAUTHORIZED = RequestError(
    401, Code.UNAUTHORIZED, "order entry needs a token: connect to /ws?token=<JWT> "
    "(trade-engine token --user NAME prints one)")
_REPLY_TYPE = {
    OrderAction.PLACE: "placed", OrderAction.AMEND: "amended",
    OrderAction.CANCEL: "cancelled", OrderAction.CANCEL_ALL: "all_cancelled",
}


def error_frame(request_id: Any, error: RequestError) -> bytes:
    return text_frame(_encode({"type": "error", "id": request_id, **error.as_json()}))


class _Slot:
    __slots__ = ("frame",)

    def __init__(self) -> None:
        self.frame: bytes | None = None


class OrderEntry:
    """The order entry of one connection, created on its first order request.

    Args:
        user_id: the token's user; None on a connection opened without a token.
        runtime: the engine task's door.
        rate: the per-user order budget shared with REST.
        stats: counters to bump.
        send: writes one reply frame to the connection (never blocks).
        room: called when a slot frees up after :attr:`full` was true.
        max_in_flight: slots, i.e. requests waiting for their reply.
    """

    __slots__ = ("_engine", "_markets", "_max", "_placing", "_rate", "_room", "_runtime", "_send",
                 "_slots", "_stats", "user_id")

    def __init__(
        self, *, user_id: str | None, runtime: Runtime, rate: OrderRate, stats: Stats,
        send: Callable[[bytes], None], room: Callable[[], None], max_in_flight: int,
    ) -> None:
        self.user_id = user_id
        self._runtime = runtime
        self._engine: Engine = runtime.engine
        self._markets = self._engine.markets
        self._rate = rate
        self._stats = stats
        self._send = send
        self._room = room
        self._max = max_in_flight
        self._slots: deque[_Slot] = deque()
        self._placing: dict[str, list[Any]] = {}  # client_order_id -> [symbol, places in flight]

    @property
    def full(self) -> bool:
        return len(self._slots) >= self._max

    def handle(self, request: OrderRequest, now: float) -> None:
        """Take one request: refuse it now, or queue its command; never blocks."""
        slot = _Slot()
        self._slots.append(slot)
        self._stats.ws_order_requests += 1
        try:
            if self.user_id is None:
                raise UNAUTHORIZED
            retry_after = self._rate.admit(self.user_id, now)
            if retry_after is not None:
                self._stats.orders_rate_limited += 1
                raise rate_limited(retry_after, self._rate.rate)
            command, spec = self._command(request, self.user_id)
            try:
                self._runtime.submit_nowait(
                    command, partial(self._done, slot, request, command, spec))
            except Busy as exc:
                raise RequestError(503, Code.BUSY, str(exc)) from None
            except Unavailable as exc:
                raise RequestError(503, exc.code, str(exc)) from None
        except RequestError as error:
            slot.frame = error_frame(request.request_id, error)
            self._flush()
            return
        if type(command) is PlaceOrder and command.client_order_id is not None:
            placing = self._placing.setdefault(command.client_order_id, [command.symbol, 0])
            placing[1] += 1

    # ------------------------------------------------------------ requests

    def _command(self, request: OrderRequest, user_id: str) -> tuple[Command, MarketSpec | None]:
        fields, markets = request.fields, self._markets
        action = request.action
        if action is OrderAction.PLACE:
            order = fields.get("order")
            if order is None:
                fail(400, Code.MISSING_FIELD, "order is required: the fields of "
                     "POST /api/v1/orders, e.g. {\"symbol\": \"BTC/USDT\", ...}", "order")
            if not isinstance(order, dict):
                fail(400, Code.INVALID_MESSAGE, "order must be a JSON object with the fields of "
                     "POST /api/v1/orders", "order")
            place = place_command(convert_body(order, PlaceBody), user_id, markets)
            return place, markets[place.symbol]
        if action is OrderAction.CANCEL_ALL:
            symbol = fields.get("symbol")
            return CancelAllOrders(
                user_id=user_id, symbol=None if symbol is None else market(markets, symbol).symbol
            ), None
        order_id, client_order_id = self._named_order(fields)
        if action is OrderAction.CANCEL:
            return CancelOrder(user_id=user_id, order_id=order_id,
                               client_order_id=client_order_id), None
        spec = self._market_of(user_id, order_id, client_order_id)
        amounts = {k: v for k, v in fields.items() if k in ("price", "quantity")}
        return amend_command(convert_body(amounts, AmendBody), spec, user_id, order_id=order_id,
                             client_order_id=client_order_id), spec

    @staticmethod
    def _named_order(fields: dict[str, Any]) -> tuple[int, str | None]:
        """The order an amend or cancel names: by ``order_id`` or by ``client_order_id``."""
        order_id, client_order_id = fields.get("order_id"), fields.get("client_order_id")
        if (order_id is None) == (client_order_id is None):
            fail(400, Code.MISSING_FIELD, "name the order with order_id or with client_order_id "
                 "(one of them)", "order_id")
        if client_order_id is None:
            return order_id_of(order_id), None
        if not isinstance(client_order_id, str):
            fail(400, Code.INVALID_CLIENT_ORDER_ID, "client_order_id must be a string",
                 "client_order_id")
        return 0, client_order_id

    def _market_of(self, user_id: str, order_id: int, client_order_id: str | None) -> MarketSpec:
        """The market of the order an amend names (its amounts are read in its units).

        An order named by ``client_order_id`` may still be on its way to the
        engine from this connection: its place request says the market.
        """
        markets = self._markets
        if client_order_id is None:
            order = self._engine.order(order_id)
            if order is None or order.user_id != user_id:
                raise order_not_found()
            return markets[order.symbol]
        found = self._engine.open_order_by_client_id(user_id, client_order_id)
        if found is not None:
            return markets[found.symbol]
        placing = self._placing.get(client_order_id)
        if placing is None:
            raise order_not_found()
        return markets[placing[0]]

    # ------------------------------------------------------------- replies

    def _done(
        self, slot: _Slot, request: OrderRequest, command: Command, spec: MarketSpec | None,
        events: list[Event], error: Exception | None,
    ) -> None:
        """In the engine task, once the command is durable and applied: fill its slot."""
        if type(command) is PlaceOrder and command.client_order_id is not None:
            placing = self._placing[command.client_order_id]
            placing[1] -= 1
            if not placing[1]:
                del self._placing[command.client_order_id]
        try:
            slot.frame = self._reply(request, command, spec, events, error)
        except RequestError as refused:
            slot.frame = error_frame(request.request_id, refused)
        except Exception:  # the slot must be filled, or every later reply would wait forever
            log.exception("building the reply to %s failed", request.action)
            slot.frame = error_frame(request.request_id, RequestError(
                500, Code.INTERNAL_ERROR, "the command was applied, but its reply failed: "
                "check the order with GET /api/v1/orders"))
        self._flush()

    def _reply(
        self, request: OrderRequest, command: Command, spec: MarketSpec | None,
        events: list[Event], error: Exception | None,
    ) -> bytes:
        if error is not None:
            if isinstance(error, Unavailable):
                raise RequestError(503, error.code, str(error))
            raise RequestError(400, Code.INVALID_MESSAGE, str(error))
        first = events[0] if events else None
        if type(first) is OrderRejected:
            order = None
            if type(command) is AmendOrder and first.order_id is not None:
                order = self._engine.order(first.order_id)
            raise rejection(first.reason, command, spec, order)
        reply: dict[str, Any] = {"type": _REPLY_TYPE[request.action], "id": request.request_id}
        if type(command) is CancelAllOrders:
            cancelled = [e.order_id for e in events if type(e) is OrderCancelled]
            reply["cancelled"] = cancelled
            reply["count"] = len(cancelled)
        else:
            # The first event of a place, amend or cancel that went through is about its order.
            assert isinstance(first, OrderAccepted | OrderAmended | OrderCancelled)
            order = self._engine.order(first.order_id)
            reply["order"] = None if order is None else order_json(
                order, self._markets[order.symbol])
        return text_frame(_encode(reply))

    def _flush(self) -> None:
        """Send the filled slots at the head of the FIFO."""
        slots, was_full = self._slots, self.full
        while slots and slots[0].frame is not None:
            frame = slots.popleft().frame
            assert frame is not None
            self._send(frame)
        if was_full and not self.full:
            self._room()
