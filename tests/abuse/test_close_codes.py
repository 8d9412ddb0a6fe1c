"""Every protocol error fails the connection by the RFC: its close frame, then the end of TCP.

RFC 6455, 7.1.7 and 7.4.1: 1002 for a protocol error (reserved bits or opcodes,
a bad continuation, an unmasked client frame, a fragmented or oversized control
frame, an invalid close frame), 1007 for data that contradicts its type
(invalid UTF-8 in a text message or a close reason), 1009 for a message too
big. Each case sends raw frames on a real socket and must get exactly one
frame back, the close frame with that code, and then the end of the stream
(FIN, not a reset). Valid closes are answered with the same code; pings,
fragmented and binary messages keep the connection open.
"""

from __future__ import annotations

import json
import logging
import struct

import pytest
import trio
from wsclient import CLOSE, PING, TEXT, TIMEOUT, RawClient, close_code, wait_for_stats

from gateway import Gateway
from gateway._frames import BINARY, CONTINUATION, PONG

PING_JSON = b'{"action": "ping", "id": 1}'


@pytest.fixture
async def small_gateway(start_gateway, caplog) -> Gateway:
    caplog.set_level(logging.INFO, logger="trade_engine.gateway")
    return await start_gateway(websocket={"max_message_size": 1000})


async def exchange(gateway: Gateway, *sent: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """The server's frames up to its close frame, and what follows it until the end of TCP.

    Fails if the server resets the connection instead of closing it.
    """
    client = await RawClient.connect(gateway, "/ws")
    try:
        for data in sent:
            await client.stream.send_all(data)
        frames = await client.frames()
        after = bytearray(client.unread)
        with trio.fail_after(TIMEOUT):
            while data := await client.stream.receive_some(65536):
                after += data
    finally:
        await client.aclose()
    return frames, bytes(after)


async def no_connection_left(gateway: Gateway, caplog) -> None:
    await wait_for_stats(gateway, lambda s: s["connections"] == 0)
    failures = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not failures, failures


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


def failures(frame) -> dict[str, tuple[list[bytes], int]]:
    """Name: (frames the client sends, the close code the server must answer with)."""
    cases: dict[str, tuple[list[bytes], int]] = {
        "unmasked_text": ([frame(TEXT, PING_JSON, mask=False)], 1002),
        "unmasked_ping": ([frame(PING, b"x", mask=False)], 1002),
        "rsv1_without_deflate": ([frame(TEXT, PING_JSON, rsv=4)], 1002),
        "rsv2": ([frame(TEXT, PING_JSON, rsv=2)], 1002),
        "rsv3": ([frame(BINARY, PING_JSON, rsv=1)], 1002),
        "rsv1_on_ping": ([frame(PING, b"x", rsv=4)], 1002),
        "continuation_first": ([frame(CONTINUATION, b"x")], 1002),
        "continuation_after_a_whole_message": (  # the pong comes first
            [frame(TEXT, PING_JSON), frame(CONTINUATION, b"x")], 1002),
        "text_inside_a_fragmented_text": (
            [frame(TEXT, b'{"action":', fin=False), frame(TEXT, b'"ping"}')], 1002),
        "binary_inside_a_fragmented_text": (
            [frame(TEXT, b'{"action":', fin=False), frame(BINARY, b'"ping"}')], 1002),
        "fragmented_ping": ([frame(PING, b"a", fin=False), frame(CONTINUATION, b"b")], 1002),
        "fragmented_pong": ([frame(PONG, b"a", fin=False)], 1002),
        "fragmented_close": ([frame(CLOSE, close_payload(1000), fin=False)], 1002),
        "ping_of_126_bytes": ([frame(PING, b"p" * 126)], 1002),
        "close_of_one_byte": ([frame(CLOSE, b"\x03")], 1002),
        "invalid_utf8_text": ([frame(TEXT, b'{"action": "\xff\xfe"}')], 1007),
        "overlong_utf8": ([frame(TEXT, b'"\xc0\xaf"')], 1007),
        "surrogate_utf8": ([frame(TEXT, b'"\xed\xa0\x80"')], 1007),
        "utf8_cut_at_the_end": ([frame(TEXT, b'"\xe2\x82')], 1007),
        "invalid_utf8_across_fragments": (
            [frame(TEXT, b'{"id": "\xe2\x82', fin=False), frame(CONTINUATION, b'x"}')], 1007),
        "invalid_utf8_close_reason": ([frame(CLOSE, close_payload(1000, b"\xff"))], 1007),
        "announced_length_2_62": ([frame(TEXT, b" " * 5000, length=1 << 62)], 1009),
        "one_frame_over_four_times_the_limit": ([frame(BINARY, b" " * 4500)], 1009),
        "fragments_over_four_times_the_limit": (
            [frame(TEXT, b" " * 1500, fin=False), frame(CONTINUATION, b" " * 1500, fin=False),
             frame(CONTINUATION, b" " * 1500)], 1009),
    }
    for opcode in (0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF):
        cases[f"reserved_opcode_{opcode:x}"] = ([frame(opcode, b"x")], 1002)
    for code in (0, 999, 1004, 1005, 1006, 1014, 1015, 1016, 1100, 2000, 2999, 5000, 65535):
        cases[f"close_code_{code}"] = ([frame(CLOSE, close_payload(code))], 1002)
    return cases


FAILURES = sorted(failures(lambda *a, **k: b""))


@pytest.mark.parametrize("name", FAILURES)
async def test_protocol_error_gets_its_close_code_then_eof(small_gateway, ws_frame, caplog, name):
    sent, code = failures(ws_frame)[name]
    frames, after = await exchange(small_gateway, *sent)
    replies = 1 if name == "continuation_after_a_whole_message" else 0
    assert [opcode for opcode, _ in frames] == [TEXT] * replies + [CLOSE], frames
    assert close_code(frames) == code
    reason = frames[-1][1][2:]
    assert len(reason) <= 123
    reason.decode("utf-8")  # a close reason is valid UTF-8
    assert after == b""
    await no_connection_left(small_gateway, caplog)


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012,
                                  1013, 3000, 3999, 4000, 4999])
async def test_a_valid_close_is_answered_with_its_code(small_gateway, ws_frame, caplog, code):
    frames, after = await exchange(small_gateway, ws_frame(CLOSE, close_payload(code, b"bye")))
    assert [opcode for opcode, _ in frames] == [CLOSE], frames
    assert close_code(frames) == code
    assert after == b""
    await no_connection_left(small_gateway, caplog)


async def test_an_empty_close_is_answered_with_an_empty_close(small_gateway, ws_frame, caplog):
    frames, after = await exchange(small_gateway, ws_frame(CLOSE, b""))
    assert frames == [(CLOSE, b"")]
    assert after == b""
    await no_connection_left(small_gateway, caplog)


async def test_nothing_is_answered_after_the_close(small_gateway, ws_frame, caplog):
    """Frames after the client's close frame are ignored (RFC 6455, 5.5.1)."""
    frames, after = await exchange(
        small_gateway, ws_frame(CLOSE, close_payload(1000)) + ws_frame(TEXT, PING_JSON)
        + ws_frame(PING, b"late"))
    assert frames == [(CLOSE, close_payload(1000))]
    assert after == b""
    await no_connection_left(small_gateway, caplog)


async def test_pings_fragments_and_binary_messages_keep_the_connection(small_gateway, ws_frame,
                                                                       caplog):
    """Pings with payloads get their pongs, interleaved in a fragmented message too; a
    fragmented text message and a binary message are each one message; then a normal close."""
    client = await RawClient.connect(small_gateway, "/ws")
    try:
        ping_125 = bytes(range(125))
        await client.stream.send_all(
            ws_frame(PING, ping_125)
            + ws_frame(PING, b"")
            + ws_frame(TEXT, PING_JSON[:4], fin=False)
            + ws_frame(PING, b"in between")
            + ws_frame(CONTINUATION, b"", fin=False)
            + ws_frame(CONTINUATION, PING_JSON[4:])
            + ws_frame(BINARY, PING_JSON.replace(b"1", b"2"))
            + ws_frame(TEXT, "{\"action\": \"ping\", \"id\": \"\u00e9\u20ac\U0001f600\"}".encode())
            + ws_frame(PONG, b"unsolicited"))
        frames = []
        while sum(opcode == TEXT for opcode, _ in frames) < 3:
            frames.append(await client.next_frame())
        texts = [json.loads(payload) for opcode, payload in frames if opcode == TEXT]
        assert texts == [{"type": "pong", "id": 1}, {"type": "pong", "id": 2},
                         {"type": "pong", "id": "\u00e9\u20ac\U0001f600"}]
        await client.stream.send_all(ws_frame(CLOSE, close_payload(1000)))
        frames += await client.frames()
        with trio.fail_after(TIMEOUT):
            assert await client.stream.receive_some(65536) == b""
    finally:
        await client.aclose()
    pongs = [payload for opcode, payload in frames if opcode == PONG]
    assert pongs == [ping_125, b"", b"in between"]
    assert frames[-1] == (CLOSE, close_payload(1000))
    await no_connection_left(small_gateway, caplog)
