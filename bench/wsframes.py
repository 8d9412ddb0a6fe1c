"""Minimal RFC 6455 framing for the load generator: masked client frames, cheap parsing.

Rules of this module:

* Pure: no sockets, no clock. The load workers and the probe clients feed it bytes.
* Client frames are always masked (RFC 6455 section 5.3) with a random key.
* Server frames are unmasked; several may arrive in one ``recv``, and one may be
  split across several; lengths may be 7-, 16- or 64-bit. :func:`split_frames`
  handles all of that and returns what is left over for the next chunk.
* Stream messages are not decoded as JSON: :func:`int_field` finds ``"seq":`` and
  ``"published_ns":`` with ``bytes.rfind`` and converts only those digits.
"""

from __future__ import annotations

import os
import struct

TEXT = 0x1
BINARY = 0x2
CONTINUATION = 0x0
CLOSE = 0x8
PING = 0x9
PONG = 0xA

SEQ_KEY = b'"seq":'
PUBLISHED_KEY = b'"published_ns":'


def masked_frame(opcode: int, payload: bytes, key: bytes | None = None) -> bytes:
    """One final client frame (FIN set), masked with ``key`` (4 random bytes by default)."""
    size = len(payload)
    if size < 126:
        head = bytes((0x80 | opcode, 0x80 | size))
    elif size < 1 << 16:
        head = bytes((0x80 | opcode, 0x80 | 126)) + struct.pack("!H", size)
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + struct.pack("!Q", size)
    if key is None:
        key = os.urandom(4)
    stream = (key * (size // 4 + 1))[:size]
    body = (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(size, "big")
    return head + key + body


def server_frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """An unmasked frame as a server sends it (for tests and the parser's own checks)."""
    size = len(payload)
    first = (0x80 if fin else 0) | opcode
    if size < 126:
        return bytes((first, size)) + payload
    if size < 1 << 16:
        return bytes((first, 126)) + struct.pack("!H", size) + payload
    return bytes((first, 127)) + struct.pack("!Q", size) + payload


def unmask(payload: bytes, key: bytes) -> bytes:
    size = len(payload)
    stream = (key * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(size, "big")


def split_frames(buffer: bytes) -> tuple[list[tuple[int, bool, bytes]], bytes]:
    """Complete frames at the start of ``buffer`` and the incomplete rest.

    Each frame is ``(opcode, fin, payload)``. A masked server frame (a protocol
    error, but harmless to read) is unmasked. The hot loop in ``bench.loadgen``
    inlines the same steps; this is the readable reference the tests check.
    """
    frames: list[tuple[int, bool, bytes]] = []
    n = len(buffer)
    pos = 0
    while n - pos >= 2:
        b1 = buffer[pos + 1]
        length = b1 & 0x7F
        head = pos + 2
        if length == 126:
            if n - pos < 4:
                break
            length = (buffer[pos + 2] << 8) | buffer[pos + 3]
            head = pos + 4
        elif length == 127:
            if n - pos < 10:
                break
            length = int.from_bytes(buffer[pos + 2:pos + 10], "big")
            head = pos + 10
        key = b""
        if b1 & 0x80:
            key = buffer[head:head + 4]
            head += 4
        end = head + length
        if end > n:
            break
        payload = buffer[head:end]
        if key:
            payload = unmask(payload, key)
        frames.append((buffer[pos] & 0x0F, bool(buffer[pos] & 0x80), payload))
        pos = end
    return frames, buffer[pos:]


def int_field(data: bytes, key: bytes, start: int = 0, end: int | None = None) -> int | None:
    """The integer value of the last top-level ``key`` (e.g. ``b'"seq":'``) in ``data[start:end]``.

    No JSON decoding: the value runs from the key to the next ``,`` or ``}``.
    None when the key is absent.
    """
    if end is None:
        end = len(data)
    i = data.rfind(key, start, end)
    if i < 0:
        return None
    i += len(key)
    j = data.find(b",", i, end)
    if j < 0:
        j = data.find(b"}", i, end)
        if j < 0:
            j = end
    return int(data[i:j])


def close_code(payload: bytes) -> int | None:
    """The status code of a close frame's payload (None when it carries none)."""
    return int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
