"""RFC 6455 frames: server frames built once and shared, and the reading of frame headers.

Rules of this module: pure functions, no I/O. A server's frames are never
masked. One message's frame is the same bytes for every subscriber that
reads it the same way: plain (:func:`text_frame`), or compressed with
permessage-deflate (:func:`deflated_text_frame`, RFC 7692; the payload comes
from ``gateway/_deflate.py``). The fan-out builds each once per channel and
hands the same ``bytes`` object to each connection.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

_FIN_TEXT = 0x81  # FIN bit + opcode 1 (text)
_FIN_RSV1_TEXT = 0xC1  # the same with RSV1: "this message is compressed" (RFC 7692, 6)
_FIN_CLOSE = 0x88

CONTINUATION, TEXT, BINARY, CLOSE, PING_OPCODE, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
FIN, RSV1, RSV2, RSV3 = 0x80, 0x40, 0x20, 0x10

PING = bytes([0x89, 0])
"""A ping with no payload. The client's pong (any bytes at all, in fact) proves it alive."""
_SHORT = struct.Struct("!BB")
_MEDIUM = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")
_CODE = struct.Struct("!H")

MAX_CONTROL_PAYLOAD = 125
"""RFC 6455, 5.5: a control frame's payload, a close frame's code and reason included."""


def _frame(first: int, payload: bytes) -> bytes:
    size = len(payload)
    if size < 126:
        return _SHORT.pack(first, size) + payload
    if size < 1 << 16:
        return _MEDIUM.pack(first, 126, size) + payload
    return _LONG.pack(first, 127, size) + payload


def text_frame(payload: bytes) -> bytes:
    """One unfragmented, unmasked text frame carrying ``payload`` (UTF-8 JSON)."""
    return _frame(_FIN_TEXT, payload)


def deflated_text_frame(compressed: bytes) -> bytes:
    """One unfragmented text frame whose payload is a permessage-deflate compressed message."""
    return _frame(_FIN_RSV1_TEXT, compressed)


def sendable_close_code(code: int) -> bool:
    """Whether ``code`` may travel in a close frame (RFC 6455, 7.4: 1005, 1006, 1015 never)."""
    return 1000 <= code <= 4999 and code not in (1004, 1005, 1006, 1015)


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame with ``code`` and as much of ``reason`` as fits whole in 123 bytes."""
    if not sendable_close_code(code):
        raise ValueError(f"close code {code} may not be sent in a close frame")
    data = reason.encode("utf-8")[:MAX_CONTROL_PAYLOAD - 2]
    text = data.decode("utf-8", errors="ignore").encode("utf-8")  # never cut a character
    return _frame(_FIN_CLOSE, _CODE.pack(code) + text)


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

    Never raises: a header that breaks the rules (a 64-bit length with its top
    bit set, say) is returned as read, and whoever validates frames refuses it.
    """
    available = len(data)
    if available < 2:
        return None
    first, second = data[0], data[1]
    length, size = second & 0x7F, 2
    if length == 126:
        if available < 4:
            return None
        length, size = int.from_bytes(data[2:4], "big"), 4
    elif length == 127:
        if available < 10:
            return None
        length, size = int.from_bytes(data[2:10], "big"), 10
    masked = bool(second & 0x80)
    if masked:
        size += 4
        if available < size:
            return None
    return Header(first, first & 0x0F, masked, length, size)


def client_frame_header(first: int, length: int) -> bytes:
    """A masked frame header with an all-zero key: the payload that follows goes as is."""
    if length < 126:
        return _SHORT.pack(first, 0x80 | length) + b"\0\0\0\0"
    if length < 1 << 16:
        return _MEDIUM.pack(first, 0x80 | 126, length) + b"\0\0\0\0"
    return _LONG.pack(first, 0x80 | 127, length) + b"\0\0\0\0"


def unmask(payload: bytes | bytearray, key: bytes | bytearray) -> bytes:
    """XOR ``payload`` with the 4-byte masking ``key`` (RFC 6455, 5.3); its own inverse."""
    size = len(payload)
    if not size:
        return b""
    stream = (bytes(key) * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(size, "big")
