"""The one owner of a WebSocket connection's socket: frames in, coalesced writes out.

Rules of this module:

* A :class:`CoalescingStream` wraps each accepted TCP connection from the
  first byte (``gateway/_listener.py`` hands it to trio-websocket as the
  stream to speak on), so every byte of the connection passes through it: the
  fan-out's frames (:meth:`~CoalescingStream.write_nowait`), trio-websocket's
  handshake, pings, pongs and close frames (``send_all``), and what the
  client sends (``receive_some``).
* ``write_nowait`` never blocks and never checkpoints, so a fan-out task can
  call it for every subscriber. When nothing is queued and no write is in
  progress, it writes straight to the non-blocking socket; whatever the socket
  does not take is queued, and the connection's writer task sends the queue as
  one write (:meth:`~CoalescingStream.flush`). Frames never interleave: bytes
  are written directly only when nothing is queued and no write is under way.
* The queue is bounded (``max_pending`` messages). When it would overflow,
  ``write_nowait`` returns False and queues nothing: the caller decides (the
  gateway closes the client as a slow consumer).
* A write cut by cancellation may have left part of a frame on the wire: the
  stream is then *torn*, refuses every later send, and can only be closed.
* The closing handshake, as a state machine (:class:`State`): the 101 response
  opens the connection; after a close frame (ours, or one trio-websocket
  sends) nothing more is written. When the peer breaks the protocol, wsproto
  reports the close code it calls for, but trio-websocket then closes the
  stream without sending it (RFC 6455 7.1.7 wants it sent): that ``aclose()``
  is therefore *deferred* (state FAILED: reading stops, the socket stays open)
  and the owner's :meth:`~CoalescingStream.finish` sends the close frame with
  the code, then closes TCP. The same happens when our own inflater
  (``gateway/_deflate.py``) refuses a compressed message.

How we learn what trio-websocket sends, without reaching into it: it hands
each wsproto event's bytes to ``send_all`` in one call, so a call starting with
``HTTP/1.1 101`` is the accepted handshake and one starting with byte 0x88 is
its close frame. ``tests/gateway/test_library_seams.py`` checks that this holds.
"""

from __future__ import annotations

import array
import enum
import fcntl
import os
import termios

import trio

from gateway._deflate import InflateError, Inflater
from gateway._frames import close_frame, sendable_close_code

_OPENED = b"HTTP/1.1 101 "
_DRAIN_READS, _DRAIN_READ_SIZE = 16, 65536  # at most 1 MiB read and dropped before closing


class State(enum.Enum):
    HANDSHAKE = "handshake"
    """Before the 101 response: an ``aclose`` closes TCP at once."""
    OPEN = "open"
    """Frames flow both ways."""
    FAILED = "failed"
    """trio-websocket gave up on the peer without a close frame; :meth:`CoalescingStream.finish`
    sends it. Nothing more is read; queued frames still go out first."""
    CLOSING = "closing"
    """A close frame went out, or a write was torn: nothing more is written."""
    CLOSED = "closed"
    """The TCP connection is closed."""


class CoalescingStream(trio.abc.HalfCloseableStream):
    """A TCP stream that takes whole frames without blocking and writes them in batches.

    Args:
        stream: the accepted TCP connection; this object becomes its only user.
        max_pending: messages that may wait for the writer before ``write_nowait``
            refuses more.
    """

    __slots__ = (
        "_failure", "_fd", "_head_is_partial", "_inbound", "_inflater", "_lock", "_lot",
        "_max_pending", "_pending", "_pending_messages", "_stopped", "_stream", "_writing",
        "last_received", "state", "torn",
    )

    def __init__(self, stream: trio.SocketStream, *, max_pending: int) -> None:
        self._stream = stream
        self._fd = stream.socket.fileno()
        self._max_pending = max_pending
        self._pending: list[bytes] = []  # a list: an empty deque costs 600 bytes a connection
        self._pending_messages = 0
        self._head_is_partial = False  # pending[0] is the rest of a directly written frame
        self._writing = False  # an awaited write to the socket is under way
        self._stopped = False  # nothing more may be written: state CLOSING or CLOSED
        self._lock = trio.StrictFIFOLock()  # one flusher at a time
        self._lot = trio.lowlevel.ParkingLot()  # the writer, waiting for frames
        self._inbound = bytearray()  # read, not yet returned: a pushed-back head, inflated frames
        self._inflater: Inflater | None = None
        self._failure: tuple[int, str] | None = None  # the close frame our inflater calls for
        self.state = State.HANDSHAKE
        self.last_received = trio.current_time()
        """When bytes last came from the client (frames, pongs): the heartbeat's evidence."""
        self.torn = False
        """A write was cut mid-frame: nothing more may be sent, only closing is left."""

    @property
    def socket(self) -> trio.socket.SocketType:
        return self._stream.socket

    @property
    def peer_ip(self) -> str:
        """The client's IP address, for the per-IP limits."""
        try:
            return str(self._stream.socket.getpeername()[0])
        except OSError:  # already reset by the peer
            return "unknown"

    def inflate_with(self, inflater: Inflater) -> None:
        """Inflate the client's compressed messages from now on (permessage-deflate agreed)."""
        self._inflater = inflater

    def push_back(self, data: bytes) -> None:
        """Return ``data`` (already read from the client) to the next ``receive_some`` calls."""
        self._inbound[:0] = data

    # ------------------------------------------------ for the fan-out (sync)

    def write_nowait(self, frames: bytes, count: int = 1) -> bool:
        """Send ``count`` whole frames now or queue them.

        Returns False, having queued nothing, when the queue would overflow.
        """
        if self._stopped:
            return True  # the connection is ending; its reader will see it go
        pending = self._pending
        if pending or self._writing:
            if self._pending_messages + count > self._max_pending:
                return False
            pending.append(frames)
            self._pending_messages += count
            return True
        try:
            sent = os.write(self._fd, frames)
        except BlockingIOError:
            sent = 0
        except OSError:
            # Reset by the peer (EPIPE, ECONNRESET): the reader sees the end of the
            # connection; queue the frame so that nothing more is written directly.
            sent = 0
        if sent < len(frames):
            pending.append(frames[sent:] if sent else frames)
            self._pending_messages = count
            self._head_is_partial = sent > 0
            self._lot.unpark_all()
        return True

    def discard_pending(self) -> None:
        """Drop the queued frames, keeping the rest of a frame already half on the wire."""
        head = self._pending[0] if self._pending and self._head_is_partial else None
        self._pending.clear()
        self._pending_messages = 0
        if head is not None:
            self._pending.append(head)

    def backlogged(self) -> bool:
        """Whether sent bytes are still on their way: queued here, or unacknowledged.

        The kernel's count (``SIOCOUTQ``) stays above zero while the client's
        receive window is shut, which is what a client that stopped reading does.
        """
        if self._pending:
            return True
        if self.state is State.CLOSED:
            return False
        unacknowledged = array.array("i", [0])
        try:
            fcntl.ioctl(self._fd, termios.TIOCOUTQ, unacknowledged)  # == SIOCOUTQ
        except OSError:
            return False
        return unacknowledged[0] > 0

    # ----------------------------------------------------- for the writer

    async def wait_pending(self) -> None:
        """Return once frames are queued."""
        while not self._pending:
            await self._lot.park()

    async def flush(self) -> None:
        """Write everything queued, as few writes as possible."""
        async with self._lock:
            await self._flush_locked()

    async def _flush_locked(self) -> None:
        pending = self._pending
        while pending:
            if self.torn:
                raise trio.BrokenResourceError("a write was cut mid-frame")
            data = pending[0] if len(pending) == 1 else b"".join(pending)
            pending.clear()
            self._pending_messages = 0
            self._head_is_partial = False
            self._writing = True
            done = False
            try:
                await self._stream.send_all(data)
                done = True
            finally:
                self._writing = False
                if not done:
                    self.torn = True
                    self._stopped = True

    # ------------------------------------------------------ for the owner

    async def finish(self, code: int | None = None, reason: str = "") -> None:
        """Send the close frame a failed connection still owes, then close TCP.

        When a close frame went out but TCP is still open (the client broke the
        protocol, or has not answered our close), the client's remaining bytes
        are read and dropped until it closes its end or the caller's deadline:
        closing a socket with unread bytes resets it, and a client can lose the
        close frame to the reset.

        Args:
            code, reason: the close code trio-websocket recorded (its
                ``WebSocketConnection.closed``); used only if no close frame went out.
                A failure found by our inflater takes precedence.
        """
        try:
            if self._failure is not None:
                code, reason = self._failure
            if (self.state in (State.OPEN, State.FAILED) and not self._stopped
                    and code is not None and sendable_close_code(code)):
                async with self._lock:
                    self._stop()
                    self._pending.append(close_frame(code, reason))
                    await self._flush_locked()
            if self.state is State.CLOSING and not self.torn:
                await self._stream.send_eof()
                for _ in range(_DRAIN_READS):
                    if not await self._stream.receive_some(_DRAIN_READ_SIZE):
                        break
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError):
            pass
        finally:
            await self._close()

    async def abort(self) -> None:
        """Close TCP now, sending nothing more (the listener's last word on a connection)."""
        if self._mark_closed():
            await trio.aclose_forcefully(self._stream)

    async def _close(self) -> None:
        if self._mark_closed():
            await self._stream.aclose()

    def _mark_closed(self) -> bool:
        """Enter CLOSED before the fd is closed (it may be reused at once); False if it was."""
        if self.state is State.CLOSED:
            return False
        self.state = State.CLOSED
        self._stopped = True
        self._pending.clear()
        self._pending_messages = 0
        return True

    def _stop(self) -> None:
        """A close frame is on its way: write nothing more."""
        self._stopped = True
        if self.state is not State.CLOSED:
            self.state = State.CLOSING

    # ------------------------------------------- the trio.abc.Stream surface

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data`` after everything queued (trio-websocket's handshake and control frames)."""
        data = bytes(data)
        if self.state is State.HANDSHAKE and data.startswith(_OPENED):
            self.state = State.OPEN
        elif data[:1] == b"\x88" and self.state in (State.OPEN, State.FAILED):
            if self._stopped:
                return  # our own close frame went out already
            self._stop()
        elif self._stopped:
            raise trio.ClosedResourceError("the connection is closing")
        async with self._lock:
            self._pending.append(data)
            await self._flush_locked()

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """The client's next bytes; compressed frames come back inflated.

        When the inflater refuses a message, this returns ``b""`` (the end of the
        stream, for trio-websocket) and :meth:`finish` sends the close frame.
        """
        while not self._inbound:
            if self.state is State.FAILED or self._failure is not None:
                raise trio.ClosedResourceError("the connection failed")
            data = await self._stream.receive_some(max_bytes)
            self.last_received = trio.current_time()
            if self._inflater is None or not data:
                return data
            try:
                self._inbound += self._inflater.feed(data)
            except InflateError as exc:
                self._failure = (exc.code, exc.reason)
                return b""
        size = len(self._inbound) if max_bytes is None else max_bytes
        data = bytes(self._inbound[:size])
        del self._inbound[:size]
        return data

    async def aclose(self) -> None:
        """Close TCP, unless the WebSocket failed without its close frame (then defer).

        trio-websocket calls this right after wsproto found a protocol error,
        without sending the close frame the error calls for: the socket stays
        open for :meth:`finish`, which the connection's owner always calls.
        """
        if self.state is State.OPEN and not self._stopped:
            self.state = State.FAILED
            await trio.lowlevel.checkpoint()
            return
        await self._close()
