"""permessage-deflate without a network: the offer we accept, and both directions of
compression, each checked against wsproto's own implementation (the oracle).

* What we send: wsproto as the client, told what we agreed, must read every message
  back, whether it resets its decompressor per message (as we ask) or not.
* What we receive: wsproto as the client compresses (and fragments) messages, our
  :class:`Inflater` rewrites the bytes, and wsproto as a server *without* the
  extension must read exactly the original messages. Fed whole and byte by byte.
"""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, Message, Ping, TextMessage
from wsproto.extensions import PerMessageDeflate

from gateway._deflate import Agreement, InflateError, Inflater, MessageDeflater, negotiate
from gateway._frames import (
    CONTINUATION,
    RSV1,
    TEXT,
    client_frame,
    client_frame_header,
    close_frame,
    deflated_text_frame,
    frame_header,
    read_header,
    sendable_close_code,
    text_frame,
    unmask,
)

ANSWER = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"


def offer(*values: str) -> list[tuple[bytes, bytes]]:
    return [(b"host", b"x")] + [(b"sec-websocket-extensions", v.encode()) for v in values]


# ------------------------------------------------------------- negotiation


@pytest.mark.parametrize(("values", "window", "answer"), [
    (["permessage-deflate"], 15, ANSWER),  # Firefox, Safari
    (["permessage-deflate; client_max_window_bits"], 15, ANSWER),  # Chrome
    (["permessage-deflate; client_max_window_bits=15; server_max_window_bits=15"], 15,
     ANSWER + "; server_max_window_bits=15"),  # wsproto, Python websockets
    (["permessage-deflate; server_max_window_bits=10"], 10,
     ANSWER + "; server_max_window_bits=10"),
    (['permessage-deflate; server_max_window_bits="12"'], 12,
     ANSWER + "; server_max_window_bits=12"),
    (["permessage-deflate; server_no_context_takeover; client_no_context_takeover"], 15, ANSWER),
    (["PerMessage-Deflate ; Server_No_Context_Takeover"], 15, ANSWER),
    (["x-webkit-deflate-frame, permessage-deflate"], 15, ANSWER),
    (["permessage-deflate; server_max_window_bits=8, permessage-deflate"], 15, ANSWER),
    (["permessage-deflate; server_max_window_bits=8",
      "permessage-deflate; server_max_window_bits=9"], 9, ANSWER + "; server_max_window_bits=9"),
])
def test_accepted_offers(values, window, answer):
    assert negotiate(offer(*values)) == Agreement(window, answer.encode())


@pytest.mark.parametrize("value", [
    "x-webkit-deflate-frame",
    "permessage-deflate; server_max_window_bits=8",  # zlib has no 8-bit raw window
    "permessage-deflate; server_max_window_bits",  # a value is required
    "permessage-deflate; server_max_window_bits=16",
    "permessage-deflate; server_max_window_bits=08",
    "permessage-deflate; server_max_window_bits=abc",
    "permessage-deflate; client_max_window_bits=7",
    "permessage-deflate; client_no_context_takeover=1",
    "permessage-deflate; unknown_parameter",
    "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
    "permessage-deflate; =1",
])
def test_declined_offers(value):
    assert negotiate(offer(value)) is None


def test_no_offer_is_no_agreement():
    assert negotiate(offer()) is None


@pytest.mark.parametrize("client_offer", [
    PerMessageDeflate(),
    PerMessageDeflate(client_no_context_takeover=True, server_max_window_bits=11),
    PerMessageDeflate(server_no_context_takeover=True, client_max_window_bits=9),
])
def test_wsproto_as_a_client_accepts_our_answer(client_offer):
    text = f"permessage-deflate; {client_offer.offer()}"
    agreement = negotiate(offer(text))
    assert agreement is not None
    client_offer.finalize(agreement.response.decode())  # what a wsproto client does
    assert client_offer.server_no_context_takeover
    assert client_offer.client_no_context_takeover
    assert client_offer.server_max_window_bits == agreement.window_bits


# ------------------------------------------------------ what we send (oracle)


def wsproto_client(agreement: Agreement, *, resets: bool = True) -> Connection:
    """A wsproto client connection that agreed to ``agreement``; ``resets=False`` keeps its
    decompressor between messages (as a client that ignores no_context_takeover would)."""
    extension = PerMessageDeflate()
    extension.finalize(agreement.response.decode())
    extension.server_no_context_takeover = resets
    return Connection(ConnectionType.CLIENT, extensions=[extension])


def texts_read_by(client: Connection, data: bytes) -> list[str]:
    client.receive_data(data)
    texts = []
    for event in client.events():
        assert isinstance(event, TextMessage), event
        assert event.message_finished
        texts.append(event.data)
    return texts


json_like = st.text(alphabet=st.sampled_from('{}[]":,0123456789.abcdefghijklmnopq_ é€'),
                    max_size=3000)


@given(messages=st.lists(json_like, min_size=1, max_size=8), bits=st.integers(9, 15),
       resets=st.booleans())
def test_every_message_we_compress_reads_back_in_wsproto(messages, bits, resets):
    agreement = negotiate(offer(f"permessage-deflate; server_max_window_bits={bits}"))
    assert agreement is not None
    assert agreement.window_bits == bits
    deflater = MessageDeflater(bits)
    frames = b""
    for message in messages:
        payload = message.encode()
        compressed = deflater.compress(payload)
        frames += text_frame(payload) if compressed is None else deflated_text_frame(compressed)
    assert texts_read_by(wsproto_client(agreement, resets=resets), frames) == messages


def test_a_repetitive_message_shrinks_and_a_tiny_one_is_left_plain():
    deflater = MessageDeflater(15)
    levels = b'{"bids": [' + b", ".join([b'["50000.00", "0.01000"]'] * 50) + b"]}"
    compressed = deflater.compress(levels)
    assert compressed is not None
    assert len(compressed) < len(levels) // 5
    assert deflater.compress(b'{"a":1}') is None


def test_a_message_never_refers_to_an_earlier_one():
    """Each message inflates alone with a fresh decompressor, even the same message twice."""
    deflater = MessageDeflater(15)
    payload = b'{"type": "depth_update", "bids": [["50000.00", "0.01000"]]}' * 3
    first, second = deflater.compress(payload), deflater.compress(payload)
    assert first == second
    for data in (first, second):
        assert data is not None
        assert zlib.decompressobj(-15).decompress(data + b"\x00\x00\xff\xff") == payload


# --------------------------------------------------- what we receive (oracle)

AGREED = negotiate(offer("permessage-deflate"))
assert AGREED is not None

message_parts = st.lists(st.text(max_size=300) | st.binary(max_size=300), min_size=1,
                         max_size=4)


def client_bytes(messages: list[tuple[bool, list[str | bytes]]]) -> bytes:
    """The frames a wsproto client sends for ``messages``: (compressed?, fragments), with a
    ping after every first fragment."""
    deflating = PerMessageDeflate()
    deflating.finalize(AGREED.response.decode())
    compressing = Connection(ConnectionType.CLIENT, extensions=[deflating])
    plain = Connection(ConnectionType.CLIENT)
    data = b""
    for compressed, parts in messages:
        client = compressing if compressed else plain
        same = same_kind(parts)
        for index, part in enumerate(same):
            last = index == len(parts) - 1
            event: Message[str] | Message[bytes] = (
                TextMessage(data=part, message_finished=last) if isinstance(part, str)
                else BytesMessage(data=part, message_finished=last))
            data += client.send(event)
            if index == 0:
                data += client.send(Ping(payload=b"p"))
    return data


def messages_read_by_plain_wsproto(data: bytes) -> list[str | bytes]:
    server = Connection(ConnectionType.SERVER)
    server.receive_data(data)
    messages: list[str | bytes] = []
    current: list[str | bytes] = []
    for event in server.events():
        if isinstance(event, Ping):
            continue
        assert isinstance(event, (TextMessage, BytesMessage)), event
        current.append(event.data)
        if event.message_finished:
            first = current[0]
            messages.append("".join(current) if isinstance(first, str) else b"".join(current))
            current = []
    return messages


def same_kind(parts: list[str | bytes]) -> list[str] | list[bytes]:
    """The fragments of one message, all text or all bytes like the first."""
    if isinstance(parts[0], str):
        return [p if isinstance(p, str) else p.decode("latin-1") for p in parts]
    return [p if isinstance(p, bytes) else p.encode() for p in parts]


def whole(parts: list[str | bytes]) -> str | bytes:
    same = same_kind(parts)
    return "".join(same) if isinstance(same[0], str) else b"".join(same)  # type: ignore[arg-type]


@given(messages=st.lists(st.tuples(st.booleans(), message_parts), min_size=1, max_size=5),
       cuts=st.lists(st.integers(1, 50), max_size=20))
def test_inflated_client_frames_read_as_the_original_messages(messages, cuts):
    data = client_bytes(messages)
    expected = [whole(parts) for _, parts in messages]
    inflater = Inflater(1 << 20)
    assert messages_read_by_plain_wsproto(inflater.feed(data)) == expected
    pieces, rest, inflater = b"", data, Inflater(1 << 20)
    for cut in cuts:
        pieces += inflater.feed(rest[:cut])
        rest = rest[cut:]
    pieces += inflater.feed(rest)
    assert messages_read_by_plain_wsproto(pieces) == expected


def test_byte_by_byte_is_the_same_as_whole():
    data = client_bytes([(True, ["abc" * 100, "def"]), (False, [b"xyz"]), (True, [b"\0" * 70000])])
    inflater = Inflater(1 << 20)
    assert b"".join(inflater.feed(data[i:i + 1]) for i in range(len(data))) == (
        Inflater(1 << 20).feed(data))


def masked_frame(first: int, payload: bytes) -> bytes:
    key = b"\x01\x02\x03\x04"
    return frame_header(first, len(payload), key) + unmask(payload, key)


@pytest.mark.parametrize("data", [
    bytes([0xC1, 0x02]) + b"\xcb\xc8",  # compressed but unmasked
    masked_frame(0xE1, b"\xcb\xc8\x04\x00"),  # RSV1 and RSV2
    masked_frame(0xC9, b"\xcb\xc8\x04\x00"),  # RSV1 on a ping
    masked_frame(0x01, b"ab") + masked_frame(0xC0, b"\xcb\xc8\x04\x00"),  # RSV1 on continuation
    masked_frame(0x40, b"\xcb\xc8\x04\x00"),  # a continuation that continues nothing
    masked_frame(0x83, b"x"),  # a reserved opcode
], ids=["unmasked", "rsv2", "control", "rsv1_continuation", "lone_continuation", "opcode"])
def test_irregular_frames_pass_through_for_wsproto_to_refuse(data):
    assert Inflater(1000).feed(data) == data


def compressed_frame(payload: bytes, *, fin: bool = True, first: bool = True) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    data = (compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
    return client_frame(TEXT if first else CONTINUATION, data, fin=fin, rsv=RSV1 if first else 0,
                        key=b"\x09\x08\x07\x06")


def test_invalid_compressed_data_is_1007():
    with pytest.raises(InflateError) as error:
        Inflater(1000).feed(masked_frame(0xC1, b"\xff\xff\xff\xff"))
    assert error.value.code == 1007


def test_a_compression_bomb_stops_at_the_limit_with_1009():
    bomb = compressed_frame(b"\0" * 50_000_000)  # 50 MB of zeros, about 50 kB compressed
    with pytest.raises(InflateError) as error:
        Inflater(4000).feed(bomb)
    assert error.value.code == 1009


def test_a_fragmented_message_over_the_limit_is_1009():
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    first = compressor.compress(b"a" * 3000) + compressor.flush(zlib.Z_SYNC_FLUSH)
    second = compressor.compress(b"b" * 3000) + compressor.flush(zlib.Z_SYNC_FLUSH)
    inflater = Inflater(5000)
    out = inflater.feed(masked_frame(0x41, first))  # no FIN, RSV1
    assert read_header(out) is not None
    with pytest.raises(InflateError) as error:
        inflater.feed(masked_frame(0x80, second[:-4]))
    assert error.value.code == 1009


def test_a_compressed_frame_announcing_more_than_the_limit_is_refused_at_once():
    head = client_frame_header(0xC1, 5000)
    with pytest.raises(InflateError) as error:
        Inflater(4000).feed(head)  # not a byte of payload yet
    assert error.value.code == 1009


def test_the_inflated_message_may_be_exactly_the_limit():
    payload = b"x" * 4000
    out = Inflater(4000).feed(compressed_frame(payload))
    assert messages_read_by_plain_wsproto(out) == [payload.decode()]


# ------------------------------------------------------------------ frames


@pytest.mark.parametrize(("code", "ok"), [
    (999, False), (1000, True), (1004, False), (1005, False), (1006, False), (1015, False),
    (1011, True), (3000, True), (4999, True), (5000, False)])
def test_sendable_close_codes(code, ok):
    assert sendable_close_code(code) is ok


def test_a_close_reason_is_cut_whole_characters_and_fits_a_control_frame():
    frame = close_frame(1002, "é" * 100)
    assert frame[1] == len(frame) - 2 <= 125
    assert frame[4:].decode("utf-8") == "é" * 61
    with pytest.raises(ValueError, match="1006"):
        close_frame(1006)


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_read_header_waits_for_the_whole_header(size):
    frame = deflated_text_frame(b"x" * size)
    header = read_header(frame)
    assert header is not None
    assert (header.opcode, header.length, header.fin, header.masked) == (1, size, True, False)
    assert frame[header.size:] == b"x" * size
    assert all(read_header(frame[:cut]) is None for cut in range(header.size))
