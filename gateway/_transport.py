"""The one writer of a WebSocket connection's socket: frames in, coalesced writes out.

Rules of this module:

* A :class:`CoalescingStream` sits between trio-websocket and the TCP stream
  (:func:`adopt` puts it there). Every byte sent on the connection passes
  through it: the fan-out's frames (:meth:`~CoalescingStream.write_nowait`)
  and trio-websocket's own pings, pongs and close frames (``send_all``).
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
  stream is then *torn*, refuses every later send, and can only be aborted.

This is also the gateway's one reach into a library's internals: trio-websocket
0.12 offers no way to write pre-built frames, so :func:`adopt` replaces its
private ``_stream``. pyproject.toml pins trio-websocket below 0.13 and
``tests/gateway/test_library_seams.py`` fails loudly if that attribute changes.
"""

from __future__ import annotations

import array
import fcntl
import os
import termios

import trio
from trio_websocket import WebSocketConnection


class CoalescingStream(trio.abc.HalfCloseableStream):
    """A TCP stream that takes whole frames without blocking and writes them in batches.

    Args:
        stream: the accepted TCP connection; this object becomes its only user.
        max_pending: messages that may wait for the writer before ``write_nowait``
            refuses more.
    """

    __slots__ = (
        "_closed", "_fd", "_head_is_partial", "_lock", "_lot", "_max_pending", "_pending",
        "_pending_messages", "_stream", "_writing", "last_received", "torn",
    )

    def __init__(self, stream: trio.SocketStream, *, max_pending: int) -> None:
        self._stream = stream
        self._fd = stream.socket.fileno()
        self._max_pending = max_pending
        self._pending: list[bytes] = []  # a list: an empty deque costs 600 bytes a connection
        self._pending_messages = 0
        self._head_is_partial = False  # pending[0] is the rest of a directly written frame
        self._writing = False  # an awaited write to the socket is under way
        self._lock = trio.StrictFIFOLock()  # one flusher at a time
        self._lot = trio.lowlevel.ParkingLot()  # the writer, waiting for frames
        self._closed = False
        self.last_received: float | None = None
        """When bytes last came from the client (frames, pongs) through this object: the
        heartbeat's evidence. None until the first read passes through here: a read that
        trio-websocket began before :func:`adopt` still goes to the bare TCP stream."""
        self.torn = False
        """A write was cut mid-frame: nothing more may be sent, only :meth:`aclose`."""

    @property
    def socket(self) -> trio.socket.SocketType:
        return self._stream.socket

    # ------------------------------------------------ for the fan-out (sync)

    def write_nowait(self, frames: bytes, count: int = 1) -> bool:
        """Send ``count`` whole frames now or queue them.

        Returns False, having queued nothing, when the queue would overflow.
        """
        pending = self._pending
        if pending or self._writing:
            if self._pending_messages + count > self._max_pending:
                return False
            pending.append(frames)
            self._pending_messages += count
            return True
        if self._closed or self.torn:
            return True  # the connection is ending; its reader will see it go
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
        if self._closed:
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

    # ------------------------------------------- the trio.abc.Stream surface

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data`` after everything queued (trio-websocket's control frames)."""
        async with self._lock:
            self._pending.append(bytes(data))
            await self._flush_locked()

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        data = await self._stream.receive_some(max_bytes)
        self.last_received = trio.current_time()
        return data

    async def aclose(self) -> None:
        """Close the TCP connection (without a WebSocket close frame if none was sent)."""
        self._closed = True  # before the fd is closed: it may be reused at once
        self._pending.clear()
        self._pending_messages = 0
        await self._stream.aclose()


def adopt(ws: WebSocketConnection, *, max_pending: int) -> CoalescingStream:
    """Put a :class:`CoalescingStream` under an accepted connection; return it.

    Call it right after ``request.accept()``, before anything else is sent.
    """
    stream = ws._stream
    if not isinstance(stream, trio.SocketStream):
        raise TypeError(f"expected trio-websocket to hold a trio.SocketStream, got {stream!r}")
    transport = CoalescingStream(stream, max_pending=max_pending)
    ws._stream = transport
    return transport
