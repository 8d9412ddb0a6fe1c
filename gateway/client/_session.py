"""The client's protocol state, without any network: requests, replies, channels, the link.

Rules of this module (the sans-I/O core; ``_client.py`` and ``_link.py`` are its
trio shell):

* Inputs are method calls (the application subscribes or places an order, a
  message arrives, the connection is made or lost); outputs are plain values
  the shell acts on (``_channel.Send``, ``Deliver``, ``Resolve``, ``Fail``).
  No trio, no clock, no socket: every transition is unit-tested by feeding
  messages (tests/client/test_session_unit.py).
* Request ids are integers that never repeat within a session, so a reply can
  only ever match its own request; the application's subscribe keeps its id
  across reconnects, its subscription is answered by whichever connection
  subscribes first.
* Each subscription's own life (seq, resume, resync, depth book, pause) is a
  ``_channel.Channel``; this module routes stream messages to channels and
  replies to requests.
* Order requests in flight when the connection is lost resolve to
  :class:`OutcomeUnknown`; they are never sent again. Order requests made
  between connections raise :class:`NotConnected` at once.
* ``trades`` of one symbol and of every symbol cannot share a connection:
  their messages look the same and only the (per-channel) seq would tell them
  apart, so the second is refused locally.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from typing import Any

import attrs

from gateway.client._book import OrderBook
from gateway.client._channel import (
    SNAPSHOT_STREAMS,
    Channel,
    Deliver,
    Fail,
    Key,
    Output,
    Resolve,
    Send,
    Status,
    channel_request,
    name,
)
from gateway.client._errors import ConnectionLost, NotConnected, OutcomeUnknown, RequestError
from gateway.client._messages import (
    AllCancelled,
    Amended,
    Cancelled,
    DepthSnapshot,
    DepthUpdate,
    Error,
    OrderbookSnapshot,
    OrderbookUpdate,
    OrderUpdate,
    Placed,
    Pong,
    ServerMessage,
    StreamMessage,
    Subscribed,
    TradeExecuted,
    UnknownMessage,
    Unsubscribed,
)

__all__ = ["Deliver", "Fail", "Key", "Output", "Resolve", "Send", "Session", "Status"]

log = logging.getLogger("trade_engine.client")

STREAMS = ("orders", "trades", "orderbook", "depth")


@attrs.define
class _Pending:
    kind: str  # subscribe, unsubscribe, ping, order
    request: dict[str, Any]
    key: Key | None = None
    awaited: bool = False


class Session:
    """All the client's protocol state for one ``connect()``, across its reconnects.

    Args:
        has_room: whether subscription ``key``'s buffer can take one more item.
    """

    def __init__(self, has_room: Callable[[Key], bool] = lambda key: True) -> None:
        self.connected = False
        self._has_room = has_room
        self._ids = itertools.count(1)
        self._channels: dict[Key, Channel] = {}
        self._pending: dict[int, _Pending] = {}

    # ------------------------------------------------------------ reading

    def book(self, key: Key) -> OrderBook | None:
        channel = self._channels.get(key)
        return None if channel is None else channel.book

    def status(self, key: Key) -> Status | None:
        channel = self._channels.get(key)
        return None if channel is None else channel.status

    # ---------------------------------------------- the application's calls

    def subscribe(self, stream: str, symbol: str | None = None) -> tuple[Key, int, list[Output]]:
        """Start a subscription; ``Resolve(request_id, Subscribed | error)`` answers it.

        Raises:
            ValueError: an unknown stream, a channel already subscribed here, or
                trades of a symbol next to trades of every symbol.
        """
        if stream not in STREAMS:
            raise ValueError(f"unknown stream {stream!r}: use one of {', '.join(STREAMS)}")
        if stream in SNAPSHOT_STREAMS and symbol is None:
            raise ValueError(f"stream {stream!r} needs a symbol, e.g. 'BTC/USDT'")
        if stream == "orders" and symbol is not None:
            raise ValueError("the orders stream takes no symbol (it is yours, every market)")
        key: Key = (stream, symbol)
        if key in self._channels:
            raise ValueError(f"already subscribed to {name(key)} on this connection: "
                             "iterate over the existing subscription")
        if stream == "trades" and any(k[0] == "trades" and (k[1] is None) != (symbol is None)
                                      for k in self._channels):
            raise ValueError(
                "trades of one symbol and trades of every symbol cannot share a connection "
                "(their messages look alike): filter the all-symbols stream, or connect twice")
        waiter = next(self._ids)
        channel = Channel(stream, symbol, waiter=waiter)
        if stream == "depth":
            assert symbol is not None
            channel.book = OrderBook(symbol)
        self._channels[key] = channel
        self._pending[waiter] = _Pending("subscribe", {}, key, awaited=True)
        out: list[Output] = []
        if self.connected:
            channel.subscribe(self._internal, out)
        return key, waiter, out

    def unsubscribe(self, key: Key) -> tuple[int | None, list[Output]]:
        """End a subscription; the id of the unsubscribe to await, if one was sent."""
        channel = self._channels.get(key)
        if channel is None:
            return None, []
        if channel.waiter is not None:
            self._pending.pop(channel.waiter, None)
        if self.connected and channel.status in (Status.SUBSCRIBING, Status.SNAPSHOT,
                                                 Status.ACTIVE):
            channel.status = Status.CLOSING
            request_id = next(self._ids)
            request = channel_request("unsubscribe", request_id, key)
            self._pending[request_id] = _Pending("unsubscribe", request, key, awaited=True)
            return request_id, [Send(request)]
        del self._channels[key]
        return None, []

    def order(self, action: str, fields: dict[str, Any]) -> tuple[int, list[Output]]:
        """An order-entry request (place, amend, cancel, cancel_all) to send now.

        Raises:
            NotConnected: between connections; nothing is sent, nothing queued.
        """
        if not self.connected:
            raise NotConnected(f"not connected: {action} was not sent (the client is "
                               "reconnecting); await client.wait_connected() and retry")
        request_id = next(self._ids)
        request = {"action": action, "id": request_id, **fields}
        self._pending[request_id] = _Pending("order", request, awaited=True)
        return request_id, [Send(request)]

    def ping(self) -> tuple[int, list[Output]]:
        if not self.connected:
            raise NotConnected("not connected: the ping was not sent")
        request_id = next(self._ids)
        request = {"action": "ping", "id": request_id}
        self._pending[request_id] = _Pending("ping", request, awaited=True)
        return request_id, [Send(request)]

    def forget(self, request_id: int) -> None:
        """The application stopped waiting for ``request_id`` (its reply will be dropped)."""
        pending = self._pending.get(request_id)
        if pending is not None:
            pending.awaited = False

    def pause(self, key: Key) -> list[Output]:
        """The subscription's buffer is full: unsubscribe until :meth:`resume`."""
        out: list[Output] = []
        channel = self._channels.get(key)
        if channel is not None:
            channel.pause(self._internal, self.connected, out)
        return out

    def resume(self, key: Key) -> list[Output]:
        """The buffer of a paused subscription was read: subscribe again ``since`` its seq."""
        channel = self._channels.get(key)
        out: list[Output] = []
        if channel is None or channel.status is not Status.PAUSED:
            return out
        if self.connected:
            channel.subscribe(self._internal, out)
        else:
            channel.status = Status.OFFLINE
        return out

    # ----------------------------------------------------------- the link

    def connection_made(self) -> list[Output]:
        """A new connection is open: (re)subscribe everything, ``since`` where possible."""
        self.connected = True
        out: list[Output] = []
        for channel in list(self._channels.values()):
            if channel.status is Status.OFFLINE:
                channel.subscribe(self._internal, out)
        return out

    def connection_lost(self, reason: str) -> list[Output]:
        """Resolve what waited on the old connection; subscriptions wait for the next."""
        self.connected = False
        out: list[Output] = []
        for request_id, pending in list(self._pending.items()):
            if pending.kind == "subscribe" and pending.awaited:
                continue  # the application's subscribe waits for the next connection
            del self._pending[request_id]
            if pending.kind == "order":
                out.append(Resolve(request_id, OutcomeUnknown(pending.request, reason)))
            elif pending.kind == "ping" and pending.awaited:
                out.append(Resolve(request_id, ConnectionLost(f"connection lost: {reason}")))
            elif pending.kind == "unsubscribe" and pending.awaited:
                out.append(Resolve(request_id, None))
        for key, channel in list(self._channels.items()):
            if channel.status is Status.CLOSING:
                del self._channels[key]
            else:
                channel.lost()
        return out

    # ----------------------------------------------------------- messages

    def receive(self, message: ServerMessage | UnknownMessage) -> list[Output]:
        """One message from the server."""
        out: list[Output] = []
        if isinstance(message, UnknownMessage):
            log.debug("ignoring a message of unknown type %r", message.type)
        elif isinstance(message, (TradeExecuted, OrderUpdate, OrderbookSnapshot,
                                  OrderbookUpdate, DepthSnapshot, DepthUpdate)):
            key = self._route(message)
            channel = self._channels.get(key)
            if channel is not None and not channel.receive(
                    message, self._has_room(key), self._internal, self.connected, out):
                del self._channels[key]
        elif isinstance(message, (Subscribed, Unsubscribed, Pong, Error, Placed, Amended,
                                  Cancelled, AllCancelled)):
            self._reply(message, out)
        else:
            log.info("the server says: %s", message.reason)  # shutdown; a close follows
        return out

    def _reply(self, message: Any, out: list[Output]) -> None:
        request_id = message.id
        pending = self._pending.pop(request_id, None) if isinstance(request_id, int) else None
        if pending is None:
            if isinstance(message, Error):
                log.warning("the server reports an error: %s: %s", message.code, message.message)
            return
        if pending.kind == "subscribe":
            self._subscribe_reply(request_id, pending, message, out)
        elif pending.kind == "unsubscribe":
            channel = self._channels.get(pending.key) if pending.key else None
            if channel is not None and channel.status is Status.CLOSING:
                del self._channels[channel.key]
            if pending.awaited:
                out.append(Resolve(request_id, None))
        elif pending.awaited or pending.kind == "order":  # an order's slot ends with its reply
            if isinstance(message, Error):
                out.append(Resolve(request_id, RequestError(message.code, message.message,
                                                            message.field)))
            else:
                out.append(Resolve(request_id, message))

    def _subscribe_reply(self, request_id: int, pending: _Pending, message: Any,
                         out: list[Output]) -> None:
        assert pending.key is not None
        channel = self._channels.get(pending.key)
        if channel is None or channel.request_id != request_id or \
                channel.status is not Status.SUBSCRIBING:
            return  # a subscription since abandoned
        if isinstance(message, Error):
            error = channel.refused(message, self._internal, out)
            if error is None:
                return  # subscribing again
            del self._channels[pending.key]
            if channel.waiter is not None:
                self._pending.pop(channel.waiter, None)
                out.append(Resolve(channel.waiter, error))
            else:
                log.error("%s: the server refused to subscribe again: %s", name(pending.key),
                          error)
                out.append(Fail(pending.key, error))
            return
        if not isinstance(message, Subscribed):
            return
        channel.subscribed(message, out)
        if channel.waiter is not None:
            self._pending.pop(channel.waiter, None)
            out.append(Resolve(channel.waiter, message))
            channel.waiter = None

    def _route(self, message: StreamMessage) -> Key:
        if isinstance(message, OrderUpdate):
            return ("orders", None)
        if isinstance(message, TradeExecuted):
            own = ("trades", message.symbol)
            return own if own in self._channels else ("trades", None)
        if isinstance(message, (OrderbookSnapshot, OrderbookUpdate)):
            return ("orderbook", message.symbol)
        return ("depth", message.symbol)

    def _internal(self, kind: str, key: Key) -> int:
        """A request the session itself makes (a resubscription): nobody awaits it."""
        request_id = next(self._ids)
        self._pending[request_id] = _Pending(kind, {}, key)
        return request_id
