"""RFC 6455 server frames, built once and shared by every client.

Rules of this module: a server's frames are never masked, and the gateway
never compresses (no extension is negotiated), so one message's frame is the
same bytes for every subscriber. The fan-out builds it once per channel and
hands the same ``bytes`` object to each connection. Pure functions, no I/O.
"""

from __future__ import annotations

import struct

_FIN_TEXT = 0x81  # FIN bit + opcode 1 (text)

PING = bytes([0x89, 0])
"""A ping with no payload. The client's pong (any bytes at all, in fact) proves it alive."""
_SHORT = struct.Struct("!BB")
_MEDIUM = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")


def text_frame(payload: bytes) -> bytes:
    """One unfragmented, unmasked text frame carrying ``payload`` (UTF-8 JSON)."""
    size = len(payload)
    if size < 126:
        return _SHORT.pack(_FIN_TEXT, size) + payload
    if size < 1 << 16:
        return _MEDIUM.pack(_FIN_TEXT, 126, size) + payload
    return _LONG.pack(_FIN_TEXT, 127, size) + payload
