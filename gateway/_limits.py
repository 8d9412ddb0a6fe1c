"""Rate limits and connection counts, as plain classes over an injected clock.

Rules of this module:

* A :class:`TokenBucket` holds up to ``burst`` tokens and refills at ``rate``
  per second; each event takes one. Time comes in as an argument, so the
  classes are deterministic and tested without sleeping.
* :class:`KeyedBuckets` keeps one bucket per key (an IP, a user) and is
  bounded: a bucket that has refilled completely carries no information and
  is dropped by :meth:`KeyedBuckets.prune`; past ``max_keys`` the oldest key
  is dropped, which can only make the limit more lenient for that key, never
  stricter, so an attacker cannot grow memory by spraying keys.
* :class:`Counts` counts live things per key (connections per IP or user) and
  forgets a key when its count returns to zero.
* :class:`OrderRate` is the one order-entry budget of each user: REST and
  every WebSocket connection of that user draw from the same bucket.
"""

from __future__ import annotations

from collections import OrderedDict


class TokenBucket:
    __slots__ = ("_burst", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._stamp = now

    def _refill(self, now: float) -> None:
        if now > self._stamp:
            self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
            self._stamp = now

    def take(self, now: float) -> bool:
        """Take a token if there is one."""
        self._refill(now)
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    def retry_after(self, now: float) -> float:
        """Seconds until the next token."""
        self._refill(now)
        return max(0.0, (1 - self._tokens) / self._rate)

    def full(self, now: float) -> bool:
        self._refill(now)
        return self._tokens >= self._burst


class KeyedBuckets:
    """One token bucket per key, bounded in number."""

    def __init__(self, rate: float, burst: float, *, max_keys: int = 100_000) -> None:
        self._rate = rate
        self._burst = burst
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def take(self, key: str, now: float) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._max_keys:
                self.prune(now)
                while len(self._buckets) >= self._max_keys:
                    self._buckets.popitem(last=False)
            bucket = self._buckets[key] = TokenBucket(self._rate, self._burst, now)
        else:
            self._buckets.move_to_end(key)
        return bucket.take(now)

    def retry_after(self, key: str, now: float) -> float:
        bucket = self._buckets.get(key)
        return 0.0 if bucket is None else bucket.retry_after(now)

    def prune(self, now: float) -> None:
        """Forget buckets that have refilled completely."""
        for key in [k for k, b in self._buckets.items() if b.full(now)]:
            del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)


class OrderRate:
    """Order-entry commands (place, amend, cancel, cancel-all) per user, on every transport.

    Args:
        rate: commands per second a user may sustain.
        burst: commands a user may send at once.
    """

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self._buckets = KeyedBuckets(rate, burst)

    def admit(self, user_id: str, now: float) -> float | None:
        """None when ``user_id`` may send a command now; else seconds until it may."""
        if self._buckets.take(user_id, now):
            return None
        return self._buckets.retry_after(user_id, now)


class Counts:
    """Live counts per key; a key whose count returns to zero is forgotten."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def get(self, key: str) -> int:
        return self._counts.get(key, 0)

    def add(self, key: str) -> None:
        self._counts[key] = self._counts.get(key, 0) + 1

    def remove(self, key: str) -> None:
        left = self._counts[key] - 1
        if left:
            self._counts[key] = left
        else:
            del self._counts[key]

    def __len__(self) -> int:
        return len(self._counts)
