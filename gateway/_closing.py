"""Close codes, and a connection's close state as one explicit state machine.

Rules of this module:

* A connection is in exactly one :class:`Phase`; these are all its transitions:

  ==========  =====================  ====================  ==========
  phase       ``request(code)``      ``goodbye()``         ``closed()``
  ==========  =====================  ====================  ==========
  OPEN        CLOSING, code kept     CLOSING, code 1000    CLOSED
  CLOSING     ignored                CLOSING               CLOSED
  CLOSED      ignored                CLOSED                CLOSED
  ==========  =====================  ====================  ==========

* The first close request wins: its code, reason and farewell (a last message
  sent before the close frame, e.g. ``shutdown``) are the ones the client gets.
  Later requests change nothing, and :meth:`CloseState.request` says so, so
  the shell does a request's side effects (cancel the tasks, count it, drop a
  slow consumer's queue) exactly once.
* Frames are delivered only while OPEN. Once a close was requested nothing
  more is handed to the transport: a client on its way out gets its farewell
  and close frame, not whatever the fan-out produced meanwhile.
* ``goodbye`` is the shell's last step, when the connection's tasks have ended:
  it says how to close. Tasks that end without a request (the client closed,
  the socket broke, the server was cancelled) close with 1000.
* The transport under the connection (``gateway/_transport.py``) has a state
  of its own with the same words one level down: its CLOSING means a close
  frame went out, its CLOSED that TCP is closed. A connection is CLOSING from
  the moment a close is decided, before its close frame is written; it is
  CLOSED once its transport is.
* Pure: no trio, no clock, no sockets (``tests/gateway/test_gateway_purity.py``).
"""

from __future__ import annotations

import enum

NORMAL_CLOSURE = 1000
GOING_AWAY = 1001
"""The server shuts down (sent after a ``shutdown`` message)."""
MESSAGE_TOO_BIG = 1009
TOKEN_EXPIRED = 4003
SLOW_CONSUMER = 4008
"""Close code for a client whose send queue overflowed or whose send timed out."""
HEARTBEAT_TIMEOUT = 4009
RATE_LIMITED = 4029

CLOSE_TIMEOUT = 2.0
"""Seconds the goodbye (farewell, close frame, the client's answer) may take before TCP is
aborted."""
SEND_GRACE = 0.5
"""When a close is requested, a write in progress gets this long to finish its frames;
after that a frame is torn and the TCP connection is aborted."""


class Phase(enum.Enum):
    OPEN = "open"
    """The connection is served: frames are delivered."""
    CLOSING = "closing"
    """The close code is decided: nothing more is delivered, the tasks are told to stop."""
    CLOSED = "closed"
    """The goodbye is over (or was given up on): TCP is closed."""


OPEN, CLOSING, CLOSED = Phase.OPEN, Phase.CLOSING, Phase.CLOSED


class CloseState:
    """How and whether one connection closes. Owned by that connection."""

    __slots__ = ("code", "farewell", "phase", "reason")

    def __init__(self) -> None:
        self.phase = OPEN
        self.code = NORMAL_CLOSURE
        self.reason = ""
        self.farewell: bytes | None = None

    def request(self, code: int, reason: str, farewell: bytes | None = None) -> bool:
        """Decide to close with ``code``; False when a close was decided already."""
        if self.phase is not OPEN:
            return False
        self.phase = CLOSING
        self.code, self.reason, self.farewell = code, reason, farewell
        return True

    def goodbye(self) -> tuple[int, str, bytes | None]:
        """The tasks have ended: the close code, reason and farewell to send."""
        if self.phase is OPEN:
            self.phase = CLOSING
        return self.code, self.reason, self.farewell

    def closed(self) -> None:
        self.phase = CLOSED
