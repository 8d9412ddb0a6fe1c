"""Typed server messages: one msgspec Struct per ``type``, decoded as a tagged union.

Rules of this module:

* One Struct per message ``type`` of docs/protocol.md, tagged on ``type``, so
  that one :func:`decode` call both parses and dispatches. Fields the server
  may add later are ignored (never an error), a message ``type`` this client
  does not know decodes to :class:`UnknownMessage` instead of failing, so a
  newer server never breaks an older client.
* Amounts are :class:`decimal.Decimal`, never float: the server sends decimal
  strings and ``Decimal`` keeps every digit *and* the exponent, so
  ``format(Decimal("0.00600"), "f")`` gives back ``"0.00600"``, exactly the
  text the depth checksum is computed over.
* Timestamps are aware :class:`datetime.datetime` (UTC).
* :class:`Resynced` is not a server message: the client puts it into a
  subscription's iterator where messages may have been missed.
* No I/O, no trio: decoding is a pure function of the bytes.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

import msgspec


class Level(NamedTuple):
    """A depth level; quantity 0 in an update deletes the level. Prints as ``qty @ price``."""

    price: Decimal
    quantity: Decimal

    def __str__(self) -> str:
        return f"{self.quantity} @ {self.price}"


class _Message(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of every server message; ``type`` is the tag."""


# ------------------------------------------------------------------ replies


class Subscribed(_Message, frozen=True, kw_only=True, tag="subscribed"):
    """The reply to a subscribe: the channel's ``seq`` (the next message has ``seq + 1``)."""

    id: int | str | None = None
    stream: str
    symbol: str | None = None
    seq: int
    epoch: str | None = None
    """The server's history epoch (absent on servers without resume)."""
    resumed: bool = False
    """True when the server continues from the ``since`` this client sent."""


class Unsubscribed(_Message, frozen=True, kw_only=True, tag="unsubscribed"):
    """The reply to an unsubscribe."""

    id: int | str | None = None
    stream: str
    symbol: str | None = None


class Pong(_Message, frozen=True, kw_only=True, tag="pong"):
    """The reply to ``{"action": "ping"}``."""

    id: int | str | None = None


class Error(_Message, frozen=True, kw_only=True, tag="error"):
    """A refused request; ``code`` is stable, ``message`` names the fix, ``field`` the input."""

    id: int | str | None = None
    code: str
    message: str
    field: str | None = None


class Shutdown(_Message, frozen=True, kw_only=True, tag="shutdown"):
    """The server is shutting down; a close (1001) follows and the client reconnects."""

    reason: str


class Order(msgspec.Struct, frozen=True, kw_only=True):
    """An order as REST answers it and order entry replies with."""

    order_id: int
    client_order_id: str | None = None
    user_id: str
    symbol: str
    side: str
    order_type: str = msgspec.field(name="type")
    time_in_force: str
    post_only: bool = False
    self_trade_prevention: str = "none"
    price: Decimal | None = None
    quantity: Decimal
    filled_quantity: Decimal
    remaining_quantity: Decimal
    status: str
    created_at: datetime
    updated_at: datetime


class Placed(_Message, frozen=True, kw_only=True, tag="placed"):
    """The reply to ``place``: the order once it is durable."""

    id: int | str | None = None
    order: Order


class Amended(_Message, frozen=True, kw_only=True, tag="amended"):
    """The reply to ``amend``: the order after the amend."""

    id: int | str | None = None
    order: Order


class Cancelled(_Message, frozen=True, kw_only=True, tag="cancelled"):
    """The reply to ``cancel``: the order, status ``CANCELLED``."""

    id: int | str | None = None
    order: Order


class AllCancelled(_Message, frozen=True, kw_only=True, tag="all_cancelled"):
    """The reply to ``cancel_all``: the ids cancelled."""

    id: int | str | None = None
    cancelled: list[int]
    count: int


# ------------------------------------------------------------------ streams


class OrderUpdate(_Message, frozen=True, kw_only=True, tag="order_update"):
    """One change of one of your orders (stream ``orders``); fields by ``action``."""

    order_id: int
    client_order_id: str | None = None
    user_id: str
    symbol: str
    side: str | None = None
    action: str
    status: str
    order_type: str | None = None
    time_in_force: str | None = None
    price: Decimal | None = None
    quantity: Decimal | None = None
    filled_quantity: Decimal | None = None
    remaining_quantity: Decimal | None = None
    trade_id: int | None = None
    fill_price: Decimal | None = None
    fill_quantity: Decimal | None = None
    fee: Decimal | None = None
    fee_asset: str | None = None
    liquidity: str | None = None
    cancelled_quantity: Decimal | None = None
    priority_kept: bool | None = None
    command: str | None = None
    reason: str | None = None
    timestamp: datetime
    seq: int


class TradeExecuted(_Message, frozen=True, kw_only=True, tag="trade_executed"):
    """A public trade (stream ``trades``); user ids only when the operator allows."""

    trade_id: int
    symbol: str
    price: Decimal
    quantity: Decimal
    taker_side: str
    buyer_fee: Decimal
    seller_fee: Decimal
    fee_asset: str
    executed_at: datetime
    buyer_id: str | None = None
    seller_id: str | None = None
    seq: int


class OrderbookSnapshot(_Message, frozen=True, kw_only=True, tag="orderbook_snapshot"):
    """The top of book right after subscribing to ``orderbook``, at its ``seq``."""

    symbol: str
    best_bid: Decimal | None = None
    best_ask: Decimal | None = None
    bid_quantity: Decimal
    ask_quantity: Decimal
    spread: Decimal | None = None
    seq: int


class OrderbookUpdate(_Message, frozen=True, kw_only=True, tag="orderbook_update"):
    """A change of the best bid or ask or of their sizes (stream ``orderbook``)."""

    symbol: str
    best_bid: Decimal | None = None
    best_ask: Decimal | None = None
    bid_quantity: Decimal
    ask_quantity: Decimal
    spread: Decimal | None = None
    timestamp: datetime
    seq: int


class DepthSnapshot(_Message, frozen=True, kw_only=True, tag="depth_snapshot"):
    """The depth window right after subscribing to ``depth``, at its ``seq``."""

    symbol: str
    seq: int
    bids: list[Level]
    asks: list[Level]
    checksum: int


class DepthUpdate(_Message, frozen=True, kw_only=True, tag="depth_update"):
    """The levels of the depth window one command changed (quantity 0: removed)."""

    symbol: str
    seq: int
    bids: list[Level]
    asks: list[Level]
    checksum: int
    timestamp: datetime


class UnknownMessage(msgspec.Struct, frozen=True, kw_only=True):
    """A message whose ``type`` this client does not know (a newer server); kept raw."""

    type: str | None
    raw: dict[str, Any]


class Resynced(msgspec.Struct, frozen=True, kw_only=True):
    """Put into a subscription by the client: messages may have been missed here.

    What follows starts afresh from the server's current state: for ``depth``
    and ``orderbook`` a new snapshot comes next. ``reason`` is one of
    :data:`RESYNC_REASONS`; ``last_seq`` is the last seq this subscription had
    delivered before (None if none), ``seq`` the new subscription's.
    """

    stream: str
    symbol: str | None
    reason: str
    last_seq: int | None
    seq: int


RESYNC_REASONS = {
    "resume_unavailable": "the server no longer holds the missed messages (or restarted "
                          "without its history); subscribed afresh",
    "no_history": "the server offers no resume (no epoch in its reply); subscribed afresh",
    "checksum_mismatch": "the local depth book disagreed with the server's checksum; "
                         "subscribed afresh for a new snapshot",
    "overflow": "the application's buffer was full before a snapshot could be kept; "
                "subscribed afresh",
}

Reply = Subscribed | Unsubscribed | Pong | Error | Placed | Amended | Cancelled | AllCancelled
StreamMessage = (OrderUpdate | TradeExecuted | OrderbookSnapshot | OrderbookUpdate
                 | DepthSnapshot | DepthUpdate)
ServerMessage = Reply | StreamMessage | Shutdown
Delivered = StreamMessage | Resynced
"""What a subscription's iterator yields."""

_decoder: msgspec.json.Decoder[ServerMessage] = msgspec.json.Decoder(ServerMessage)
_raw_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder()
_TAGS = frozenset(
    kind.__struct_config__.tag for kind in ServerMessage.__args__
)


class MalformedMessage(ValueError):
    """The server sent something that is not a JSON object of a known shape."""


def decode(data: str | bytes) -> ServerMessage | UnknownMessage:
    """One server message, typed.

    Raises:
        MalformedMessage: not JSON, or a known ``type`` with missing or mistyped
            fields (a server bug or an incompatible server; the text says which).
    """
    try:
        return _decoder.decode(data)
    except msgspec.ValidationError as exc:
        try:
            raw = _raw_decoder.decode(data)
        except msgspec.DecodeError:
            raise MalformedMessage(str(exc)) from None
        if isinstance(raw, dict) and raw.get("type") not in _TAGS:
            kind = raw.get("type")
            return UnknownMessage(type=kind if isinstance(kind, str) else None, raw=raw)
        raise MalformedMessage(f"{exc}: {str(data)[:200]}") from None
    except msgspec.DecodeError as exc:
        raise MalformedMessage(f"not JSON ({exc}): {str(data)[:200]}") from None


_encoder = msgspec.json.Encoder()


def encode(request: dict[str, Any]) -> bytes:
    """A client request as JSON bytes."""
    return _encoder.encode(request)
