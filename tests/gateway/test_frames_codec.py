"""The one frame codec (``gateway/_frames.py``) against wsproto as the oracle.

Both directions, with hypothesis: frames wsproto builds must be the bytes ours
builds (unmasked exactly; masked once given wsproto's key) and must decode, with
ours, to what wsproto was given; frames ours builds must decode, with wsproto,
to what ours was given. Every opcode (the reserved ones only ours can build and
read: wsproto refuses them), payload lengths across the 125/126 and 65535/65536
boundaries, masked and unmasked, whole and fragmented with control frames in
between, and the bytes fed whole, byte by byte, and in random chunks.
"""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameProtocol, Opcode, ParseFailed

from gateway._frames import (
    BINARY,
    CLOSE,
    CONTINUATION,
    FIN,
    PING,
    PING_OPCODE,
    PONG,
    RSV1,
    RSV3,
    TEXT,
    FrameReader,
    client_frame,
    client_frame_header,
    close_code,
    close_frame,
    deflated_text_frame,
    frame_at,
    frame_header,
    read_header,
    server_frame,
    split_frames,
    text_frame,
    unmask,
)

BOUNDARIES = [0, 1, 2, 3, 4, 5, 124, 125, 126, 127, 128, 65534, 65535, 65536, 65537]
RESERVED = [0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF]
CONTROL = [CLOSE, PING_OPCODE, PONG]

lengths = st.sampled_from(BOUNDARIES) | st.integers(0, 70_000)
keys = st.binary(min_size=4, max_size=4)


@st.composite
def payloads(draw: st.DrawFn, length: st.SearchStrategy[int] = lengths) -> bytes:
    """``length`` bytes of a drawn pattern (cheap at 64 KiB, unlike st.binary)."""
    size = draw(length)
    pattern = draw(st.binary(min_size=1, max_size=17))
    return (pattern * (size // len(pattern) + 1))[:size]


@st.composite
def texts(draw: st.DrawFn) -> bytes:
    """UTF-8 of about a drawn length: multi-byte characters, cut at a character boundary."""
    size = draw(lengths)
    pattern = draw(st.text(min_size=1, max_size=8)).encode()
    data = (pattern * (size // len(pattern) + 1))[:size]
    return data.decode("utf-8", "ignore").encode("utf-8")


close_payloads = st.builds(
    lambda code, reason: code.to_bytes(2, "big") + reason.encode()[:123].decode(
        "utf-8", "ignore").encode(),
    st.sampled_from([1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4000, 4999]),
    st.text(max_size=40),
) | st.just(b"")
control_frames = st.one_of(
    st.tuples(st.just(PING_OPCODE), payloads(st.integers(0, 125))),
    st.tuples(st.just(PONG), payloads(st.integers(0, 125))),
)


@st.composite
def messages(draw: st.DrawFn) -> list[tuple[int, bool, bytes]]:
    """One message as frames ``(opcode, fin, payload)``: maybe fragmented, with pings and
    pongs between its fragments; or one ping or pong."""
    kind = draw(st.sampled_from([TEXT, BINARY, PING_OPCODE, PONG]))
    if kind in CONTROL:
        return [(kind, True, draw(payloads(st.integers(0, 125))))]
    data = draw(texts() if kind == TEXT else payloads())
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=4)))
    pieces = [data[a:b] for a, b in pairwise([0, *cuts, len(data)])]
    frames: list[tuple[int, bool, bytes]] = []
    for index, piece in enumerate(pieces):
        last = index == len(pieces) - 1
        frames.append((kind if index == 0 else CONTINUATION, last, piece))
        if not last:
            frames.extend((opcode, True, body) for opcode, body in draw(
                st.lists(control_frames, max_size=1)))
    return frames


conversations = st.builds(
    lambda ms, close: [frame for message in ms for frame in message] + close,
    st.lists(messages(), min_size=1, max_size=3),
    st.just([]) | close_payloads.map(lambda payload: [(CLOSE, True, payload)]),
)
"""Messages, then maybe a close frame: wsproto reads nothing after a close."""


def chunked(data: bytes, sizes: list[int], most: int | None = None) -> list[bytes]:
    """``data`` cut into chunks of the given sizes, cycled (byte by byte when ``[1]``);
    into ``most`` chunks at most (larger ones then), which keeps 64 KiB payloads cheap."""
    floor = -(-len(data) // most) if most else 1
    chunks, pos, i = [], 0, 0
    while pos < len(data):
        size = max(sizes[i % len(sizes)], floor)
        chunks.append(data[pos:pos + size])
        pos, i = pos + size, i + 1
    return chunks


def decode_ours(chunks: list[bytes]) -> list[tuple[int, bool, bytes]]:
    """Our decoder, both forms: :class:`FrameReader` and :func:`split_frames` with the rest
    carried over, fed the same chunks; they must agree."""
    reader = FrameReader()
    read: list[tuple[int, bool, bytes]] = []
    split: list[tuple[int, bool, bytes]] = []
    rest = b""
    for chunk in chunks:
        reader.feed(chunk)
        while (frame := reader.next_frame()) is not None:
            read.append(frame)
        frames, rest = split_frames(rest + chunk)
        split.extend(frames)
    assert reader.unread == b""
    assert rest == b""
    assert read == split
    return read


def decode_wsproto(data: bytes, chunks: list[bytes], *, client: bool) -> list[tuple]:
    """wsproto's reading of ``data`` (fed in ``chunks``), as whole messages.

    Returns ``(opcode, payload)`` per control frame and ``(opcode, message)`` per
    data message, the message as ``str`` for text; the fragments' frames are
    joined (wsproto reports each fragment under the message's opcode and may cut
    a frame's payload where a chunk ended).
    """
    protocol = FrameProtocol(client=client, extensions=[])
    out: list[tuple] = []
    parts: list[str | bytes] = []
    for chunk in chunks:
        protocol.receive_bytes(chunk)
        for frame in protocol.received_frames():
            if frame.opcode.iscontrol():
                assert frame.frame_finished
                out.append((int(frame.opcode), frame.payload))
                continue
            parts.append(frame.payload)
            if frame.frame_finished and frame.message_finished:
                joined = "".join(parts) if frame.opcode is Opcode.TEXT else b"".join(parts)
                out.append((int(frame.opcode), joined))
                parts = []
    assert not parts
    assert sum(map(len, chunks)) == len(data)
    return out


def as_messages(frames: list[tuple[int, bool, bytes]]) -> list[tuple]:
    """What wsproto should read from ``frames`` (see :func:`decode_wsproto`)."""
    out: list[tuple] = []
    opcode, parts = None, []
    for frame_opcode, fin, payload in frames:
        if frame_opcode in CONTROL:
            if frame_opcode == CLOSE:
                code = close_code(payload)
                out.append((CLOSE, (code if code is not None else 1005,
                                    payload[2:].decode())))
            else:
                out.append((frame_opcode, payload))
            continue
        if frame_opcode != CONTINUATION:
            opcode = frame_opcode
        parts.append(payload)
        if fin:
            joined = b"".join(parts)
            out.append((opcode, joined.decode() if opcode == TEXT else joined))
            opcode, parts = None, []
    return out


def wsproto_frames(frames: list[tuple[int, bool, bytes]], *, client: bool) -> list[bytes]:
    """The frames as wsproto builds them; text fragments are sent as bytes-exact str pieces."""
    protocol = FrameProtocol(client=client, extensions=[])
    built = []
    kind = None
    for opcode, fin, payload in frames:
        if opcode == CLOSE:
            code = close_code(payload)
            built.append(protocol.close(code, payload[2:].decode() if code else None))
            continue
        if opcode in (PING_OPCODE, PONG):
            built.append((protocol.ping if opcode == PING_OPCODE else protocol.pong)(payload))
            continue
        if opcode != CONTINUATION:
            kind = opcode
        if kind == BINARY:
            built.append(protocol.send_data(payload, fin))
        else:  # wsproto takes text as str: same opcode, then swap in the exact bytes
            head = bytes(protocol.send_data("", fin))
            built.append(_with_payload(head, payload, client=client))
    return [bytes(b) for b in built]


def _with_payload(empty_frame: bytes, payload: bytes, *, client: bool) -> bytes:
    """wsproto's frame for an empty payload, re-made around ``payload`` (same first byte,
    wsproto's own key)."""
    first, key_at, start, _ = frame_at(empty_frame)  # type: ignore[misc]
    key = empty_frame[key_at:start] if client else None
    return frame_header(first, len(payload), key) + (unmask(payload, key) if key else payload)


# --------------------------------------------------------------------- tests


@settings(max_examples=100, deadline=None)
@given(frames=conversations, sizes=st.lists(st.integers(1, 3000), min_size=1, max_size=4))
def test_server_frames_are_wsprotos_and_read_back(frames, sizes):
    ours = [server_frame(opcode, payload, fin=fin) for opcode, fin, payload in frames]
    assert ours == wsproto_frames(frames, client=False)
    both_read(b"".join(ours), frames, sizes, masked=False)


@settings(max_examples=100, deadline=None)
@given(frames=conversations, sizes=st.lists(st.integers(1, 3000), min_size=1, max_size=4))
def test_client_frames_are_wsprotos_with_its_keys_and_read_back(frames, sizes):
    theirs = wsproto_frames(frames, client=True)
    ours = []
    for (opcode, fin, payload), built in zip(frames, theirs, strict=True):
        _, key_at, start, _ = frame_at(built)  # type: ignore[misc]
        assert start - key_at == 4  # masked
        ours.append(client_frame(opcode, payload, fin=fin, key=built[key_at:start]))
    assert ours == theirs
    both_read(b"".join(ours), frames, sizes, masked=True)


def both_read(data: bytes, frames: list[tuple[int, bool, bytes]], sizes: list[int], *,
              masked: bool) -> None:
    """wsproto (on the receiving side) and ours read ``data`` as ``frames``, whole and in
    chunks of ``sizes``."""
    expected = as_messages(frames)
    for chunks in ([data], chunked(data, sizes, most=64)):
        assert decode_wsproto(data, chunks, client=not masked) == expected
        assert decode_ours(chunks) == frames


@settings(max_examples=40, deadline=None)
@given(frames=conversations, key=keys)
def test_byte_by_byte_reads_the_same_frames(frames, key):
    """Every byte fed alone, masked and not (payloads cut at 1000 bytes: past 125/126)."""
    for frame in (server_frame, lambda *a, **k: client_frame(*a, **k, key=key)):
        data = b"".join(frame(opcode, payload[:1000], fin=fin)
                        for opcode, fin, payload in frames)
        assert decode_ours(chunked(data, [1])) == [
            (opcode, fin, payload[:1000]) for opcode, fin, payload in frames]


def boundary_payload(opcode: int, length: int) -> bytes:
    """ASCII (valid text); a close frame's starts with code 1000."""
    filler = (bytes(range(48, 112)) * (length // 64 + 1))[:length]
    return (1000).to_bytes(2, "big") + filler[2:] if opcode == CLOSE and length >= 2 else filler


@pytest.mark.parametrize("opcode", range(16))
def test_every_opcode_at_every_length_boundary(opcode):
    """Each of the 16 opcodes at each boundary, masked and not: the shortest length form,
    read back whole and with the header fed byte by byte.

    wsproto reads what the RFC allows of it and refuses the rest (reserved
    opcodes, a lone continuation, a control frame over 125 bytes, a one-byte
    close payload), which ours builds and reads all the same.
    """
    for length in BOUNDARIES:
        for masked in (False, True):
            check_boundary(opcode, length, masked)


def check_boundary(opcode: int, length: int, masked: bool) -> None:
    case = (opcode, length, masked)
    payload = boundary_payload(opcode, length)
    key = b"\x9a\x01\xff\x10" if masked else None
    data = client_frame(opcode, payload, key=key) if masked else server_frame(opcode, payload)
    size = 2 + (0 if length < 126 else 2 if length < 65536 else 8) + (4 if masked else 0)
    assert len(data) == size + length, case
    assert data[0] == FIN | opcode, case
    assert bool(data[1] & 0x80) is masked, case
    header = read_header(data[:size])
    assert header is not None, case
    assert (header.opcode, header.fin, header.masked, header.length, header.size) == (
        opcode, True, masked, length, size), case
    assert read_header(data[:size - 1]) is None, case
    assert split_frames(data + data[:size - 1]) == ([(opcode, True, payload)], data[:size - 1])

    reader = FrameReader()
    for byte in chunked(data[:size], [1]):
        assert reader.next_frame() is None, case
        reader.feed(byte)
    if length:
        assert reader.next_frame() is None, case
        reader.feed(data[size:])
    assert reader.next_frame() == (opcode, True, payload), case

    protocol = FrameProtocol(client=not masked, extensions=[])
    protocol.receive_bytes(data)
    refused = (opcode in RESERVED or opcode == CONTINUATION
               or (opcode in CONTROL and length > 125) or (opcode == CLOSE and length == 1))
    if refused:
        with pytest.raises(ParseFailed):
            list(protocol.received_frames())
    else:
        (frame,) = protocol.received_frames()
        assert (int(frame.opcode), frame.message_finished) == (opcode, True), case


@given(rsv=st.sampled_from([0, RSV1, RSV1 | RSV3, 0x70]), fin=st.booleans(),
       opcode=st.integers(0, 15), payload=payloads(st.sampled_from(BOUNDARIES)), key=keys)
def test_rsv_bits_and_fin_travel_as_set(rsv, fin, opcode, payload, key):
    for data in (server_frame(opcode, payload, fin=fin, rsv=rsv),
                 client_frame(opcode, payload, fin=fin, rsv=rsv, key=key)):
        first, _, _, _ = frame_at(data)  # type: ignore[misc]
        assert first == (FIN if fin else 0) | rsv | opcode
        assert split_frames(data)[0] == [(opcode, fin, payload)]


def test_a_client_frame_is_masked_with_its_key_and_nothing_else():
    first = client_frame(TEXT, b"same", key=b"\x01\x02\x03\x04")
    second = client_frame(TEXT, b"same", key=b"\x04\x03\x02\x01")
    assert first == client_frame(TEXT, b"same", key=b"\x01\x02\x03\x04")  # no randomness
    assert (first[2:6], second[2:6]) == (b"\x01\x02\x03\x04", b"\x04\x03\x02\x01")
    assert first[6:] != second[6:]
    assert split_frames(first)[0] == split_frames(second)[0] == [(TEXT, True, b"same")]


def test_the_servers_prebuilt_frames():
    assert text_frame(b'{"a":1}') == server_frame(TEXT, b'{"a":1}')
    assert deflated_text_frame(b"\xaa" * 300) == server_frame(TEXT, b"\xaa" * 300, rsv=RSV1)
    assert server_frame(PING_OPCODE, b"") == PING
    assert close_frame(4008, "slow") == server_frame(CLOSE, (4008).to_bytes(2, "big") + b"slow")
    assert close_code(split_frames(close_frame(1001))[0][0][2]) == 1001
    assert close_code(b"") is None
    long_reason = close_frame(1000, "é" * 100)
    assert len(long_reason) == 2 + 2 + 122  # 61 whole characters: never half of one
    with pytest.raises(ValueError, match="1005"):
        close_frame(1005)


def test_a_zero_key_header_leaves_the_payload_as_is():
    payload = b"x" * 300
    data = client_frame_header(FIN | BINARY, len(payload)) + payload
    assert data == client_frame(BINARY, payload, key=b"\0\0\0\0")
    assert split_frames(data)[0] == [(BINARY, True, payload)]


def test_a_header_may_announce_what_never_comes():
    """For the abuse tests: a 2**62-byte frame announced, 10 bytes sent."""
    data = frame_header(FIN | TEXT, 1 << 62, b"abcd") + b"x" * 10
    header = read_header(data)
    assert header is not None
    assert (header.length, header.size, header.masked) == (1 << 62, 14, True)
    assert frame_at(data) is None
    assert split_frames(data) == ([], data)
