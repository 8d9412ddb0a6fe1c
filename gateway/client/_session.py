"""The client's protocol state, without any network: subscriptions, resume, reply matching.

Rules of this module (the sans-I/O core; ``_client.py`` is its trio shell):

* Inputs are method calls (the application subscribes, a message arrives, the
  connection is made or lost); outputs are plain values the shell acts on:
  :class:`Send` a request, :class:`Deliver` an item to a subscription,
  :class:`Resolve` a request someone awaits, :class:`Fail` a subscription.
  No trio, no clock, no socket: every transition is unit-tested by feeding
  messages.
* Each subscription is one channel ``(stream, symbol)`` with a :class:`Status`;
  the transitions are all in :class:`Session` below. Request ids are integers
  that never repeat within a session, so a reply can only match its request.
* Seq: a subscription remembers the ``epoch`` of its ``subscribed`` reply and
  the seq of the last message it delivered. A message at or below it is a
  duplicate and dropped; one past ``seq + 1`` is a gap: the client
  unsubscribes and subscribes again ``since`` that seq. After a reconnect,
  every subscription is resumed the same way.
* Resume: ``resumed: true`` continues seamlessly (no snapshot, the depth book
  goes on). ``resume_unavailable``, or a server whose replies carry no epoch,
  means a fresh subscription, announced to the application by a
  :class:`Resynced` item (and a warning in the log) before the new stream
  starts; depth and orderbook then start with a snapshot.
* Depth: every ``depth`` subscription keeps an :class:`OrderBook` and checks
  each checksum; a mismatch resubscribes without ``since`` (resuming a wrong
  book would keep it wrong). Three mismatches in a row fail the subscription
  with :class:`ChecksumFailed` instead of looping.
* Backpressure: before a stream message is applied, the shell's ``has_room``
  says whether the subscription's buffer can take it. When it cannot, the
  message is dropped *unapplied*, the subscription is paused (unsubscribed),
  and :meth:`Session.resume` later subscribes ``since`` the last delivered
  seq, so a slow application loses nothing the server's history still holds.
* Order requests in flight when the connection is lost resolve to
  :class:`OutcomeUnknown`; they are never sent again.
* ``trades`` of one symbol and of every symbol cannot share a connection:
  their messages look the same and only the (per-channel) seq would tell them
  apart, so the second is refused locally.
"""

from __future__ import annotations

import enum
import itertools
import logging
from collections.abc import Callable
from typing import Any

import attrs

from gateway.client._book import BookError, ChecksumMismatch, OrderBook
from gateway.client._errors import (
    ChecksumFailed,
    ClientError,
    ConnectionLost,
    NotConnected,
    OutcomeUnknown,
    RequestError,
    SubscriptionError,
)
from gateway.client._messages import (
    RESYNC_REASONS,
    AllCancelled,
    Amended,
    Cancelled,
    Delivered,
    DepthSnapshot,
    DepthUpdate,
    Error,
    OrderbookSnapshot,
    OrderbookUpdate,
    OrderUpdate,
    Placed,
    Pong,
    Resynced,
    ServerMessage,
    StreamMessage,
    Subscribed,
    TradeExecuted,
    UnknownMessage,
    Unsubscribed,
)

log = logging.getLogger("trade_engine.client")

Key = tuple[str, str | None]
"""A channel: ``(stream, symbol)``; symbol None for ``orders`` and all-symbol ``trades``."""

STREAMS = ("orders", "trades", "orderbook", "depth")
_SNAPSHOT_STREAMS = frozenset({"orderbook", "depth"})
MAX_MISMATCHES = 3


class Status(enum.Enum):
    SUBSCRIBING = "subscribing"  # subscribe sent, reply awaited
    SNAPSHOT = "snapshot"  # subscribed afresh to depth/orderbook, the snapshot awaited
    ACTIVE = "active"
    PAUSED = "paused"  # unsubscribed: the application's buffer was full
    OFFLINE = "offline"  # no connection: subscribed again on the next
    CLOSING = "closing"  # the application unsubscribed; its reply awaited


# ---------------------------------------------------------------- outputs


@attrs.frozen
class Send:
    request: dict[str, Any]


@attrs.frozen
class Deliver:
    key: Key
    item: Delivered


@attrs.frozen
class Resolve:
    """The answer to request ``request_id``: a reply message, or an error to raise."""

    request_id: int
    result: ServerMessage | ClientError | None


@attrs.frozen
class Fail:
    """The subscription ``key`` is over: its iterator raises ``error``."""

    key: Key
    error: ClientError


Output = Send | Deliver | Resolve | Fail


@attrs.define
class _Sub:
    stream: str
    symbol: str | None
    status: Status
    request_id: int = 0  # the subscribe whose reply is awaited
    waiter: int | None = None  # the application's subscribe() waiting for the first reply
    epoch: str | None = None
    seq: int | None = None  # the last seq delivered (or of the fresh subscribed reply)
    resumable: bool = False  # seq describes what the application holds
    since_sent: bool = False
    resync_reason: str | None = None
    started: bool = False  # a first subscribed reply was seen
    announced: bool = False  # a Resynced was delivered and nothing since
    mismatches: int = 0
    book: OrderBook | None = None

    def since(self) -> dict[str, Any] | None:
        if self.resumable and self.epoch is not None and self.seq is not None:
            return {"epoch": self.epoch, "seq": self.seq}
        return None


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
        self._subs: dict[Key, _Sub] = {}
        self._pending: dict[int, _Pending] = {}

    # ------------------------------------------------------------ reading

    def book(self, key: Key) -> OrderBook | None:
        sub = self._subs.get(key)
        return None if sub is None else sub.book

    def status(self, key: Key) -> Status | None:
        sub = self._subs.get(key)
        return None if sub is None else sub.status

    @property
    def in_flight(self) -> int:
        return sum(1 for p in self._pending.values() if p.kind == "order")

    # ---------------------------------------------- the application's calls

    def subscribe(self, stream: str, symbol: str | None = None) -> tuple[Key, int, list[Output]]:
        """Start a subscription; ``Resolve(request_id, Subscribed | error)`` answers it.

        Raises:
            ValueError: an unknown stream, a channel already subscribed here, or
                trades of a symbol next to trades of every symbol.
        """
        if stream not in STREAMS:
            raise ValueError(f"unknown stream {stream!r}: use one of {', '.join(STREAMS)}")
        if stream in _SNAPSHOT_STREAMS and symbol is None:
            raise ValueError(f"stream {stream!r} needs a symbol, e.g. 'BTC/USDT'")
        if stream == "orders" and symbol is not None:
            raise ValueError("the orders stream takes no symbol (it is yours, every market)")
        key: Key = (stream, symbol)
        if key in self._subs:
            raise ValueError(f"already subscribed to {_name(key)} on this connection: "
                             "iterate over the existing subscription")
        if stream == "trades" and any(k[0] == "trades" and (k[1] is None) != (symbol is None)
                                      for k in self._subs):
            raise ValueError(
                "trades of one symbol and trades of every symbol cannot share a connection "
                "(their messages look alike): filter the all-symbols stream, or connect twice")
        waiter = next(self._ids)
        sub = _Sub(stream, symbol, Status.OFFLINE, waiter=waiter)
        if stream == "depth":
            assert symbol is not None
            sub.book = OrderBook(symbol)
        self._subs[key] = sub
        self._pending[waiter] = _Pending("subscribe", {}, key, awaited=True)
        out: list[Output] = []
        if self.connected:
            self._send_subscribe(sub, out)
        return key, waiter, out

    def unsubscribe(self, key: Key) -> tuple[int | None, list[Output]]:
        """End a subscription; the id of the unsubscribe to await, if one was sent."""
        sub = self._subs.get(key)
        if sub is None:
            return None, []
        if sub.waiter is not None:
            self._pending.pop(sub.waiter, None)
        if self.connected and sub.status in (Status.SUBSCRIBING, Status.SNAPSHOT, Status.ACTIVE):
            sub.status = Status.CLOSING
            request_id = next(self._ids)
            request = _channel_request("unsubscribe", request_id, key)
            self._pending[request_id] = _Pending("unsubscribe", request, key, awaited=True)
            return request_id, [Send(request)]
        del self._subs[key]
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
        sub = self._subs.get(key)
        if sub is None or sub.status not in (Status.ACTIVE, Status.SNAPSHOT):
            return []
        log.warning("%s: the application's buffer is full; pausing the subscription at "
                    "seq %s until it is read", _name(key), sub.seq)
        if sub.status is Status.SNAPSHOT:
            sub.resumable = False
            sub.resync_reason = "overflow"
        sub.status = Status.PAUSED
        if not self.connected:
            return []
        return [Send(_channel_request("unsubscribe", self._internal("unsubscribe", key), key))]

    def resume(self, key: Key) -> list[Output]:
        """The buffer of a paused subscription was read: subscribe again ``since`` its seq."""
        sub = self._subs.get(key)
        if sub is None or sub.status is not Status.PAUSED:
            return []
        if not self.connected:
            sub.status = Status.OFFLINE
            return []
        out: list[Output] = []
        self._send_subscribe(sub, out)
        return out

    # ----------------------------------------------------------- the link

    def connection_made(self) -> list[Output]:
        """A new connection is open: (re)subscribe everything, ``since`` where possible."""
        self.connected = True
        out: list[Output] = []
        for sub in list(self._subs.values()):
            if sub.status is Status.OFFLINE:
                self._send_subscribe(sub, out)
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
        for key, sub in list(self._subs.items()):
            if sub.status is Status.CLOSING:
                del self._subs[key]
            elif sub.status is not Status.PAUSED:
                if sub.status is Status.SNAPSHOT:
                    sub.resumable = False  # no snapshot yet: nothing to continue from
                sub.status = Status.OFFLINE
        return out

    # ----------------------------------------------------------- messages

    def receive(self, message: ServerMessage | UnknownMessage) -> list[Output]:
        """One message from the server."""
        out: list[Output] = []
        if isinstance(message, UnknownMessage):
            log.debug("ignoring a message of unknown type %r", message.type)
        elif isinstance(message, (TradeExecuted, OrderUpdate, OrderbookSnapshot,
                                  OrderbookUpdate, DepthSnapshot, DepthUpdate)):
            self._stream_message(message, out)
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
            sub = self._subs.get(pending.key) if pending.key else None
            if sub is not None and sub.status is Status.CLOSING:
                del self._subs[sub.stream, sub.symbol]
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
        sub = self._subs.get(pending.key)
        if sub is None or sub.request_id != request_id or sub.status is not Status.SUBSCRIBING:
            return  # a subscription since abandoned
        if isinstance(message, Error):
            if message.code == "resume_unavailable" and sub.since_sent:
                log.warning("%s: cannot resume from seq %s (%s); subscribing afresh",
                            _name(pending.key), sub.seq, message.message)
                sub.resumable = False
                sub.resync_reason = "resume_unavailable"
                self._send_subscribe(sub, out)
                return
            error = SubscriptionError(message.code, message.message, message.field)
            del self._subs[pending.key]
            if sub.waiter is not None:
                self._pending.pop(sub.waiter, None)
                out.append(Resolve(sub.waiter, error))
            else:
                log.error("%s: the server refused to subscribe again: %s",
                          _name(pending.key), error)
                out.append(Fail(pending.key, error))
            return
        if not isinstance(message, Subscribed):
            return
        if message.resumed and sub.since_sent:
            log.info("%s: resumed after seq %s", _name(pending.key), sub.seq)
            if message.seq != sub.seq:
                log.warning("%s: resumed at seq %s, asked for %s", _name(pending.key),
                            message.seq, sub.seq)
            sub.status = Status.ACTIVE
        else:
            self._fresh(sub, message, out)
        if sub.waiter is not None:
            self._pending.pop(sub.waiter, None)
            out.append(Resolve(sub.waiter, message))
            sub.waiter = None

    def _fresh(self, sub: _Sub, message: Subscribed, out: list[Output]) -> None:
        key: Key = (sub.stream, sub.symbol)
        if sub.started and not sub.announced:
            reason = sub.resync_reason or "no_history"
            log.warning("%s: resynced (%s): messages after seq %s may have been missed; "
                        "continuing from seq %s", _name(key), RESYNC_REASONS[reason],
                        sub.seq, message.seq)
            out.append(Deliver(key, Resynced(stream=sub.stream, symbol=sub.symbol,
                                             reason=reason, last_seq=sub.seq,
                                             seq=message.seq)))
            sub.announced = True
        sub.started = True
        sub.resync_reason = None
        sub.epoch, sub.seq = message.epoch, message.seq
        if sub.stream in _SNAPSHOT_STREAMS:
            sub.status, sub.resumable = Status.SNAPSHOT, False
            if sub.book is not None:
                sub.book.clear()
        else:
            sub.status, sub.resumable = Status.ACTIVE, True

    def _stream_message(self, message: StreamMessage, out: list[Output]) -> None:
        key = self._route(message)
        sub = self._subs.get(key) if key else None
        if key is None or sub is None or sub.status not in (Status.ACTIVE, Status.SNAPSHOT):
            return  # not (or no longer, or not yet again) subscribed here
        assert sub.seq is not None
        snapshot = isinstance(message, (DepthSnapshot, OrderbookSnapshot))
        if snapshot != (sub.status is Status.SNAPSHOT):
            log.warning("%s: unexpected %s at seq %s; ignored", _name(key),
                        type(message).__name__, message.seq)
            return
        if snapshot and message.seq != sub.seq:
            log.warning("%s: snapshot at seq %s after subscribed at %s; resubscribing",
                        _name(key), message.seq, sub.seq)
            self._resubscribe(sub, None, out)
            return
        if not snapshot and message.seq <= sub.seq:
            return  # a duplicate
        if not snapshot and message.seq != sub.seq + 1:
            log.warning("%s: gap: seq %s after %s; resubscribing since %s", _name(key),
                        message.seq, sub.seq, sub.seq)
            self._resubscribe(sub, None, out)
            return
        if not self._has_room(key):
            out.extend(self.pause(key))
            return
        if sub.book is not None:
            assert isinstance(message, (DepthSnapshot, DepthUpdate))
            try:
                sub.book.apply(message)
            except ChecksumMismatch as exc:
                sub.mismatches += 1
                if sub.mismatches >= MAX_MISMATCHES:
                    del self._subs[key]
                    out.append(Send(_channel_request(
                        "unsubscribe", self._internal("unsubscribe", key), key)))
                    out.append(Fail(key, ChecksumFailed(
                        f"{_name(key)}: {exc}, {sub.mismatches} times in a row right after "
                        "fresh snapshots: the client and the server disagree on the "
                        "checksum; please report it")))
                    return
                log.warning("%s: %s; resubscribing for a fresh snapshot", _name(key), exc)
                self._resubscribe(sub, "checksum_mismatch", out)
                return
            except BookError as exc:  # cannot happen after the checks above; be safe
                log.warning("%s: %s; resubscribing", _name(key), exc)
                self._resubscribe(sub, "checksum_mismatch", out)
                return
            if not snapshot:
                sub.mismatches = 0
        sub.seq = message.seq
        sub.status, sub.resumable, sub.announced = Status.ACTIVE, True, False
        out.append(Deliver(key, message))

    def _route(self, message: StreamMessage) -> Key | None:
        if isinstance(message, OrderUpdate):
            return ("orders", None)
        if isinstance(message, TradeExecuted):
            own = ("trades", message.symbol)
            return own if own in self._subs else ("trades", None)
        if isinstance(message, (OrderbookSnapshot, OrderbookUpdate)):
            return ("orderbook", message.symbol)
        return ("depth", message.symbol)

    # ------------------------------------------------------------ helpers

    def _internal(self, kind: str, key: Key) -> int:
        request_id = next(self._ids)
        self._pending[request_id] = _Pending(kind, {}, key)
        return request_id

    def _send_subscribe(self, sub: _Sub, out: list[Output]) -> None:
        key: Key = (sub.stream, sub.symbol)
        since = None if sub.resync_reason else sub.since()
        if since is None and sub.started and sub.resync_reason is None:
            sub.resync_reason = "no_history" if sub.epoch is None else "resume_unavailable"
        request_id = self._internal("subscribe", key)
        request = _channel_request("subscribe", request_id, key)
        if since is not None:
            request["since"] = since
        sub.request_id, sub.since_sent, sub.status = request_id, since is not None, \
            Status.SUBSCRIBING
        out.append(Send(request))

    def _resubscribe(self, sub: _Sub, reason: str | None, out: list[Output]) -> None:
        """Unsubscribe and subscribe again at once (the server answers in order).

        Without ``reason``: ``since`` the last delivered seq when possible.
        With one: afresh, and the application is told why.
        """
        key: Key = (sub.stream, sub.symbol)
        out.append(Send(_channel_request("unsubscribe", self._internal("unsubscribe", key),
                                         key)))
        if reason is not None:
            sub.resumable = False
            sub.resync_reason = reason
        self._send_subscribe(sub, out)


def _channel_request(action: str, request_id: int, key: Key) -> dict[str, Any]:
    request: dict[str, Any] = {"action": action, "stream": key[0], "id": request_id}
    if key[1] is not None:
        request["symbol"] = key[1]
    return request


def _name(key: Key) -> str:
    return key[0] if key[1] is None else f"{key[0]} {key[1]}"
