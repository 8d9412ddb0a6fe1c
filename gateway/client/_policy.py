"""When to reconnect, when to ping, when a connection is dead. Pure: time is an argument.

Rules of this module:

* :class:`Reconnect` is the policy the application chooses; :class:`Backoff`
  turns it into delays: exponential from ``initial_delay`` up to
  ``max_delay``, each drawn uniformly between half and all of the current
  step ("equal jitter": never zero, so a thousand clients restarted together
  do not come back in one instant, and never above the cap). The randomness
  is injected, so tests pin it.
* :class:`Liveness` decides on heartbeats from the times it is told: after
  ``interval`` seconds without hearing anything, ping; after ``timeout``
  more seconds of silence, the connection is dead. Anything heard (a
  message, a pong, a server ping) counts.
* :func:`close_is_final` says which close codes end the client instead of
  reconnecting: the ones a reconnect would only repeat.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

import attrs


@attrs.frozen(kw_only=True)
class Reconnect:
    """How the client reconnects after losing its connection.

    Attributes:
        initial_delay: seconds before the first retry (jittered).
        max_delay: the cap of the exponential backoff, seconds.
        max_attempts: give up after this many failed attempts in a row and raise
            :class:`~gateway.client.ConnectionLost` from ``connect()``; None
            retries for as long as the ``async with`` block runs.
        enabled: False: the first lost connection ends the client.
    """

    initial_delay: float = attrs.field(default=0.1, validator=attrs.validators.gt(0))
    max_delay: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))
    max_attempts: int | None = None
    enabled: bool = True


class Backoff:
    """Delays of one series of reconnect attempts; :meth:`reset` after a success."""

    def __init__(self, policy: Reconnect, uniform: Callable[[float, float], float]) -> None:
        self.policy = policy
        self.attempts = 0
        self._uniform = uniform  # random.uniform in the shell; pinned in tests

    def next_delay(self) -> float | None:
        """Seconds to wait before the next attempt; None: give up."""
        policy = self.policy
        if not policy.enabled or (
                policy.max_attempts is not None and self.attempts >= policy.max_attempts):
            return None
        step = min(policy.max_delay, policy.initial_delay * 2.0 ** min(self.attempts, 64))
        self.attempts += 1
        return self._uniform(step / 2, step)

    def reset(self) -> None:
        self.attempts = 0


class Beat(enum.Enum):
    WAIT = "wait"
    PING = "ping"
    DEAD = "dead"


class Liveness:
    """Heartbeat decisions for one connection.

    Args:
        interval: seconds of silence before the client pings.
        timeout: seconds after that ping before the connection counts as dead.
        now: the time the connection opened.
    """

    def __init__(self, interval: float, timeout: float, now: float) -> None:
        self.interval = interval
        self.timeout = timeout
        self._heard = now
        self._pinged: float | None = None

    def heard(self, now: float) -> None:
        self._heard = now
        self._pinged = None

    def check(self, now: float) -> tuple[Beat, float]:
        """What to do now, and when to check next."""
        if self._pinged is not None:
            deadline = self._pinged + self.timeout
            return (Beat.DEAD, now) if now >= deadline else (Beat.WAIT, deadline)
        due = self._heard + self.interval
        if now >= due:
            self._pinged = now
            return Beat.PING, now + self.timeout
        return Beat.WAIT, due


# A reconnect would only repeat these: our own protocol bug (1002, 1003, 1007, 1009)
# or a token the server no longer takes (4003).
FINAL_CLOSE_CODES = frozenset({1002, 1003, 1007, 1009, 4003})


def close_is_final(code: int | None) -> bool:
    return code in FINAL_CLOSE_CODES


def handshake_is_final(status: int) -> bool:
    """Refusals worth retrying: too many connections (429) and unavailable (5xx)."""
    return not (status == 429 or status >= 500)
