"""The hub's subscription registry: who listens to which channel, and with what framing.

Rules of this module:

* The registry maps each channel to its subscribers, each with the
  permessage-deflate window it agreed (0: plain frames). A channel is in the
  registry while it has a subscriber. Numbering does not depend on it: every
  channel is numbered whether or not anyone listens (``gateway/_streams.py``).
* Pure: no trio, no clock, no sockets (``tests/gateway/test_gateway_purity.py``).
  The shell (``gateway/_hub.py``) reads :attr:`Routing.subscribers` directly on
  its hot path.
"""

from __future__ import annotations

from typing import Protocol

from gateway._protocol import Channel, Stream


class Subscriber(Protocol):
    deflate_window_bits: int
    """permessage-deflate's server window agreed with this subscriber; 0: plain frames."""

    def offer(self, frames: bytes, count: int = 1) -> bool:
        """Send or queue ``count`` whole WebSocket frames without blocking.

        Returns False, having queued nothing, when the queue is full.
        """

    def close_soon(self, code: int, reason: str) -> None:
        """Ask the connection to close with ``code``; returns at once."""


class Routing:
    """The subscription registry. Owned by the hub."""

    __slots__ = ("subscribers",)

    def __init__(self) -> None:
        self.subscribers: dict[Channel, dict[Subscriber, int]] = {}
        """Each channel's subscribers with their deflate window; read-only outside this class."""

    def add(self, subscriber: Subscriber, channel: Channel) -> None:
        """Register ``subscriber`` (a connection's own :class:`Subscriptions` refuses doubles)."""
        subscribers = self.subscribers.get(channel)
        if subscribers is None:
            subscribers = self.subscribers[channel] = {}
        subscribers[subscriber] = subscriber.deflate_window_bits

    def remove(self, subscriber: Subscriber, channel: Channel) -> None:
        subscribers = self.subscribers.get(channel)
        if subscribers is None:
            return
        subscribers.pop(subscriber, None)
        if not subscribers:
            del self.subscribers[channel]

    def counts(self) -> dict[str, int]:
        """Subscriptions per stream."""
        counts = {str(stream): 0 for stream in Stream}
        for (stream, _), subscribers in self.subscribers.items():
            counts[str(stream)] += len(subscribers)
        return counts
