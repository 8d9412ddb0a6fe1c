"""permessage-deflate (RFC 7692): the offer we accept, and both directions of compression.

Rules of this module:

* Pure: no trio, no sockets, no clock. ``zlib`` does the compressing.
* We always answer with ``server_no_context_takeover``: every message is
  compressed on its own, so one compressed frame serves every subscriber that
  negotiated the same window, exactly as one plain frame serves the others.
  We always add ``client_no_context_takeover`` (RFC 7692, 7.1.1.2 lets a
  server do so): a client's message never needs an earlier one, so nothing
  is kept per connection between messages.
* The server's window is the client's ``server_max_window_bits`` (9 to 15),
  else 15. ``zlib`` cannot produce an 8-bit raw window, so an offer asking for
  8 is declined and the client may fall back to its next offer, or to no
  compression. An offer with an unknown, repeated or malformed parameter is
  declined too (7.1: "MUST decline").
* :class:`MessageDeflater` compresses one message at a time with one
  compressor per window size, reset between messages by a full flush (which
  forgets every earlier byte). A message that would not shrink is sent plain:
  RFC 7692 lets each message choose.
* :class:`Inflater` sits under wsproto, which is not told about the extension
  (trio-websocket gives no way to): it turns a client's compressed frames into
  plain ones before wsproto reads them, and passes every other frame through
  untouched, broken ones included, so wsproto still judges them. It never
  inflates past ``limit`` bytes per message, which stops a zip bomb early.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

import attrs

from gateway._frames import (
    BINARY,
    CONTINUATION,
    RSV1,
    RSV2,
    RSV3,
    TEXT,
    client_frame_header,
    read_header,
    unmask,
)

EXTENSION = "permessage-deflate"
HEADER = b"sec-websocket-extensions"
LEVEL = 6
"""zlib's default level; see bench/README.md ("permessage-deflate") for what it costs."""
_DEFAULT_WINDOW = 15
_TAIL = b"\x00\x00\xff\xff"  # RFC 7692, 7.2.1: the end of a sync flush, not sent
_WINDOWS = {str(bits): bits for bits in range(8, 16)}  # RFC 7692, 7.1.2: 8..15, no leading 0

MESSAGE_TOO_BIG = 1009
INVALID_PAYLOAD = 1007


@attrs.frozen
class Agreement:
    """What was agreed: our compressor's window, and the header value that says so."""

    window_bits: int
    response: bytes


def _params(offer: str) -> tuple[str, dict[str, str | None]] | None:
    """An offer's name and parameters; None when a parameter is repeated or malformed."""
    name, *parts = (part.strip() for part in offer.split(";"))
    params: dict[str, str | None] = {}
    for part in parts:
        key, equals, value = (item.strip() for item in part.partition("="))
        if not key or key in params or (equals and not value):
            return None
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        params[key.lower()] = value if equals else None
    return name.lower(), params


def _accept(params: dict[str, str | None]) -> Agreement | None:
    """Our answer to one permessage-deflate offer, or None to decline it."""
    window = _DEFAULT_WINDOW
    answer = [EXTENSION, "server_no_context_takeover", "client_no_context_takeover"]
    for key, value in params.items():
        if key in ("server_no_context_takeover", "client_no_context_takeover"):
            if value is not None:
                return None
        elif key == "client_max_window_bits":
            # Any client window inflates with our 15-bit one: no need to limit it.
            if value is not None and value not in _WINDOWS:
                return None
        elif key == "server_max_window_bits":
            bits = _WINDOWS.get(value or "")
            if bits is None or bits < 9:
                return None
            window = bits
            answer.append(f"server_max_window_bits={bits}")
        else:
            return None
    return Agreement(window, "; ".join(answer).encode("ascii"))


def negotiate(headers: Iterable[tuple[bytes, bytes]]) -> Agreement | None:
    """The first permessage-deflate offer of the request we can accept, if any.

    Args:
        headers: the opening handshake's headers, names in lower case.
    """
    for name, value in headers:
        if name.lower() != HEADER:
            continue
        for offer in value.decode("latin-1").split(","):
            parsed = _params(offer)
            if parsed is None or parsed[0] != EXTENSION:
                continue
            agreement = _accept(parsed[1])
            if agreement is not None:
                return agreement
    return None


class MessageDeflater:
    """Compresses whole messages, each independent of the others, with one window size."""

    __slots__ = ("_compressor",)

    def __init__(self, window_bits: int, level: int = LEVEL) -> None:
        self._compressor = zlib.compressobj(level, zlib.DEFLATED, -window_bits)

    def compress(self, payload: bytes) -> bytes | None:
        """``payload`` as a compressed message's frame payload; None if it would not shrink.

        The full flush ends the message on a byte boundary with an empty stored
        block, whose four bytes RFC 7692 says not to send, and clears the
        compressor's history, so the next message refers to nothing before it.
        """
        compressor = self._compressor
        data = compressor.compress(payload) + compressor.flush(zlib.Z_FULL_FLUSH)
        if not data.endswith(_TAIL):  # never with zlib; a guard, not a path
            raise AssertionError("a full flush must end with an empty stored block")
        data = data[:-4]
        return data if len(data) < len(payload) else None


class InflateError(Exception):
    """A client's compressed message cannot be accepted: fail the connection with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Inflater:
    """Turns a client's byte stream with compressed messages into one without.

    Args:
        limit: the largest message, in bytes once inflated; more is refused with 1009.
    """

    __slots__ = ("_buffer", "_decompressor", "_limit", "_message", "_passing", "_size")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._buffer = bytearray()
        self._passing = 0  # payload bytes of a frame passed through, still to come
        self._message: bool | None = None  # a fragmented message: compressed or not
        self._decompressor: zlib._Decompress | None = None
        self._size = 0  # inflated so far in this message

    def feed(self, data: bytes) -> bytes:
        """The bytes wsproto should see for ``data``; possibly none yet.

        Raises:
            InflateError: invalid compressed data (1007), or a message over the limit (1009).
        """
        buffer = self._buffer
        buffer += data
        out = bytearray()
        while buffer:
            if self._passing:
                taken = buffer[:self._passing]
                del buffer[:len(taken)]
                self._passing -= len(taken)
                out += taken
                continue
            header = read_header(buffer)
            if header is None:
                break
            compressed = self._compressed(header.first, header.opcode, header.masked)
            if not compressed:
                out += buffer[:header.size]
                del buffer[:header.size]
                self._passing = header.length
                self._track(header.first, header.opcode, compressed)
                continue
            if header.length > self._limit:
                raise InflateError(MESSAGE_TOO_BIG, f"messages are limited to {self._limit} bytes")
            end = header.size + header.length
            if len(buffer) < end:
                break
            payload = unmask(buffer[header.size:end], buffer[header.key])
            del buffer[:end]
            self._track(header.first, header.opcode, compressed)
            plain = self._inflate(payload, header.fin)
            out += client_frame_header(header.first & ~RSV1, len(plain)) + plain
        return bytes(out)

    def _compressed(self, first: int, opcode: int, masked: bool) -> bool:
        """Whether this frame carries compressed data.

        Anything irregular (an unmasked frame, RSV2/RSV3, RSV1 on a continuation
        or a control frame, a message inside a message) passes through as it is,
        for wsproto to refuse with the code the RFC gives.
        """
        if opcode in (TEXT, BINARY):
            # A new message inside another passes: wsproto says 1002.
            return self._message is None and masked and first & (RSV1 | RSV2 | RSV3) == RSV1
        if opcode == CONTINUATION and self._message:
            return masked and not first & (RSV1 | RSV2 | RSV3)
        return False

    def _track(self, first: int, opcode: int, compressed: bool) -> None:
        """Follow fragmented messages, once a frame's header has been handled."""
        fin = bool(first & 0x80)
        if opcode in (TEXT, BINARY):
            if self._message is None and not fin:
                self._message = compressed
        elif opcode == CONTINUATION and self._message is not None and fin:
            self._message = None

    def _inflate(self, payload: bytes, fin: bool) -> bytes:
        decompressor = self._decompressor
        if decompressor is None:
            decompressor = self._decompressor = zlib.decompressobj(-_DEFAULT_WINDOW)
        budget = self._limit - self._size
        try:
            # One byte over the budget is enough to know the message is too big.
            plain = decompressor.decompress(payload, budget + 1)
            if fin and len(plain) <= budget:
                plain += decompressor.decompress(_TAIL, budget + 1 - len(plain))
        except zlib.error as exc:
            raise InflateError(INVALID_PAYLOAD, f"invalid compressed data: {exc}") from None
        if len(plain) > budget:
            raise InflateError(MESSAGE_TOO_BIG, f"messages are limited to {self._limit} bytes")
        self._size += len(plain)
        if fin:
            self._decompressor = None  # client_no_context_takeover
            self._size = 0
        return plain
