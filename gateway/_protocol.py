"""The WebSocket control protocol, without any network: parse, validate, reply.

Rules of this module:

* A client message is a JSON object with an ``action`` and an optional ``id``.
  :func:`parse_request` turns text into a :class:`Subscribe`,
  :class:`Unsubscribe` or :class:`Ping` (``stream``, ``symbol``), or an
  :class:`OrderRequest` (``place``, ``amend``, ``cancel``, ``cancel_all``,
  whose fields ``gateway/_schema.py`` validates, as it does for REST), or
  raises :class:`ProtocolError` carrying a stable code and the request ``id``
  when one could be read.
* A *channel* is what a subscription points at and what the fan-out encodes
  once: ``("trades", "BTC/USDT")``, ``("trades", None)`` for every symbol,
  ``("orderbook", symbol)``, ``("depth", symbol)``, ``("orders", user_id)``.
  Each channel numbers its messages; ``seq`` rises by exactly one.
* :class:`Subscriptions` is a connection's own set of channels, with its limit.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from enum import StrEnum
from typing import Any

import attrs
import msgspec

from gateway._schema import normalize_symbol, unknown_symbol_message


class Stream(StrEnum):
    ORDERS = "orders"
    TRADES = "trades"
    ORDERBOOK = "orderbook"
    DEPTH = "depth"

    # A channel is a (stream, key) tuple hashed on every stream item. Enum's own hash is
    # a Python call (on the name); the value's hash is C and agrees with str equality.
    __hash__ = str.__hash__


class ErrorCode(StrEnum):
    """Stable error codes of ``{"type": "error"}`` replies."""

    INVALID_JSON = "invalid_json"
    INVALID_MESSAGE = "invalid_message"
    UNKNOWN_ACTION = "unknown_action"
    UNKNOWN_STREAM = "unknown_stream"
    MISSING_SYMBOL = "missing_symbol"
    UNKNOWN_SYMBOL = "unknown_symbol"
    UNAUTHORIZED = "unauthorized"
    TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"
    ALREADY_SUBSCRIBED = "already_subscribed"
    NOT_SUBSCRIBED = "not_subscribed"
    MESSAGE_TOO_LARGE = "message_too_large"
    RATE_LIMITED = "rate_limited"
    UNKNOWN_FIELD = "unknown_field"
    RESUME_UNAVAILABLE = "resume_unavailable"


Channel = tuple[Stream, str | None]

# Streams whose channel is per symbol and that need one.
_NEEDS_SYMBOL = frozenset({Stream.ORDERBOOK, Stream.DEPTH})
_ORDER_ACTIONS = frozenset(("place", "amend", "cancel", "cancel_all"))
_MAX_ID_LENGTH = 128


class ProtocolError(Exception):
    """A client message we refuse; answered with an error reply, never fatal.

    ``code`` is an :class:`ErrorCode`, or for order entry one of the REST codes
    (``gateway/_schema.py``); ``field`` names the offending input, if any.
    """

    def __init__(
        self, code: str, message: str, request_id: Any = None, field: str | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id
        self.field = field


@attrs.frozen
class Since:
    """Where a resuming subscription continues: after message ``seq`` of ``epoch``."""

    epoch: str
    seq: int


@attrs.frozen
class Subscribe:
    stream: Stream
    symbol: str | None
    request_id: Any
    since: Since | None = None


@attrs.frozen
class Unsubscribe:
    stream: Stream
    symbol: str | None
    request_id: Any


@attrs.frozen
class Ping:
    request_id: Any


class OrderAction(StrEnum):
    PLACE = "place"
    AMEND = "amend"
    CANCEL = "cancel"
    CANCEL_ALL = "cancel_all"


@attrs.frozen
class OrderRequest:
    """An order-entry request; ``fields`` are the message's other fields, unvalidated."""

    action: OrderAction
    request_id: Any
    fields: dict[str, Any]


Request = Subscribe | Unsubscribe | Ping | OrderRequest

# The fields each order-entry action takes besides ``action`` and ``id``.
_ORDER_FIELDS = {
    OrderAction.PLACE: frozenset({"order"}),
    OrderAction.AMEND: frozenset({"order_id", "client_order_id", "price", "quantity"}),
    OrderAction.CANCEL: frozenset({"order_id", "client_order_id"}),
    OrderAction.CANCEL_ALL: frozenset({"symbol"}),
}
_ACTIONS = "subscribe, unsubscribe, ping, place, amend, cancel or cancel_all"

_decode = msgspec.json.Decoder().decode


def parse_request(text: str | bytes, *, symbols: Collection[str]) -> Request:
    """Parse one client message.

    Raises:
        ProtocolError: with the code to answer and the ``id`` if it was readable.
    """
    try:
        message = _decode(text)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        raise ProtocolError(ErrorCode.INVALID_JSON, "message is not valid JSON") from None
    if not isinstance(message, dict):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "message must be a JSON object")
    request_id = message.get("id")
    if request_id is not None and not (
        (isinstance(request_id, int) and not isinstance(request_id, bool))
        or (isinstance(request_id, str) and len(request_id) <= _MAX_ID_LENGTH)
    ):
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE, "id must be an integer or a short string"
        )
    action = message.get("action")
    if isinstance(action, str) and action in _ORDER_ACTIONS:
        order_action = OrderAction(action)
        fields = {k: v for k, v in message.items() if k not in {"action", "id"}}
        for name in fields:
            if name not in _ORDER_FIELDS[order_action]:
                raise ProtocolError(ErrorCode.UNKNOWN_FIELD, f"unknown field {name!r} for "
                                    f"{action}", request_id, str(name))
        return OrderRequest(order_action, request_id, fields)
    unknown = set(message) - {"action", "stream", "symbol", "id", "since"}
    if unknown:
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE, f"unknown fields: {sorted(map(str, unknown))}", request_id
        )
    if action == "ping":
        return Ping(request_id)
    if action not in ("subscribe", "unsubscribe"):
        raise ProtocolError(ErrorCode.UNKNOWN_ACTION, f"action must be {_ACTIONS}", request_id)
    raw_stream = message.get("stream")
    try:
        stream = Stream(str(raw_stream))
    except ValueError:
        raise ProtocolError(
            ErrorCode.UNKNOWN_STREAM,
            "stream must be orders, trades, orderbook or depth", request_id,
        ) from None
    symbol = message.get("symbol")
    if symbol is not None:
        if not isinstance(symbol, str) or normalize_symbol(symbol) not in symbols:
            raise ProtocolError(ErrorCode.UNKNOWN_SYMBOL,
                                unknown_symbol_message(symbol, list(symbols)), request_id,
                                "symbol")
        symbol = normalize_symbol(symbol)
    if stream in _NEEDS_SYMBOL and symbol is None:
        raise ProtocolError(
            ErrorCode.MISSING_SYMBOL, f"the {stream} stream needs a symbol", request_id
        )
    if stream is Stream.ORDERS and symbol is not None:
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE, "the orders stream takes no symbol", request_id
        )
    if action == "unsubscribe":
        if "since" in message:
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, "since belongs to subscribe",
                                request_id, "since")
        return Unsubscribe(stream, symbol, request_id)
    since = message.get("since")
    return Subscribe(stream, symbol, request_id,
                     None if since is None else _since(since, request_id))


def _since(value: object, request_id: Any) -> Since:
    """``{"epoch": "<subscribed.epoch>", "seq": <last seq received>}``."""
    if (isinstance(value, dict) and set(value) == {"epoch", "seq"}
            and isinstance(value["epoch"], str) and len(value["epoch"]) <= _MAX_ID_LENGTH
            and isinstance(value["seq"], int) and not isinstance(value["seq"], bool)
            and value["seq"] >= 0):
        return Since(value["epoch"], value["seq"])
    raise ProtocolError(
        ErrorCode.INVALID_MESSAGE, 'since must be {"epoch": <the epoch of your subscribed '
        'reply>, "seq": <the last seq you received>}', request_id, "since")


def channel_of(
    stream: Stream, symbol: str | None, user_id: str | None, request_id: Any = None
) -> Channel:
    """The channel a (stream, symbol) subscription reads; ``orders`` is per user.

    Raises:
        ProtocolError: ``unauthorized`` for ``orders`` without an authenticated user.
    """
    if stream is Stream.ORDERS:
        if user_id is None:
            raise ProtocolError(
                ErrorCode.UNAUTHORIZED, "the orders stream needs a token (?token=...)",
                request_id,
            )
        return (stream, user_id)
    return (stream, symbol)


@attrs.define
class Subscriptions:
    """The channels one connection holds. Owned by that connection."""

    limit: int
    _channels: dict[Channel, None] = attrs.field(factory=dict)

    def add(self, channel: Channel, request_id: Any = None) -> None:
        if channel in self._channels:
            raise ProtocolError(ErrorCode.ALREADY_SUBSCRIBED, "already subscribed", request_id)
        if len(self._channels) >= self.limit:
            raise ProtocolError(
                ErrorCode.TOO_MANY_SUBSCRIPTIONS,
                f"at most {self.limit} subscriptions per connection", request_id,
            )
        self._channels[channel] = None

    def remove(self, channel: Channel, request_id: Any = None) -> None:
        if channel not in self._channels:
            raise ProtocolError(ErrorCode.NOT_SUBSCRIBED, "not subscribed", request_id)
        del self._channels[channel]

    def __iter__(self) -> Iterator[Channel]:
        return iter(list(self._channels))

    def __len__(self) -> int:
        return len(self._channels)

    def __contains__(self, channel: object) -> bool:
        return channel in self._channels


def reply(kind: str, request_id: Any, **fields: Any) -> dict[str, Any]:
    """A reply to a request: ``subscribed``, ``unsubscribed`` or ``pong``."""
    return {"type": kind, "id": request_id, **fields}


def error_reply(error: ProtocolError) -> dict[str, Any]:
    return {
        "type": "error", "id": error.request_id, "code": str(error.code),
        "message": error.message, "field": error.field,
    }
