"""The heartbeat policy of one connection: when to ping, when to give up, and why.

Rules of this module:

* A ping goes out every ``ping_interval``. The evidence of life is any bytes
  from the client (``heard``: its pong, usually), never one particular pong,
  so no task waits for a pong: a heartbeat to thousands of idle clients stays
  cheap. A ping sent while an earlier one still waits keeps that one's deadline.
* When nothing was heard since the oldest unanswered ping ``pong_timeout``
  later, the client is either not reading (our bytes are still on their way:
  the ``backlogged`` probe, the kernel's send queue) and is closed as a slow
  consumer (4008), or it is gone and is closed with 4009.
* When, at a ping, nothing was heard for ``read_timeout``, the client is
  closed with 4009 (``read timeout``).
* A token's expiry is one more deadline of the same timer: at ``expires_at``
  the connection is closed with 4003. It is checked first, so an expired
  token is always named as the reason.
* The shell sleeps until :attr:`Heartbeat.deadline`, then asks
  :meth:`Heartbeat.due`; time is always an argument (the trio clock, in
  seconds), so the policy is tested with plain numbers.
* Pure: no trio, no clock, no sockets (``tests/gateway/test_gateway_purity.py``).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable

from gateway._closing import HEARTBEAT_TIMEOUT, SLOW_CONSUMER, TOKEN_EXPIRED


class Beat(enum.Enum):
    """What the connection does at a wake-up; the value of a close is its reason."""

    WAIT = "wait"
    """Nothing is due: sleep until the next deadline."""
    PING = "ping"
    """Send a ping now (recorded as sent: if it cannot be queued, the client is slow)."""
    SLOW_CONSUMER = "slow consumer: not reading"
    NO_PONG = "no pong"
    READ_TIMEOUT = "read timeout"
    TOKEN_EXPIRED = "token expired"

    @property
    def close_code(self) -> int:
        """The close code of a closing beat."""
        return _CLOSE_CODES[self]


_CLOSE_CODES = {
    Beat.SLOW_CONSUMER: SLOW_CONSUMER, Beat.NO_PONG: HEARTBEAT_TIMEOUT,
    Beat.READ_TIMEOUT: HEARTBEAT_TIMEOUT, Beat.TOKEN_EXPIRED: TOKEN_EXPIRED,
}


class Heartbeat:
    """The timer of one connection.

    Args:
        now: when the connection opened.
        ping_interval, pong_timeout, read_timeout: seconds (``[websocket]`` settings).
        expires_at: when the connection's token expires, on the same clock as
            ``now``; infinite without a token.
    """

    __slots__ = ("_expires_at", "_next_ping", "_ping_interval", "_pinged_at", "_pong_due",
                 "_pong_timeout", "_read_timeout")

    def __init__(
        self, now: float, *, ping_interval: float, pong_timeout: float, read_timeout: float,
        expires_at: float = math.inf,
    ) -> None:
        self._ping_interval = ping_interval
        self._pong_timeout = pong_timeout
        self._read_timeout = read_timeout
        self._expires_at = expires_at
        self._next_ping = now + ping_interval
        self._pinged_at = math.inf  # the oldest ping still waiting for an answer
        self._pong_due = math.inf

    @property
    def deadline(self) -> float:
        """When :meth:`due` may next have something to do."""
        return min(self._next_ping, self._pong_due, self._expires_at)

    def due(self, now: float, heard: float, backlogged: Callable[[], bool]) -> Beat:
        """What to do at ``now``.

        Args:
            now: the current time.
            heard: when bytes last came from the client.
            backlogged: whether bytes we sent are still on their way to the
                client; asked only when a pong is late.
        """
        if now >= self._expires_at:
            return Beat.TOKEN_EXPIRED
        if now >= self._pong_due:
            if heard < self._pinged_at:
                return Beat.SLOW_CONSUMER if backlogged() else Beat.NO_PONG
            self._pong_due = math.inf  # answered
        if now < self._next_ping:
            return Beat.WAIT
        if now - heard > self._read_timeout:
            return Beat.READ_TIMEOUT
        if self._pong_due == math.inf:  # an earlier ping still waiting keeps its deadline
            self._pinged_at, self._pong_due = now, now + self._pong_timeout
        self._next_ping = now + self._ping_interval
        return Beat.PING
