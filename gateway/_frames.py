"""RFC 6455 frames: the project's one frame codec, for the server, the benches and the tests.

Rules of this module:

* Pure functions over bytes: no trio, no sockets, no clock, no randomness. A
  client frame's masking key is the caller's (RFC 6455, 5.3 wants it random:
  ``os.urandom(4)``), so the same arguments always build the same bytes.
* One header layout, written by :func:`frame_header` and read by
  :func:`frame_at`; everything else here is built on those two. Lengths use
  the shortest form (7, 16 or 64 bits), as the RFC requires.
* Encoding builds any frame: server frames are unmasked, client frames are
  masked; any opcode, any RSV bits, FIN or not (a fragmented message is its
  first frame without FIN, then CONTINUATION frames, the last with FIN). The
  server's own frames are pre-built by :func:`text_frame`,
  :func:`deflated_text_frame` (RFC 7692; the payload comes from
  ``gateway/_deflate.py``), :func:`close_frame` and :data:`PING`, and one
  message's frame is the same bytes for every subscriber that reads it the
  same way: the fan-out builds it once and hands the same ``bytes`` to each.
* Decoding only splits: :func:`frame_at` finds a frame's parts without
  copying, :func:`split_frames` and :class:`FrameReader` return whole frames
  (unmasked) and keep the incomplete rest for the next bytes. Nothing is
  validated (reserved bits and opcodes, fragmentation, control frame sizes
  come back as sent): judging a peer is wsproto's job on the server, and the
  tests' on the client side. ``tests/gateway/test_frames_codec.py`` checks
  both directions against wsproto.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

CONTINUATION, TEXT, BINARY, CLOSE, PING_OPCODE, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
FIN, RSV1, RSV2, RSV3 = 0x80, 0x40, 0x20, 0x10
_MASKED = 0x80  # in the second byte

_FIN_TEXT = FIN | TEXT
_FIN_RSV1_TEXT = FIN | RSV1 | TEXT  # "this message is compressed" (RFC 7692, 6)
_FIN_CLOSE = FIN | CLOSE

PING = bytes([FIN | PING_OPCODE, 0])
"""The server's ping, with no payload. The client's pong (any bytes at all, in fact) proves
it alive."""

MAX_CONTROL_PAYLOAD = 125
"""RFC 6455, 5.5: a control frame's payload, a close frame's code and reason included."""

_SHORT = struct.Struct("!BB")
_MEDIUM = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")
_CODE = struct.Struct("!H")
_ZERO_KEY = b"\0\0\0\0"

Frame = tuple[int, bool, bytes]
"""A decoded frame: ``(opcode, fin, payload)``, the payload unmasked."""


# ------------------------------------------------------------------ encoding


def frame_header(first: int, length: int, key: bytes | None = None) -> bytes:
    """A frame's header: ``first`` (FIN, RSV bits, opcode), the length, and ``key`` if masked.

    ``length`` is what the header announces; it need not be the length of what
    follows (the abuse tests announce lengths they never send).
    """
    if key is None:
        if length < 126:
            return _SHORT.pack(first, length)
        if length < 1 << 16:
            return _MEDIUM.pack(first, 126, length)
        return _LONG.pack(first, 127, length)
    if length < 126:
        return _SHORT.pack(first, _MASKED | length) + key
    if length < 1 << 16:
        return _MEDIUM.pack(first, _MASKED | 126, length) + key
    return _LONG.pack(first, _MASKED | 127, length) + key


def unmask(payload: bytes | bytearray, key: bytes | bytearray) -> bytes:
    """XOR ``payload`` with the 4-byte masking ``key`` (RFC 6455, 5.3); its own inverse."""
    size = len(payload)
    if not size:
        return b""
    stream = (bytes(key) * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(size, "big")


def server_frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0) -> bytes:
    """An unmasked frame, as a server sends it.

    Args:
        opcode: any 4-bit opcode, reserved ones included.
        fin: False for every frame of a fragmented message but its last.
        rsv: the RSV bits to set, e.g. ``RSV1`` (0x40).
    """
    return frame_header((FIN if fin else 0) | rsv | opcode, len(payload)) + payload


def client_frame(opcode: int, payload: bytes, *, key: bytes, fin: bool = True,
                 rsv: int = 0) -> bytes:
    """A frame masked with the 4-byte ``key``, as a client sends it.

    The other arguments are those of :func:`server_frame`.
    """
    return frame_header((FIN if fin else 0) | rsv | opcode, len(payload), key) + unmask(
        payload, key)


def client_frame_header(first: int, length: int) -> bytes:
    """A masked frame header with an all-zero key: the payload that follows goes as is."""
    return frame_header(first, length, _ZERO_KEY)


def text_frame(payload: bytes) -> bytes:
    """One unfragmented, unmasked text frame carrying ``payload`` (UTF-8 JSON)."""
    return frame_header(_FIN_TEXT, len(payload)) + payload


def deflated_text_frame(compressed: bytes) -> bytes:
    """One unfragmented text frame whose payload is a permessage-deflate compressed message."""
    return frame_header(_FIN_RSV1_TEXT, len(compressed)) + compressed


def sendable_close_code(code: int) -> bool:
    """Whether ``code`` may travel in a close frame (RFC 6455, 7.4: 1005, 1006, 1015 never)."""
    return 1000 <= code <= 4999 and code not in (1004, 1005, 1006, 1015)


def close_frame(code: int, reason: str = "") -> bytes:
    """A server's close frame with ``code`` and as much of ``reason`` as fits whole in 123 bytes."""
    if not sendable_close_code(code):
        raise ValueError(f"close code {code} may not be sent in a close frame")
    data = reason.encode("utf-8")[:MAX_CONTROL_PAYLOAD - 2]
    text = data.decode("utf-8", errors="ignore").encode("utf-8")  # never cut a character
    payload = _CODE.pack(code) + text
    return frame_header(_FIN_CLOSE, len(payload)) + payload


def close_code(payload: bytes) -> int | None:
    """The status code in a close frame's payload; None when it carries none."""
    return _CODE.unpack_from(payload)[0] if len(payload) >= 2 else None


# ------------------------------------------------------------------ decoding


def frame_at(data: bytes | bytearray, pos: int = 0, *, header_only: bool = False,
             ) -> tuple[int, int, int, int] | None:
    """Where the parts of the frame starting at ``data[pos]`` lie; None until it is all there.

    Returns ``(first, key_at, start, end)``: the first byte (FIN, RSV bits,
    opcode), the offset of the masking key (``== start`` when the frame is not
    masked), and the payload's slice ``data[start:end]``, still masked. The
    next frame starts at ``end``. Nothing is copied: a hot loop can look into
    the payload in place. With ``header_only``, the payload need not have
    arrived yet.
    """
    n = len(data)  # the shape of this body is the fastest found: it runs once per frame
    if n - pos < 2:  # in the benches' hot loops (bench/loadgen.py)
        return None
    second = data[pos + 1]
    length = second & 0x7F
    if length < 126:
        start = pos + 2
    elif length == 126:
        if n - pos < 4:
            return None
        length = (data[pos + 2] << 8) | data[pos + 3]
        start = pos + 4
    else:
        if n - pos < 10:
            return None
        length = int.from_bytes(data[pos + 2:pos + 10], "big")
        start = pos + 10
    key_at = start
    if second >= 0x80:  # masked
        start += 4
    end = start + length
    if end <= n or (header_only and start <= n):
        return data[pos], key_at, start, end
    return None


def split_frames(buffer: bytes | bytearray) -> tuple[list[Frame], bytes]:
    """The whole frames at the start of ``buffer``, unmasked, and the incomplete rest.

    Feed the rest back in front of the next bytes read.
    """
    frames: list[Frame] = []
    pos = 0
    while (where := frame_at(buffer, pos)) is not None:
        first, key_at, start, pos = where
        payload = bytes(buffer[start:pos])
        if key_at < start:
            payload = unmask(payload, buffer[key_at:start])
        frames.append((first & 0x0F, first >= FIN, payload))
    return frames, bytes(buffer[pos:])


class FrameReader:
    """An incremental splitter: bytes in (:meth:`feed`), whole frames out, one at a time.

    Bytes after the last whole frame stay unread (:attr:`unread`) until more arrive.
    """

    __slots__ = ("_buffer", "_pos")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._pos = 0  # what is before it was returned already

    def feed(self, data: bytes) -> None:
        if self._pos:
            del self._buffer[:self._pos]
            self._pos = 0
        self._buffer += data

    def next_frame(self) -> Frame | None:
        """The next whole frame, unmasked; None until more bytes are fed."""
        buffer = self._buffer
        where = frame_at(buffer, self._pos)
        if where is None:
            return None
        first, key_at, start, self._pos = where
        payload = bytes(buffer[start:self._pos])
        if key_at < start:
            payload = unmask(payload, buffer[key_at:start])
        return first & 0x0F, first >= FIN, payload

    @property
    def unread(self) -> bytes:
        """The bytes fed but not returned in a frame: an incomplete frame, or nothing."""
        return bytes(self._buffer[self._pos:])


class Header(NamedTuple):
    """A frame's header as read from the wire."""

    first: int  # FIN, RSV1-3 and the opcode, as sent
    opcode: int
    masked: bool
    length: int  # of the payload
    size: int  # of the header itself, masking key included

    @property
    def fin(self) -> bool:
        return bool(self.first & FIN)

    @property
    def key(self) -> slice:
        """Where the masking key sits in the frame (empty for an unmasked frame)."""
        return slice(self.size - 4 if self.masked else self.size, self.size)


def read_header(data: bytes | bytearray) -> Header | None:
    """The header at the start of ``data``; None until all of it has arrived.

    Unlike :func:`split_frames`, this needs no payload: a reader that passes
    payloads through as they come (``gateway/_deflate.py``) reads headers only.
    Never raises: a header that breaks the rules (a 64-bit length with its top
    bit set, say) is returned as read, and whoever validates frames refuses it.
    """
    where = frame_at(data, 0, header_only=True)
    if where is None:
        return None
    first, key_at, start, end = where
    return Header(first, first & 0x0F, key_at < start, end - start, start)
