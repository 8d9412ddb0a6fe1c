"""``CoalescingStream`` (gateway/_transport.py) on a Unix socket pair, without a server.

The writing side's send buffer is shrunk so that a frame of a few dozen KiB is
only partly taken by the kernel; the peer reads only when the test says so.
That makes every path of the transport reachable by hand: the direct write,
the partial write and its queued rest, the bounded queue, ``discard_pending``
keeping a half-written frame whole, a write torn by cancellation, the
kernel's count of unread bytes, and the closing states. The peer's bytes are
checked with the project's frame codec: whole frames, in order, or a torn one.
No clock is involved; every wait is on the socket, under a generous
``fail_after``.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from gateway._frames import (
    BINARY,
    CLOSE,
    TEXT,
    FrameReader,
    close_code,
    server_frame,
    split_frames,
)
from gateway._transport import CoalescingStream, State

TIMEOUT = 5.0
PAYLOAD = bytes(range(256)) * 256
BIG = server_frame(BINARY, PAYLOAD)  # 64 KiB: more than the socket takes at once
OPENED = b"HTTP/1.1 101 Switching Protocols\r\n\r\n"


class Peer:
    """The other end: reads only when asked, and remembers everything it read."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.received = bytearray()

    async def read(self, size: int) -> bytes:
        """Exactly ``size`` more bytes (fails at the end of the stream)."""
        start = len(self.received)
        with trio.fail_after(TIMEOUT):
            while len(self.received) - start < size:
                data = await self.stream.receive_some(65536)
                assert data, f"the stream ended after {len(self.received) - start} of {size}"
                self.received += data
        return bytes(self.received[start:])

    async def read_to_end(self) -> bytes:
        """Everything up to the end of the stream."""
        start = len(self.received)
        with trio.fail_after(TIMEOUT):
            while data := await self.stream.receive_some(65536):
                self.received += data
        return bytes(self.received[start:])


@pytest.fixture
async def pair() -> AsyncIterator[tuple[CoalescingStream, Peer]]:
    ours, theirs = trio.socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    transport = CoalescingStream(trio.SocketStream(ours), max_pending=3)
    peer = Peer(trio.SocketStream(theirs))
    try:
        yield transport, peer
    finally:
        await transport.abort()
        await peer.stream.aclose()


def frame(index: int) -> bytes:
    return server_frame(TEXT, b'{"seq":%d}' % index)


async def finish(transport: CoalescingStream, peer: Peer, code: int, reason: str = "") -> bytes:
    """``transport.finish`` while the peer reads to the end, then closes its side."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(transport.finish, code, reason)
        data = await peer.read_to_end()
        await peer.stream.send_eof()
    assert transport.state is State.CLOSED
    return data


async def opened(transport: CoalescingStream, peer: Peer) -> None:
    """Through the handshake, as trio-websocket would send its 101 response."""
    await transport.send_all(OPENED)
    assert transport.state is State.OPEN
    assert await peer.read(len(OPENED)) == OPENED


# ------------------------------------------------------------------ writing


async def test_small_frames_go_straight_to_the_socket(pair):
    transport, peer = pair
    await opened(transport, peer)
    frames = [frame(i) for i in range(5)]
    for data in frames:
        assert transport.write_nowait(data)  # more than max_pending: none waits
    assert await peer.read(sum(map(len, frames))) == b"".join(frames)
    assert not transport.backlogged()


async def test_a_partial_write_queues_the_rest_and_the_writer_sends_it_in_order(pair):
    transport, peer = pair
    await opened(transport, peer)
    assert transport.write_nowait(BIG)  # the kernel takes part of it
    assert transport.backlogged()
    assert transport.write_nowait(frame(1))  # behind the rest: never interleaved
    assert transport.write_nowait(frame(2))
    with trio.fail_after(TIMEOUT):
        await transport.wait_pending()  # returns at once: frames are queued
    expected = BIG + frame(1) + frame(2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(transport.flush)
        data = await peer.read(len(expected))
    assert data == expected
    assert split_frames(data) == (
        [(BINARY, True, PAYLOAD), (TEXT, True, b'{"seq":1}'), (TEXT, True, b'{"seq":2}')], b"")
    assert not transport.backlogged()


async def test_the_queue_is_bounded_and_refuses_without_queueing(pair):
    transport, peer = pair
    await opened(transport, peer)
    assert transport.write_nowait(BIG)  # partly written; its rest counts as one message
    assert transport.write_nowait(frame(1), count=2)  # 3 of max_pending=3
    assert not transport.write_nowait(frame(2))  # would be 4: refused
    assert not transport.write_nowait(frame(3), count=5)
    expected = BIG + frame(1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(transport.flush)
        assert await peer.read(len(expected)) == expected
    assert transport.write_nowait(frame(4))  # room again: straight to the socket
    assert await peer.read(len(frame(4))) == frame(4)


async def test_discard_keeps_the_half_written_frame_whole(pair):
    """A slow consumer's queue is dropped, but the frame on the wire is finished first."""
    transport, peer = pair
    await opened(transport, peer)
    assert transport.write_nowait(BIG)
    assert transport.write_nowait(frame(1))
    transport.discard_pending()
    assert transport.backlogged()  # the rest of BIG
    async with trio.open_nursery() as nursery:
        nursery.start_soon(transport.flush)
        assert await peer.read(len(BIG)) == BIG
    rest = await finish(transport, peer, 4008, "slow consumer")  # the close frame next
    assert split_frames(rest)[0] == [(CLOSE, True, (4008).to_bytes(2, "big") + b"slow consumer")]


async def test_discard_with_nothing_half_written_drops_everything(pair):
    transport, peer = pair
    await opened(transport, peer)
    assert transport.write_nowait(BIG)
    async with trio.open_nursery() as nursery:  # the writer takes the queue: a write under way
        nursery.start_soon(transport.flush)
        await trio.testing.wait_all_tasks_blocked()
        assert transport.write_nowait(frame(1))  # queued behind the write in progress
        transport.discard_pending()  # frame(1) was not started: it goes
        assert await peer.read(len(BIG)) == BIG
    reader = FrameReader()
    reader.feed(await finish(transport, peer, 1000))
    assert reader.next_frame() == (CLOSE, True, (1000).to_bytes(2, "big"))
    assert reader.next_frame() is None
    assert reader.unread == b""


async def tear(transport: CoalescingStream, *queued: bytes) -> None:
    """Cancel the writer while it waits with part of BIG on the wire (``queued`` behind it)."""
    assert transport.write_nowait(BIG)
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(transport.flush)
            await trio.testing.wait_all_tasks_blocked()  # the peer does not read: it waits
            for data in queued:
                assert transport.write_nowait(data)  # queued behind the write under way
            scope.cancel()
    assert transport.torn


async def test_a_write_cut_by_cancellation_tears_the_stream(pair):
    """Part of a frame is on the wire: nothing may follow it, not even a close frame."""
    transport, peer = pair
    await opened(transport, peer)
    await tear(transport)
    assert transport.write_nowait(frame(1))  # accepted and dropped: the connection is ending
    with pytest.raises(trio.ClosedResourceError):
        await transport.send_all(frame(2))
    await transport.finish(1000)  # no close frame into the middle of BIG
    assert transport.state is State.CLOSED
    data = await peer.read_to_end()
    assert 0 < len(data) < len(BIG)
    assert data == BIG[:len(data)]
    frames, rest = split_frames(data)
    assert (frames, rest) == ([], data)  # a torn frame, and nothing else


async def test_frames_queued_before_a_tear_are_never_sent(pair):
    transport, peer = pair
    await opened(transport, peer)
    await tear(transport, frame(1))
    with pytest.raises(trio.BrokenResourceError, match="cut mid-frame"):
        await transport.flush()
    await transport.abort()
    data = await peer.read_to_end()
    assert len(data) < len(BIG)
    assert data == BIG[:len(data)]


# ------------------------------------------------------------------ closing


async def test_backlogged_counts_what_the_peer_has_not_read(pair):
    transport, peer = pair
    await opened(transport, peer)
    assert transport.write_nowait(frame(1))
    assert transport.backlogged()  # in the kernel, unread by the peer
    await peer.read(len(frame(1)))
    assert not transport.backlogged()


async def test_finish_sends_the_close_frame_then_eof_and_drains(pair):
    transport, peer = pair
    await opened(transport, peer)
    await peer.stream.send_all(b"late client bytes")  # read and dropped, never a reset
    frames, rest = split_frames(await finish(transport, peer, 1001, "going away"))
    assert rest == b""
    assert frames == [(CLOSE, True, (1001).to_bytes(2, "big") + b"going away")]


async def test_aclose_of_an_open_connection_is_deferred_until_finish(pair):
    """trio-websocket closes the stream after a protocol error without the close frame."""
    transport, peer = pair
    await opened(transport, peer)
    await transport.aclose()
    assert transport.state is State.FAILED
    with pytest.raises(trio.ClosedResourceError):
        await transport.receive_some(10)  # reading stops
    assert transport.write_nowait(frame(1))  # frames still go out, before the close frame
    frames, rest = split_frames(await finish(transport, peer, 1002, "protocol error"))
    assert rest == b""
    assert [opcode for opcode, _, _ in frames] == [TEXT, CLOSE]
    assert close_code(frames[-1][2]) == 1002


async def test_a_close_frame_sent_by_the_library_stops_writes(pair):
    transport, peer = pair
    await opened(transport, peer)
    close = server_frame(CLOSE, (1000).to_bytes(2, "big"))
    await transport.send_all(close)
    assert transport.state is State.CLOSING
    assert transport.write_nowait(frame(1))  # ignored: the close frame was the last word
    with pytest.raises(trio.ClosedResourceError):
        await transport.send_all(close)  # nor a second close frame
    await transport.abort()
    assert await peer.read_to_end() == close


async def test_aclose_during_the_handshake_closes_at_once(pair):
    transport, peer = pair
    await transport.aclose()
    assert transport.state is State.CLOSED
    assert await peer.read_to_end() == b""
