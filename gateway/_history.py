"""Bounded per-channel history, so that a reconnecting client can resume without a gap.

Rules of this module:

* Every numbered item of every channel is recorded (subscribed or not: the
  client that wants to resume is, by definition, not subscribed while it is
  away), in order, so a channel's ring always holds a contiguous run of seqs
  ending at the channel's last seq.
* Bounds: at most ``messages`` items per channel (the oldest go first), and a
  channel whose newest item is older than ``seconds`` before the newest item
  of any channel is forgotten (swept every :data:`SWEEP_EVERY` records). Age
  is measured on the items' own timestamps, never on a clock, so two
  processes fed the same commands hold the same history.
* :meth:`History.since` answers a resume: every item after ``seq``, or None
  when some are gone (or ``seq`` is ahead of the channel: a client from
  another epoch or a bug). Asking for exactly the channel's last seq is
  always answerable, with nothing to send.
* The last seq of every channel ever seen is kept even when its ring is
  swept (one integer per channel), so ``subscribed`` always names it.
* Owned by the hub (``gateway/_hub.py``); pure: no trio, no clock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from itertools import islice

from gateway._protocol import Channel
from gateway._streams import Item, Payload

SWEEP_EVERY = 10_000
"""Records between two sweeps of forgotten channels (each sweep visits every channel)."""


class History:
    """Each channel's last seq and its bounded ring of recent items.

    Args:
        messages: items kept per channel (0: none; every resume of a channel
            that moved on is then refused).
        seconds: the age bound, on the items' timestamps.
        seqs: each channel's seq at the start (``StreamState.counters()``).
    """

    def __init__(self, messages: int, seconds: float, seqs: Mapping[Channel, int]) -> None:
        self._messages = messages
        self._max_age = int(seconds * 1_000_000_000)
        self._seq: dict[Channel, int] = dict(seqs)
        self._rings: dict[Channel, deque[tuple[int, int, Payload]]] = {}
        self._newest = 0
        self._until_sweep = SWEEP_EVERY

    def seq(self, channel: Channel) -> int:
        """The seq of the channel's last message (0: none yet in this epoch)."""
        return self._seq.get(channel, 0)

    def record(self, channel: Channel, seq: int, ts: int, payload: Payload) -> None:
        """Remember one item; ``seq`` is the channel's next."""
        self._seq[channel] = seq
        if not self._messages:
            return
        ring = self._rings.get(channel)
        if ring is None:
            ring = self._rings[channel] = deque(maxlen=self._messages)
        ring.append((seq, ts, payload))
        self._newest = max(self._newest, ts)
        self._until_sweep -= 1
        if not self._until_sweep:
            self._sweep()

    def record_all(self, items: Iterable[Item]) -> None:
        """Record items (e.g. those replayed from the journal at start-up), in order."""
        for channel, seq, payload in items:
            self.record(channel, seq, payload.ts, payload)

    def since(self, channel: Channel, seq: int) -> list[tuple[int, Payload]] | None:
        """Every item of ``channel`` after ``seq``, oldest first; None if any is gone."""
        last = self._seq.get(channel, 0)
        if seq == last:
            return []
        if seq > last or seq < 0:
            return None
        ring = self._rings.get(channel)
        if not ring or ring[0][0] > seq + 1:
            return None
        return [(s, payload) for s, _, payload in islice(ring, seq + 1 - ring[0][0], None)]

    def _sweep(self) -> None:
        self._until_sweep = SWEEP_EVERY
        horizon = self._newest - self._max_age
        stale = [channel for channel, ring in self._rings.items() if ring[-1][1] < horizon]
        for channel in stale:
            del self._rings[channel]

    def __len__(self) -> int:
        """Items held, all channels together."""
        return sum(map(len, self._rings.values()))
