"""One subscription's life, as a state machine: every transition of a channel is here. Pure.

Rules of this module:

* A :class:`Channel` is one subscription ``(stream, symbol)`` of the client,
  across reconnects. Its :class:`Status` says what it waits for; each method
  below is one input (a reply, a stream message, the link going down...) and
  appends what must happen to ``out``: :class:`Send` a request,
  :class:`Deliver` an item to the application, :class:`Fail` the subscription.
* Seq: the channel keeps the ``epoch`` of its last ``subscribed`` reply and the
  seq of the last message it delivered. A message at or below it is a
  duplicate (dropped); one past ``seq + 1`` is a gap, and the channel
  unsubscribes and subscribes again ``since`` that seq (the server answers in
  order, so the two go out together).
* Resume: a ``resumed`` reply continues silently; a fresh one after the first
  (``resume_unavailable``, a server without epochs, a checksum mismatch, a
  full buffer before a snapshot) delivers one :class:`Resynced` first, with
  the reason, and a warning goes to the log. ``depth`` and ``orderbook`` then
  wait for their snapshot (``SNAPSHOT``); a channel caught there by a lost
  connection has nothing to continue and subscribes afresh.
* Depth: the channel's :class:`OrderBook` checks every checksum; a mismatch
  resubscribes without ``since`` (resuming a wrong book keeps it wrong);
  :data:`MAX_MISMATCHES` in a row fail the channel instead of looping.
* A message is applied and delivered only if the application's buffer has
  room (``has_room``); otherwise it is dropped unapplied and the channel is
  ``PAUSED`` (unsubscribed), to be resumed ``since`` the last delivered seq.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from typing import Any

import attrs

from gateway.client._book import BookError, ChecksumMismatch, OrderBook
from gateway.client._errors import ChecksumFailed, ClientError, SubscriptionError
from gateway.client._messages import (
    RESYNC_REASONS,
    Delivered,
    DepthSnapshot,
    DepthUpdate,
    Error,
    OrderbookSnapshot,
    Resynced,
    ServerMessage,
    StreamMessage,
    Subscribed,
)

log = logging.getLogger("trade_engine.client")

Key = tuple[str, str | None]
"""A channel: ``(stream, symbol)``; symbol None for ``orders`` and all-symbol ``trades``."""

SNAPSHOT_STREAMS = frozenset({"orderbook", "depth"})
MAX_MISMATCHES = 3

IdSource = Callable[[str, Key], int]
"""Registers an internal request (``subscribe`` or ``unsubscribe`` of a key); its id."""


class Status(enum.Enum):
    SUBSCRIBING = "subscribing"  # subscribe sent, reply awaited
    SNAPSHOT = "snapshot"  # subscribed afresh to depth/orderbook, the snapshot awaited
    ACTIVE = "active"
    PAUSED = "paused"  # unsubscribed: the application's buffer was full
    OFFLINE = "offline"  # no connection: subscribed again on the next
    CLOSING = "closing"  # the application unsubscribed; its reply awaited


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


def channel_request(action: str, request_id: int, key: Key) -> dict[str, Any]:
    request: dict[str, Any] = {"action": action, "stream": key[0], "id": request_id}
    if key[1] is not None:
        request["symbol"] = key[1]
    return request


def name(key: Key) -> str:
    return key[0] if key[1] is None else f"{key[0]} {key[1]}"


@attrs.define
class Channel:
    stream: str
    symbol: str | None
    status: Status = Status.OFFLINE
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

    @property
    def key(self) -> Key:
        return (self.stream, self.symbol)

    def since(self) -> dict[str, Any] | None:
        if self.resumable and self.epoch is not None and self.seq is not None:
            return {"epoch": self.epoch, "seq": self.seq}
        return None

    # -------------------------------------------------------- requests

    def subscribe(self, ids: IdSource, out: list[Output]) -> None:
        """Send a subscribe: ``since`` the last delivered seq when that can continue."""
        since = None if self.resync_reason else self.since()
        if since is None and self.started and self.resync_reason is None:
            self.resync_reason = "no_history" if self.epoch is None else "resume_unavailable"
        request_id = ids("subscribe", self.key)
        request = channel_request("subscribe", request_id, self.key)
        if since is not None:
            request["since"] = since
        self.request_id, self.since_sent = request_id, since is not None
        self.status = Status.SUBSCRIBING
        out.append(Send(request))

    def resubscribe(self, ids: IdSource, reason: str | None, out: list[Output]) -> None:
        """Unsubscribe and subscribe again at once: ``since`` the last seq when possible;
        with a ``reason``, afresh, and the application is told why."""
        out.append(Send(channel_request("unsubscribe", ids("unsubscribe", self.key), self.key)))
        if reason is not None:
            self.resumable = False
            self.resync_reason = reason
        self.subscribe(ids, out)

    def pause(self, ids: IdSource, connected: bool, out: list[Output]) -> None:
        """The application's buffer is full: unsubscribe until it has read it."""
        if self.status not in (Status.ACTIVE, Status.SNAPSHOT):
            return
        log.warning("%s: the application's buffer is full; pausing the subscription at "
                    "seq %s until it is read", name(self.key), self.seq)
        if self.status is Status.SNAPSHOT:
            self.resumable, self.resync_reason = False, "overflow"
        self.status = Status.PAUSED
        if connected:
            out.append(Send(channel_request("unsubscribe", ids("unsubscribe", self.key),
                                            self.key)))

    def lost(self) -> None:
        """The connection is gone: subscribe again on the next one."""
        if self.status is Status.PAUSED:
            return
        if self.status is Status.SNAPSHOT:
            self.resumable = False  # no snapshot yet: nothing to continue from
        self.status = Status.OFFLINE

    # --------------------------------------------------------- replies

    def subscribed(self, message: Subscribed, out: list[Output]) -> None:
        if message.resumed and self.since_sent:
            log.info("%s: resumed after seq %s", name(self.key), self.seq)
            if message.seq != self.seq:
                log.warning("%s: resumed at seq %s, asked for %s", name(self.key),
                            message.seq, self.seq)
            self.status = Status.ACTIVE
            return
        if self.started and not self.announced:
            reason = self.resync_reason or "no_history"
            log.warning("%s: resynced (%s): messages after seq %s may have been missed; "
                        "continuing from seq %s", name(self.key), RESYNC_REASONS[reason],
                        self.seq, message.seq)
            out.append(Deliver(self.key, Resynced(
                stream=self.stream, symbol=self.symbol, reason=reason, last_seq=self.seq,
                seq=message.seq)))
            self.announced = True
        self.started = True
        self.resync_reason = None
        self.epoch, self.seq = message.epoch, message.seq
        if self.stream in SNAPSHOT_STREAMS:
            self.status, self.resumable = Status.SNAPSHOT, False
            if self.book is not None:
                self.book.clear()
        else:
            self.status, self.resumable = Status.ACTIVE, True

    def refused(self, message: Error, ids: IdSource, out: list[Output]) -> ClientError | None:
        """A subscribe was answered with an error: retry afresh, or the error to report."""
        if message.code == "resume_unavailable" and self.since_sent:
            log.warning("%s: cannot resume from seq %s (%s); subscribing afresh",
                        name(self.key), self.seq, message.message)
            self.resumable, self.resync_reason = False, "resume_unavailable"
            self.subscribe(ids, out)
            return None
        return SubscriptionError(message.code, message.message, message.field)

    # ----------------------------------------------------------- stream

    def receive(self, message: StreamMessage, has_room: bool, ids: IdSource,
                connected: bool, out: list[Output]) -> bool:
        """One stream message of this channel; False when the channel is over."""
        if self.status not in (Status.ACTIVE, Status.SNAPSHOT):
            return True  # not (or no longer, or not yet again) subscribed
        assert self.seq is not None
        snapshot = isinstance(message, (DepthSnapshot, OrderbookSnapshot))
        if snapshot != (self.status is Status.SNAPSHOT):
            log.warning("%s: unexpected %s at seq %s; ignored", name(self.key),
                        type(message).__name__, message.seq)
            return True
        if snapshot and message.seq != self.seq:
            log.warning("%s: snapshot at seq %s after subscribed at %s; resubscribing",
                        name(self.key), message.seq, self.seq)
            self.resubscribe(ids, None, out)
            return True
        if not snapshot and message.seq <= self.seq:
            return True  # a duplicate
        if not snapshot and message.seq != self.seq + 1:
            log.warning("%s: gap: seq %s after %s; resubscribing since %s", name(self.key),
                        message.seq, self.seq, self.seq)
            self.resubscribe(ids, None, out)
            return True
        if not has_room:
            self.pause(ids, connected, out)
            return True
        if self.book is not None and not self._apply(message, ids, out):
            return self.mismatches < MAX_MISMATCHES
        self.seq = message.seq
        self.status, self.resumable, self.announced = Status.ACTIVE, True, False
        out.append(Deliver(self.key, message))
        return True

    def _apply(self, message: StreamMessage, ids: IdSource, out: list[Output]) -> bool:
        """Apply a depth message to the book; False (and what to do) when it fails."""
        assert self.book is not None
        assert isinstance(message, (DepthSnapshot, DepthUpdate))
        try:
            self.book.apply(message)
        except ChecksumMismatch as exc:
            self.mismatches += 1
            if self.mismatches >= MAX_MISMATCHES:
                out.append(Send(channel_request("unsubscribe", ids("unsubscribe", self.key),
                                                self.key)))
                out.append(Fail(self.key, ChecksumFailed(
                    f"{name(self.key)}: {exc}, {self.mismatches} times in a row right after "
                    "fresh snapshots: the client and the server disagree on the checksum; "
                    "please report it")))
                return False
            log.warning("%s: %s; resubscribing for a fresh snapshot", name(self.key), exc)
            self.resubscribe(ids, "checksum_mismatch", out)
            return False
        except BookError as exc:  # cannot happen after the channel's seq checks; be safe
            log.warning("%s: %s; resubscribing", name(self.key), exc)
            self.resubscribe(ids, "checksum_mismatch", out)
            return False
        if isinstance(message, DepthUpdate):
            self.mismatches = 0
        return True
